"""Checkpoints that know their backbone, so `load_model(path)` rebuilds one without arguments.

A checkpoint holds the backbone's spec, its tuned weights (the projection head used only for
tuning is dropped) and a `meta` dict describing how it was made. `load_backbone` also accepts a
bare backbone name, which gives the untuned pretrained encoder.
"""

import os
from pathlib import Path
from typing import Any

import torch

from hear_contrastune.atomic import atomic_path
from hear_contrastune.backbones import BACKBONES, Backbone, build_backbone, is_backbone_spec
from hear_contrastune.errors import UserError

FORMAT = "hear-contrastune/1"


def save_checkpoint(path: str | os.PathLike[str], backbone: Backbone, meta: dict[str, Any]) -> None:
    """Write the backbone's weights and spec atomically."""
    state = {k: v.detach().cpu() for k, v in backbone.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "backbone": backbone.spec, "state_dict": state,
                    "meta": meta}, tmp)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint dict, or a one-line error saying why `path` is not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file (or give a backbone name: "
                        f"{', '.join(BACKBONES)})")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a file that is not a checkpoint
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path}: not a hear-contrastune checkpoint")
    return ckpt


def load_backbone(model: str | os.PathLike[str]) -> tuple[Backbone, dict[str, Any]]:
    """A backbone from a checkpoint file, or the untuned pretrained one from a backbone name."""
    if is_backbone_spec(str(model)) and not Path(model).is_file():
        return build_backbone(str(model)), {"tuned": False}
    ckpt = read_checkpoint(model)
    backbone = build_backbone(ckpt["backbone"])
    missing, unexpected = backbone.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise UserError(f"{model}: weights do not fit backbone {ckpt['backbone']!r} "
                        f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    # the classifier of a fine-tuned checkpoint is not part of the encoder (see compare.head_score)
    meta = {k: v for k, v in ckpt["meta"].items() if k != "head"}
    return backbone, {"tuned": True, **meta}

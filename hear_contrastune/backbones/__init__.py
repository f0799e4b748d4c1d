"""Backbones by name: the encoders `tune`, the HEAR API and `embed` can hold.

A spec string names a backbone and rebuilds it with its pretrained weights; checkpoints store
it, so `load_model` needs nothing else. Besides the fixed names, two prefixes name encoders a
user brings: `hf:<folder>[?options]` (a Hugging Face transformers model folder, see
backbones/hf.py) and `hear:<module>[:<weights>]` (any HEAR 2021 PyTorch module, see
backbones/hear_module.py).
"""

from collections.abc import Callable

from hear_contrastune.backbones.base import Backbone
from hear_contrastune.errors import UserError

DEFAULT_BACKBONE = "resemblyzer"


def _resemblyzer() -> Backbone:
    from hear_contrastune.backbones.resemblyzer import ResemblyzerBackbone

    return ResemblyzerBackbone()


def _crepe(capacity: str) -> Callable[[], Backbone]:
    def build() -> Backbone:
        from hear_contrastune.backbones.crepe import CrepeBackbone

        return CrepeBackbone(capacity)

    return build


def _hf(spec: str) -> Backbone:
    from hear_contrastune.backbones.hf import build_hf_backbone

    return build_hf_backbone(spec)


def _hear(spec: str) -> Backbone:
    from hear_contrastune.backbones.hear_module import HearModuleBackbone

    return HearModuleBackbone.from_spec(spec)


BACKBONES: dict[str, tuple[Callable[[], Backbone], str]] = {
    "resemblyzer": (_resemblyzer,
                    "16 kHz; Resemblyzer GE2E encoder, 1.4 M params, 256-d (default)"),
    "crepe-tiny": (_crepe("tiny"), "16 kHz; CREPE tiny pitch network, 0.49 M params, 256-d"),
    "crepe-full": (_crepe("full"), "16 kHz; CREPE full pitch network, 22.2 M params, 2048-d"),
}

#: spec prefix -> (builder given the whole spec, how a spec is written, what it names)
PREFIXES: dict[str, tuple[Callable[[str], Backbone], str, str]] = {
    "hf:": (_hf, "hf:<folder>[?options]",
            "a Hugging Face model folder (or hub name org/name, online or cached): the "
            "families below; options layer=N|last|weighted, pool=mean|max|cls, "
            "freeze_feature_encoder=1, freeze_layers=N, train_top=N, embed=, pad=, "
            "trust_remote_code=1 (e.g. hf:/models/wavlm-base?layer=6&train_top=2)"),
    "hear:": (_hear, "hear:<module>[:<weights>]",
              "the module's own rate; any HEAR 2021 PyTorch module, tuned through its own "
              "get_scene_embeddings "
              "(e.g. hear:hearbaseline:/models/naive_baseline.pt)"),
}


def is_backbone_spec(spec: str) -> bool:
    """Whether `spec` names a backbone (a fixed name or a prefixed spec), not a checkpoint."""
    return spec in BACKBONES or spec.startswith(tuple(PREFIXES))


def build_backbone(spec: str) -> Backbone:
    """The pretrained backbone named by `spec`."""
    if spec in (usage for _, usage, _ in PREFIXES.values()):
        raise UserError(f"backbone {spec!r}: a pattern, not a backbone; fill in its <...> "
                        "parts (see `contrastune backbones`)")
    for prefix, (builder, _, _) in PREFIXES.items():
        if spec.startswith(prefix):
            return builder(spec)
    if spec not in BACKBONES:
        raise UserError(f"backbone {spec!r}: unknown; choose from {', '.join(BACKBONES)}")
    return BACKBONES[spec][0]()


__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "PREFIXES", "Backbone", "build_backbone",
           "is_backbone_spec"]

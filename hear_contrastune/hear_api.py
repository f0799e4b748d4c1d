"""The HEAR 2021 API over any backbone, tuned or not: what heareval and the HEAR validator call.

Embedding runs under `torch.no_grad()` in chunks of clips sized by the backbone's
`max_batch_samples`, so memory stays bounded for any number and length of clips. To train
through the encoder, call `model.backbone` directly.
"""

import os

import numpy as np
import torch
from torch import Tensor, nn

from hear_contrastune.backbones import DEFAULT_BACKBONE, Backbone
from hear_contrastune.training.checkpoint import load_backbone


class HearModel(nn.Module):
    """A backbone with the attributes the HEAR API requires."""

    def __init__(self, backbone: Backbone, meta: dict | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.meta = meta or {}
        self.sample_rate = backbone.sample_rate
        self.scene_embedding_size = backbone.embedding_size
        self.timestamp_embedding_size = backbone.frame_embedding_size


def load_model(model_file_path: str | os.PathLike[str] = DEFAULT_BACKBONE) -> HearModel:
    """A tuned checkpoint file, or a backbone name for the untuned pretrained encoder."""
    backbone, meta = load_backbone(model_file_path)
    return HearModel(backbone, meta).eval()


# Integer PCM is scaled to [-1, 1) by its full scale, as soundfile reads it as float.
PCM_SCALE = {torch.int16: 2.0**15, torch.int32: 2.0**31}


def _chunks(audio: Tensor | np.ndarray, model: HearModel) -> list[Tensor]:
    """The audio as float32 chunks on the model's device, checked as the HEAR API specifies:
    [n_sounds, n_samples] of float audio in [-1, 1] (a numpy array is taken as torch takes it;
    int16 / int32 PCM is scaled by its full scale; other dtypes and types, zero-length clips and
    NaN or inf samples are refused)."""
    if isinstance(audio, np.ndarray):
        audio = torch.from_numpy(np.ascontiguousarray(audio))
    if not isinstance(audio, Tensor):
        raise TypeError(f"audio must be a torch.Tensor (or numpy array) [n_sounds, n_samples], "
                        f"got {type(audio).__name__}")
    if audio.ndim != 2:
        raise ValueError(f"audio must be [n_sounds, n_samples], got shape {tuple(audio.shape)}")
    if audio.dtype in PCM_SCALE:
        audio = audio.to(torch.float32) / PCM_SCALE[audio.dtype]
    elif not audio.is_floating_point():
        raise ValueError(f"audio must be float in [-1, 1] (or int16/int32 PCM), got {audio.dtype}")
    if audio.shape[0] and audio.shape[1] == 0:
        raise ValueError("audio has 0 samples per sound: nothing to embed")
    if not torch.isfinite(audio).all():
        raise ValueError("audio holds NaN or inf samples")
    if audio.shape[0] == 0:
        return []
    device = model.backbone.device
    per_chunk = max(1, model.backbone.max_batch_samples // max(1, audio.shape[1]))
    return [c.to(device, torch.float32) for c in audio.split(per_chunk)]


@torch.no_grad()
def get_scene_embeddings(audio: Tensor | np.ndarray, model: HearModel) -> Tensor:
    """[n_sounds, n_samples] -> [n_sounds, scene_embedding_size] on the model's device."""
    model.eval()
    chunks = _chunks(audio, model)
    if not chunks:  # no sounds: no embeddings
        return torch.empty(0, model.scene_embedding_size, device=model.backbone.device)
    return torch.cat([model.backbone(chunk) for chunk in chunks])


@torch.no_grad()
def get_timestamp_embeddings(audio: Tensor | np.ndarray, model: HearModel) -> tuple[Tensor, Tensor]:
    """[n_sounds, n_samples] -> ([n_sounds, n_frames, dim], ms timestamps [n_sounds, n_frames])."""
    model.eval()
    chunks = _chunks(audio, model)
    if not chunks:  # no sounds: no frames, as the scene API gives no embeddings
        device = model.backbone.device
        return (torch.empty(0, 0, model.timestamp_embedding_size, device=device),
                torch.empty(0, 0, device=device))
    outs = [model.backbone.frames(chunk) for chunk in chunks]
    embeddings = torch.cat([emb for emb, _ in outs])
    times = outs[0][1].unsqueeze(0).expand(embeddings.shape[0], -1).contiguous()
    return embeddings, times

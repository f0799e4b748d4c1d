"""The HEAR 2021 API over any backbone, tuned or not: what heareval and the HEAR validator call.

Embedding runs under `torch.no_grad()` in chunks of clips sized by the backbone's
`max_batch_samples` (backbones.embedding), so memory stays bounded for any number and length of
clips. To train through the encoder, call `model.backbone` directly.
"""

import os

import numpy as np
import torch
from torch import Tensor, nn

from hear_contrastune.backbones import DEFAULT_BACKBONE, Backbone
from hear_contrastune.backbones.checkpoint import load_backbone
from hear_contrastune.backbones.embedding import audio_chunks, scene_embeddings


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


def get_scene_embeddings(audio: Tensor | np.ndarray, model: HearModel) -> Tensor:
    """[n_sounds, n_samples] -> [n_sounds, scene_embedding_size] on the model's device."""
    model.eval()
    return scene_embeddings(model.backbone, audio)


@torch.no_grad()
def get_timestamp_embeddings(audio: Tensor | np.ndarray, model: HearModel) -> tuple[Tensor, Tensor]:
    """[n_sounds, n_samples] -> ([n_sounds, n_frames, dim], ms timestamps [n_sounds, n_frames])."""
    model.eval()
    chunks = audio_chunks(audio, model.backbone)
    if not chunks:  # no sounds: no frames, as the scene API gives no embeddings
        device = model.backbone.device
        return (torch.empty(0, 0, model.timestamp_embedding_size, device=device),
                torch.empty(0, 0, device=device))
    outs = [model.backbone.frames(chunk) for chunk in chunks]
    embeddings = torch.cat([emb for emb, _ in outs])
    times = outs[0][1].unsqueeze(0).expand(embeddings.shape[0], -1).contiguous()
    return embeddings, times

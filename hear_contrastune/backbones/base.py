"""The one interface every backbone implements, so tuning, the HEAR API and embedding never
need to know which encoder they hold.

A backbone maps a batch of mono audio at `sample_rate` to frame embeddings (for HEAR's
timestamp embeddings) and to one pooled scene embedding per clip (what tuning trains and the
probes judge). Both run with gradients: no backbone may hide a `torch.no_grad()` inside.
"""

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from hear_contrastune.errors import UserError


class Backbone(nn.Module, ABC):
    """Audio [batch, samples] -> frame embeddings [batch, frames, dim] and scene [batch, dim]."""

    #: the name that rebuilds this backbone with `build_backbone` (stored in checkpoints)
    spec: str
    sample_rate: int = 16000
    embedding_size: int
    #: audio samples per forward pass that keep inference memory bounded (~0.5 GB)
    max_batch_samples: int = 2**22
    #: parameters not from the pretrained weights (e.g. a learned layer weighting): tuning may
    #: give them the head's learning rate rather than the backbone's
    new_parameter_names: tuple[str, ...] = ()

    @abstractmethod
    def frames(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """Frame embeddings [batch, frames, dim] and their centre times in ms [frames]."""

    def forward(self, audio: Tensor) -> Tensor:
        """Scene embedding [batch, dim]: the mean of the frame embeddings unless overridden."""
        return self.frames(audio)[0].mean(dim=1)

    @property
    def frame_embedding_size(self) -> int:
        """Size of the `frames` embeddings: the scene size unless a backbone says otherwise."""
        return self.embedding_size

    def check_trainable(self) -> None:
        """Raise a one-line UserError if tuning could not change this backbone's embeddings
        (call before training: a backbone without gradients would "tune" only the head)."""
        if not any(p.requires_grad for p in self.parameters()):
            raise UserError(f"{self.spec}: every parameter is frozen; nothing to tune")

    def param_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters as optimizer groups named "pretrained" and "new", so tuning can
        give pretrained weights a smaller learning rate than new ones."""
        groups: dict[str, list[nn.Parameter]] = {"pretrained": [], "new": []}
        for name, param in self.named_parameters():
            if param.requires_grad:
                groups["new" if name in self.new_parameter_names else "pretrained"].append(param)
        return [{"name": name, "params": params} for name, params in groups.items() if params]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

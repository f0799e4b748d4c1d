"""The one interface every backbone implements, so tuning, the HEAR API and embedding never
need to know which encoder they hold.

A backbone maps a batch of mono audio at `sample_rate` to frame embeddings (for HEAR's
timestamp embeddings) and to one pooled scene embedding per clip (what tuning trains and the
probes judge). Both run with gradients: no backbone may hide a `torch.no_grad()` inside.
"""

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn


class Backbone(nn.Module, ABC):
    """Audio [batch, samples] -> frame embeddings [batch, frames, dim] and scene [batch, dim]."""

    #: the name that rebuilds this backbone with `build_backbone` (stored in checkpoints)
    spec: str
    sample_rate: int = 16000
    embedding_size: int
    #: audio samples per forward pass that keep inference memory bounded (~0.5 GB)
    max_batch_samples: int = 2**22

    @abstractmethod
    def frames(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """Frame embeddings [batch, frames, dim] and their centre times in ms [frames]."""

    def forward(self, audio: Tensor) -> Tensor:
        """Scene embedding [batch, dim]: the mean of the frame embeddings unless overridden."""
        return self.frames(audio)[0].mean(dim=1)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

"""Checks shared by the backbone tests: a two-class batch and a few SupCon steps on it."""

import torch
from pytorch_metric_learning.losses import SupConLoss
from torch import Tensor

from hear_contrastune.backbones import Backbone


def two_class_batch(clips: int = 8, samples: int = 4000) -> tuple[Tensor, Tensor]:
    """Low tones (class 0) and high tones (class 1) at random phases and levels, plus noise."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(clips) % 2
    t = torch.arange(samples) / 16000
    f0 = torch.where(labels == 0, 220.0, 1760.0)[:, None]
    phase = 6.283 * torch.rand(clips, 1, generator=gen)
    level = 0.05 + 0.2 * torch.rand(clips, 1, generator=gen)
    audio = level * torch.sin(6.283 * f0 * t + phase)
    return audio + 0.01 * torch.randn(clips, samples, generator=gen), labels


def supcon_losses(backbone: Backbone, steps: int = 4, lr: float = 1e-3) -> list[float]:
    """SupCon loss at each of `steps` Adam steps on the scene embeddings of the batch."""
    audio, labels = two_class_batch()
    loss_fn = SupConLoss(temperature=0.1)
    optimizer = torch.optim.Adam([p for p in backbone.parameters() if p.requires_grad], lr=lr)
    backbone.train()
    losses = []
    for _ in range(steps):
        loss = loss_fn(backbone(audio), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses

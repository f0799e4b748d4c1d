"""What a method puts on top of the backbone: its head, its loss and the targets they take.

  contrastive  SupContrast's projection head (dropped after tuning) + SupCon
               (pytorch-metric-learning's; our Jaccard-weighted form for multilabel tasks),
               optionally over a cross-batch memory of recent embeddings (--xbm-size)
  finetune     a linear classifier (kept in the checkpoint) + cross-entropy (BCE for multilabel)
  lpft         the same, its classifier first fit as a linear probe on the frozen encoder
               (training.linear_head; Kumar et al. 2022)

Everything else about a run is shared by both methods, so the comparison between them is fair.
"""

import torch
from pytorch_metric_learning.losses import CrossBatchMemory, SupConLoss
from torch import Tensor, nn

from hear_contrastune.errors import UserError
from hear_contrastune.training.config import CLASSIFIER_METHODS, LOSSES, TuneConfig
from hear_contrastune.training.losses import JaccardSupConLoss, LabelSetCrossBatchMemory


def targets_for(vocabulary: list[str], labels: list[list[str]], multilabel: bool) -> Tensor:
    """Class ids [n] for multiclass tasks, multi-hot [n, vocabulary] for multilabel ones."""
    index = {label: i for i, label in enumerate(vocabulary)}
    if multilabel:
        hot = torch.zeros(len(labels), len(index))
        for row, clip in enumerate(labels):
            hot[row, [index[x] for x in clip]] = 1.0
        return hot
    return torch.tensor([index[clip[0]] for clip in labels])


def make_loss(cfg: TuneConfig, multilabel: bool, n_labels: int) -> nn.Module:
    """The run's loss, over a cross-batch memory when `cfg.xbm_size` asks for one.

    The memory holds what the loss sees: under torchrun the gathered global batch, so every rank
    keeps the same memory of global embeddings and computes the same loss (training.distributed).
    """
    loss = method_loss(cfg.loss, cfg.method, multilabel, cfg.temperature)
    if not cfg.xbm_size:
        return loss
    if cfg.method != "contrastive":
        raise UserError("--xbm-size: a memory of negatives is for contrastive tuning only")
    per_step = 2 * cfg.batch_size  # two views of every clip of the global batch
    if cfg.xbm_size <= per_step:
        raise UserError(f"--xbm-size {cfg.xbm_size}: the memory must hold more than one global "
                        f"batch's {per_step} embeddings (2 views x --batch-size) to add any")
    if isinstance(loss, SupConLoss):  # PML's memory serves PML's loss as it is
        return CrossBatchMemory(loss, cfg.proj_dim, memory_size=cfg.xbm_size)
    return LabelSetCrossBatchMemory(loss, cfg.proj_dim, n_labels if multilabel else None,
                                    memory_size=cfg.xbm_size)


def method_loss(name: str, method: str, multilabel: bool, temperature: float) -> nn.Module:
    """The loss for a method; "auto" picks the natural one for the task's label type."""
    if method in CLASSIFIER_METHODS:
        name = ("bce" if multilabel else "ce") if name == "auto" else name
        if name not in ("ce", "bce") or (name == "ce") == multilabel:
            raise UserError(f"--loss {name}: {method} uses {'bce' if multilabel else 'ce'} "
                            "for this task")
        return nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss()
    if name == "auto":
        name = "jaccard-supcon" if multilabel else "supcon"
    if name == "supcon":
        if multilabel:
            raise UserError("--loss supcon needs single-label classes; this task is multilabel "
                            "(use jaccard-supcon or any-shared-supcon)")
        return SupConLoss(temperature=temperature)
    if name in ("jaccard-supcon", "any-shared-supcon"):
        weighting = "jaccard" if name == "jaccard-supcon" else "any-shared"
        return JaccardSupConLoss(temperature=temperature, weighting=weighting)
    raise UserError(f"--loss {name!r}: choose from {', '.join(LOSSES)}")


class Classifier(nn.Module):
    """The fine-tuning head: a linear classifier over the L2-normalised embedding times a scale.

    On unit-norm inputs a plain linear layer starts with near-uniform logits and needs many
    steps to grow them (NormFace, Wang et al. 2017): with lr 1e-4 and a few epochs its loss never
    left ln(classes). Scaling by 1 / temperature puts cross-entropy on the same footing as
    SupCon, whose cosine similarities get that same scale.
    """

    def __init__(self, dim: int, n_classes: int, scale: float) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, n_classes)
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(nn.functional.normalize(x, dim=-1) * self.scale)


def make_head(cfg: TuneConfig, dim: int, n_classes: int) -> nn.Module:
    """Contrastive: SupContrast's MLP projection head, dropped after tuning. Finetune: the
    classifier, kept in the checkpoint for its own test score."""
    if cfg.method in CLASSIFIER_METHODS:
        return Classifier(dim, n_classes, 1.0 / cfg.temperature)
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, cfg.proj_dim))

"""Pair mining from label sets, so multi-label clips can be positives by how much they share.

`jaccard_similarity` is the one place the batch's label overlap is computed; `JaccardSupConLoss`
uses it too.
"""

import torch
from pytorch_metric_learning.miners import BaseMiner


def check_labels(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Validate labels against the batch and move them to its device.

    PML's own check insists on 1-D labels; here 2-D multi-hot (batch × num_labels) is allowed too.
    """
    if labels.ndim not in (1, 2):
        raise ValueError(
            "labels must be 1-D class ids (batch,) or a 2-D multi-hot tensor (batch, num_labels), "
            f"got shape {tuple(labels.shape)}"
        )
    if labels.shape[0] != embeddings.shape[0]:
        raise ValueError(f"{embeddings.shape[0]} embeddings but {labels.shape[0]} rows of labels")
    return labels.to(embeddings.device)


def jaccard_similarity(labels: torch.Tensor) -> torch.Tensor:
    """All pairwise |Y_i ∩ Y_j| / |Y_i ∪ Y_j| of a batch's label sets, as a float32 (B, B) matrix.

    1-D class ids are one label per clip (1 for the same class, else 0). Rows of a 2-D multi-hot
    tensor are label sets (non-zero = present); two empty sets score 0. Autocast is turned off so
    the counts and their ratio stay exact in float32.
    """
    if labels.ndim == 1:
        return (labels.unsqueeze(1) == labels.unsqueeze(0)).float()
    with torch.autocast(labels.device.type, enabled=False):
        y = (labels != 0).float()
        intersection = y @ y.T
        sizes = y.sum(dim=1)
        union = sizes.unsqueeze(1) + sizes.unsqueeze(0) - intersection
        return intersection / union.clamp(min=1)


def off_diagonal(n: int, device: torch.device) -> torch.Tensor:
    """Mask of all pairs (i, j) with i != j: a clip is never its own positive or negative."""
    return ~torch.eye(n, dtype=torch.bool, device=device)


class JaccardMiner(BaseMiner):
    """Every positive pair (Jaccard > pos_threshold) and every negative pair (no shared label).

    Pairs in between (0 < J <= pos_threshold) are left out of both, as PML's miners leave out
    unmined pairs. Clips with no label are negatives to all. The positives' Jaccard values of the
    last call are kept in `pos_weights`, aligned with (a1, p), because PML's miner output has no
    slot for weights; `JaccardSupConLoss` recomputes them from the labels instead.
    """

    def __init__(self, pos_threshold: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= pos_threshold < 1:
            raise ValueError(f"pos_threshold must be in [0, 1), got {pos_threshold}")
        self.pos_threshold = pos_threshold
        self.pos_weights = torch.empty(0)
        self.add_to_recordable_attributes(name="pos_threshold", is_stat=False)

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """BaseMiner.forward, but accepting multi-hot labels (PML's shape check rejects them)."""
        self.reset_stats()
        labels = check_labels(embeddings, labels)
        with torch.no_grad():
            mining_output = self.mine(embeddings, labels)
        self.output_assertion(mining_output)
        return mining_output

    def mine(
        self, embeddings: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        jaccard = jaccard_similarity(labels)
        pairs = off_diagonal(len(labels), labels.device)
        a1, p = torch.where(pairs & (jaccard > self.pos_threshold))
        a2, n = torch.where(pairs & (jaccard == 0))
        self.pos_weights = jaccard[a1, p]
        return a1, p, a2, n

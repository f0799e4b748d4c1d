"""Pair mining from label sets, so multi-label clips can be positives by how much they share."""

import torch
from pytorch_metric_learning.miners import BaseMiner

from hear_contrastune.training.pairs import check_labels, jaccard_similarity, off_diagonal


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

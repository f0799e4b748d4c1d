"""Supervised contrastive loss for multi-label clips, weighted by how many labels a pair shares."""

from typing import Literal

import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.reducers import MeanReducer
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from hear_contrastune.training.pairs import check_labels, jaccard_similarity, off_diagonal

Weighting = Literal["jaccard", "any-shared"]
WEIGHTINGS: tuple[Weighting, ...] = ("jaccard", "any-shared")


class JaccardSupConLoss(BaseMetricLossFunction):
    """SupCon where pair (i, j) counts as a positive with weight J_ij, its labels' Jaccard overlap.

    For each anchor i with a positive: ℓ_i = −Σ_j J_ij log p_ij / Σ_j J_ij, where p_ij is the
    softmax of s_ij/τ over all j != i; the loss is the mean of ℓ_i over those anchors.
    `weighting="any-shared"` makes every pair that shares a label a full positive instead.
    With 1-D class labels both equal PML's `SupConLoss`, except that a batch with no negatives
    still gets the formula's loss here where SupConLoss returns zero, and that the default
    MeanReducer keeps anchors whose loss underflows to 0, which SupConLoss's AvgNonZeroReducer
    drops (pass `reducer=AvgNonZeroReducer()` for that).

    Labels are 1-D class ids or a 2-D multi-hot tensor; PML's forward only takes 1-D, so this
    class keeps its own. With a miner's `indices_tuple`, only mined pairs count, as in PML: the
    mined positives carry their weights and the softmax runs over mined positives and negatives.
    The loss is computed in float32 even under autocast. `num_anchors_without_positive` says how
    many clips of the last batch had no positive and so no loss term.
    """

    def __init__(self, temperature: float = 0.1, weighting: Weighting = "jaccard", **kwargs):
        super().__init__(**kwargs)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.temperature = temperature
        self.weighting = weighting
        self.num_anchors_without_positive = 0
        self.add_to_recordable_attributes(list_of_names=["temperature"], is_stat=False)
        self.add_to_recordable_attributes(name="num_anchors_without_positive", is_stat=True)

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        indices_tuple: tuple[torch.Tensor, ...] | None = None,
    ) -> torch.Tensor:
        """BaseMetricLossFunction.forward, but accepting multi-hot labels and no ref_emb."""
        self.reset_stats()
        labels = check_labels(embeddings, labels)
        loss_dict = self.compute_loss(embeddings, labels, indices_tuple)
        self.add_embedding_regularization_to_loss_dict(loss_dict, embeddings)
        return self.reducer(loss_dict, embeddings, labels)

    def compute_loss(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        indices_tuple: tuple[torch.Tensor, ...] | None,
    ) -> dict:
        weights, in_softmax = self.pair_weights(labels, indices_tuple)
        has_positive = (weights > 0).any(dim=1)
        self.num_anchors_without_positive = int((~has_positive).sum())
        if self.num_anchors_without_positive == len(labels):
            return self.zero_losses()

        with torch.autocast(embeddings.device.type, enabled=False):
            mat = self.distance(embeddings.float())
            if not self.distance.is_inverted:
                mat = -mat
            logits = mat / self.temperature
            # torch.logsumexp subtracts the row maximum, so large 1/τ cannot overflow.
            log_prob = logits - lmu.logsumexp(logits, keep_mask=in_softmax, add_one=False, dim=1)
            total_weight = weights.sum(dim=1)
            losses = -(weights * log_prob).sum(dim=1) / torch.where(has_positive, total_weight, 1)

        anchors = torch.where(has_positive)[0]
        return {
            "loss": {"losses": losses[anchors], "indices": anchors, "reduction_type": "element"}
        }

    def pair_weights(
        self, labels: torch.Tensor, indices_tuple: tuple[torch.Tensor, ...] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Positive weight of every pair, and which pairs enter each anchor's softmax."""
        weights = jaccard_similarity(labels)
        if self.weighting == "any-shared":
            weights = (weights > 0).float()
        pairs = off_diagonal(len(labels), labels.device)
        if indices_tuple is None:
            return weights * pairs, pairs
        a1, p, a2, n = lmu.convert_to_pairs(indices_tuple, labels)
        mined_positive = torch.zeros_like(pairs)
        mined_positive[a1, p] = True
        in_softmax = mined_positive.clone()
        in_softmax[a2, n] = True
        return weights * (mined_positive & pairs), in_softmax & pairs

    def get_default_reducer(self) -> MeanReducer:
        return MeanReducer()

    def get_default_distance(self) -> CosineSimilarity:
        return CosineSimilarity()

"""Supervised contrastive loss for multi-label clips, weighted by how many labels a pair shares,
and a cross-batch memory that keeps multi-label clips' label sets."""

from collections.abc import Callable
from typing import Literal

import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.losses import BaseMetricLossFunction, CrossBatchMemory
from pytorch_metric_learning.reducers import MeanReducer
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from hear_contrastune.training.config import DEFAULTS
from hear_contrastune.training.pairs import check_labels, jaccard_similarity, off_diagonal

Weighting = Literal["jaccard", "any-shared"]
PAIR_WEIGHTINGS: tuple[Weighting, ...] = ("jaccard", "any-shared")


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
    With `ref_emb` / `ref_labels` (PML's convention, as CrossBatchMemory calls a loss), anchors
    are the embeddings and the pairs are (embedding, reference), every one of them unless an
    `indices_tuple` says otherwise.
    The loss is computed in float32 even under autocast. `num_anchors_without_positive` says how
    many clips of the last batch had no positive and so no loss term.
    """

    def __init__(self, temperature: float = DEFAULTS.temperature, weighting: Weighting = "jaccard",
                 **kwargs):
        super().__init__(**kwargs)
        if weighting not in PAIR_WEIGHTINGS:
            raise ValueError(f"weighting must be one of {PAIR_WEIGHTINGS}, got {weighting!r}")
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
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """BaseMetricLossFunction.forward, but accepting multi-hot labels."""
        self.reset_stats()
        labels = check_labels(embeddings, labels)
        if (ref_emb is None) != (ref_labels is None):
            raise ValueError("ref_emb and ref_labels come together")
        if ref_emb is not None:
            ref_labels = check_labels(ref_emb, ref_labels)
        loss_dict = self.compute_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        self.add_embedding_regularization_to_loss_dict(loss_dict, embeddings)
        return self.reducer(loss_dict, embeddings, labels)

    def compute_loss(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        indices_tuple: tuple[torch.Tensor, ...] | None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> dict:
        """Per-anchor losses; without references the batch is its own, minus each clip itself."""
        weights, in_softmax = self.pair_weights(labels, indices_tuple, ref_labels)
        has_positive = (weights > 0).any(dim=1)
        self.num_anchors_without_positive = int((~has_positive).sum())
        if self.num_anchors_without_positive == len(labels):
            return self.zero_losses()

        with torch.autocast(embeddings.device.type, enabled=False):
            mat = self.distance(embeddings.float(),
                                None if ref_emb is None else ref_emb.float())
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
        self,
        labels: torch.Tensor,
        indices_tuple: tuple[torch.Tensor, ...] | None,
        ref_labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Positive weight of every pair, and which pairs enter each anchor's softmax."""
        weights = overlap(labels, ref_labels)
        if self.weighting == "any-shared":
            weights = (weights > 0).float()
        if ref_labels is None:
            pairs = off_diagonal(len(labels), labels.device)
        else:  # PML's convention: an anchor met in the references is removed by the caller
            pairs = torch.ones_like(weights, dtype=torch.bool)
        if indices_tuple is None:
            return weights * pairs, pairs
        a1, p, a2, n = lmu.convert_to_pairs(indices_tuple, labels, ref_labels)
        mined_positive = torch.zeros_like(pairs)
        mined_positive[a1, p] = True
        in_softmax = mined_positive.clone()
        in_softmax[a2, n] = True
        return weights * (mined_positive & pairs), in_softmax & pairs

    def get_default_reducer(self) -> MeanReducer:
        return MeanReducer()

    def get_default_distance(self) -> CosineSimilarity:
        return CosineSimilarity()


def overlap(labels: torch.Tensor, ref_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Jaccard overlap of every (anchor, reference) pair; without references, of the batch.

    `jaccard_similarity` computes one set's square matrix, so the references join the batch and
    the anchors' rows against the references are kept: (B + M)² overlaps for B anchors and M
    references where B·M would do (with a memory of 4096 and B = 128, 18 M instead of 0.5 M).
    """
    if ref_labels is None:
        return jaccard_similarity(labels)
    n = len(labels)
    return jaccard_similarity(torch.cat([labels, ref_labels.to(labels.dtype)]))[:n, n:]


def label_set_pairs(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ref_emb: torch.Tensor,
    ref_labels: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (anchor, reference) pair as PML's (a1, p, a2, n): positive if they share a label.

    PML's `get_all_pairs_indices` compares 1-D class ids; this compares label sets, which for
    1-D ids gives the same pairs. It has a miner's signature, so CrossBatchMemory can call it.
    A clip with no label shares none even with itself, so its own memory slot is a negative,
    which PML's self-removal (of positives) leaves; harmless, as a clip without a positive has
    no loss term.
    """
    shared = overlap(labels, ref_labels) > 0
    a1, p = torch.where(shared)
    a2, n = torch.where(~shared)
    return a1, p, a2, n


class LabelSetCrossBatchMemory(CrossBatchMemory):
    """PML's CrossBatchMemory (XBM, Wang et al. 2020), keeping multi-hot label sets.

    PML's memory holds 1-D class ids and pairs equal ids; a multilabel clip's labels are a row
    of a multi-hot tensor, so here the label memory is [memory_size, num_labels] (1-D class ids
    when `num_labels` is None) and, with no miner, a memory entry is an anchor's positive when
    they share a label, a negative when they share none (`label_set_pairs`). JaccardSupConLoss
    then weighs each positive by its overlap, as it does within a batch. The rest is PML's: the
    batch is written to memory (detached, oldest entries overwritten first) before the loss, the
    anchors are the batch and the references the memory, and an anchor's own slot leaves its
    pairs. Gradients reach the anchors only. A `miner` is called as PML calls one: (embeddings,
    labels, memory embeddings, memory labels).
    """

    def __init__(self, loss: BaseMetricLossFunction, embedding_size: int,
                 num_labels: int | None = None, memory_size: int = 1024,
                 miner: Callable | None = None) -> None:
        self.num_labels = num_labels  # before PML's __init__, whose reset_queue reads it
        super().__init__(loss, embedding_size, memory_size, miner=miner or label_set_pairs)

    @staticmethod
    def supported_losses() -> list[str]:
        return [*CrossBatchMemory.supported_losses(), JaccardSupConLoss.__name__]

    def reset_queue(self) -> None:
        """An empty memory, its labels as label sets when `num_labels` is given."""
        super().reset_queue()
        if self.num_labels is not None:
            self.register_buffer("label_memory", torch.zeros(self.memory_size, self.num_labels))

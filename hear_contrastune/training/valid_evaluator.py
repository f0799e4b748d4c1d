"""Where each epoch's valid score is computed: how good is this epoch's encoder, on the valid
split only.

The backbone alone (no head) embeds a reference set of train clips and the valid clips, and a
kNN probe, best over a small k grid, scores valid: the score training.selection chooses the epoch
kept as `best.pt` by. On big tasks both sets are a seeded sample of at most `max_clips` clips
(the same every epoch), so an epoch's evaluation costs the same on a task of any size. Given a
classifier head, its own valid score is logged beside it, to show it learns. The full kNN probe
(probes.knn) chooses k on valid and reports test; this is only for choosing an epoch. Scoring
runs under the profiler label "select", which benchmarks/bench_tune.py reads.
"""

import numpy as np
import torch
from sklearn.metrics import average_precision_score
from torch import Tensor, nn
from torch.profiler import record_function

from hear_contrastune.backbones import Backbone
from hear_contrastune.backbones.embedding import embed_clips
from hear_contrastune.data.loading import ClipDataset
from hear_contrastune.estimators.knn_search import KnnIndex, vote

VALID_K = (1, 5, 10, 20)
# Below these, valid kNN moves by whole clips from epoch to epoch and an epoch's rank is noise.
MIN_VALID_CLIPS = 50
MIN_VALID_PER_CLASS = 5


def valid_metric(scores: Tensor, truth: Tensor, multilabel: bool) -> float:
    """Top-1 accuracy of class scores [n, classes], or mAP over labels present for multilabel."""
    if multilabel:
        present = truth.sum(0) > 0
        return float(average_precision_score(truth[:, present], scores[:, present]))
    return (scores.argmax(1) == truth).float().mean().item()


def sample(n: int, max_clips: int, seed: int) -> list[int]:
    """All of range(n), or a seeded sorted sample of `max_clips` of it."""
    if n <= max_clips:
        return list(range(n))
    return sorted(int(i) for i in np.random.default_rng(seed).choice(n, max_clips, replace=False))


def small_valid_warning(valid_targets: Tensor, n_classes: int, multilabel: bool) -> str | None:
    """Why the valid clips model selection scores are too few to rank epochs reliably, or None.

    `valid_targets`: the scored clips' class ids [n], or multi-hot rows [n, labels]."""
    n = len(valid_targets)
    unit = "label" if multilabel else "class"
    per_class = (float(valid_targets.sum()) if multilabel else n) / n_classes
    if n >= MIN_VALID_CLIPS and per_class >= MIN_VALID_PER_CLASS:
        return None
    return (f"model selection scores {n} valid clips, {per_class:.1f} per {unit} on average "
            f"(fewer than {MIN_VALID_CLIPS} clips or {MIN_VALID_PER_CLASS} per {unit}): a clip "
            "or two decides which epoch scores best, so the kept epoch is partly chance and its "
            "valid score optimistic; --select smoothed averages neighbouring epochs, --select "
            "last keeps the final one")


class ValidEvaluator:
    """The valid kNN score of a backbone, on fixed samples of train (reference) and valid."""

    def __init__(self, reference: ClipDataset, valid: ClipDataset, reference_targets: Tensor,
                 valid_targets: Tensor, multilabel: bool, max_clips: int, seed: int,
                 workers: int) -> None:
        self.reference, self.valid, self.multilabel, self.workers = (
            reference, valid, multilabel, workers)
        self.reference_idx = sample(len(reference), max_clips, seed)
        self.valid_idx = sample(len(valid), max_clips, seed + 1)
        self.reference_y = reference_targets[self.reference_idx].cpu()
        self.valid_y = valid_targets[self.valid_idx].cpu()

    @property
    def note(self) -> str:
        """What the selection scores on, for the log."""
        def part(name: str, used: list[int], data: ClipDataset) -> str:
            if len(used) == len(data):
                return f"all {len(data)} {name} clips"
            return f"a seeded sample of {len(used)} of {len(data)} {name} clips"
        return ("model selection: valid kNN over " + part("train", self.reference_idx,
                                                          self.reference)
                + " against " + part("valid", self.valid_idx, self.valid))

    def embed(self, backbone: Backbone) -> tuple[Tensor, Tensor]:
        """The backbone's embeddings of the reference and valid samples (rows as *_y)."""
        train_emb = embed_clips(backbone, self.reference, self.reference_idx, self.workers,
                                "select: train")
        valid_emb = embed_clips(backbone, self.valid, self.valid_idx, self.workers,
                                "select: valid")
        backbone.train()
        return train_emb, valid_emb

    def score(self, backbone: Backbone, head: nn.Module | None = None) -> dict[str, float]:
        """`valid_knn` (what selects the epoch) and, given a classifier head, `valid_head`."""
        with record_function("select"):
            return self.scores_of(*self.embed(backbone), head)

    def scores_of(self, train_emb: Tensor, valid_emb: Tensor,
                  head: nn.Module | None = None) -> dict[str, float]:
        """`score` of embeddings already made (rows as *_y), so a caller can make them apart."""
        train_y, valid_y = self.reference_y, self.valid_y
        if not self.multilabel:
            n_classes = int(max(train_y.max(), valid_y.max())) + 1
            train_y = torch.nn.functional.one_hot(train_y, n_classes)
        neighbours = KnnIndex(train_emb, device=train_emb.device).search(valid_emb, max(VALID_K))
        scores = {"valid_knn": max(
            valid_metric(vote(neighbours, train_y, k), valid_y, self.multilabel)
            for k in VALID_K if k <= neighbours.k)}
        if head is not None:
            head.eval()
            with torch.no_grad():
                scores["valid_head"] = valid_metric(head(valid_emb).cpu(), valid_y,
                                                    self.multilabel)
            head.train()
        return scores

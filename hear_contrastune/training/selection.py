"""Model selection while tuning: how good is this epoch's encoder, on the valid split only.

The backbone alone (no head) embeds a reference set of train clips and the valid clips, and a
kNN probe, best over a small k grid, scores valid: the score that picks the epoch kept as
`best.pt`. On big tasks both sets are a seeded sample of at most `max_clips` clips (the same
every epoch), so an epoch's evaluation costs the same on a task of any size. Given a classifier
head, its own valid score is logged beside it, to show it learns. The full kNN probe
(probes.knn) chooses k on valid and reports test; this is only for choosing an epoch.

Which epoch the scores choose is `choose_epoch`'s rule (TuneConfig.select): the best one, the
last one, or the best of the curve smoothed by a centred moving average over 3 epochs. A
centred window, not an exponential moving average: both cut the noise of one epoch's score
alike (an EMA with weight 1/2 on the newest score has the variance of a 3-epoch mean), but an
EMA lags, scoring epoch e by the epochs before it, so on a curve that rises then falls it keeps
an epoch after the peak; the centred mean scores e by e and its two neighbours. Its price: an
epoch is judged one epoch later, so the loop keeps the previous epoch's weights until then.
"""

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import average_precision_score
from torch import Tensor, nn

from hear_contrastune.backbones import Backbone
from hear_contrastune.backbones.embedding import embed_clips
from hear_contrastune.data.loading import ClipDataset
from hear_contrastune.estimators.knn_search import KnnIndex, vote
from hear_contrastune.training.config import SELECT_RULES

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


def smoothed(scores: Sequence[float]) -> np.ndarray:
    """Each score's mean with its neighbours (a centred window of 3; two at either end)."""
    v = np.asarray(scores, dtype=np.float64)
    return np.array([v[max(0, e - 1):e + 2].mean() for e in range(len(v))])


def scored_epochs(scores: Sequence[float]) -> np.ndarray:
    """The epochs of a curve that were scored (--select-every leaves the others NaN)."""
    return np.flatnonzero(np.isfinite(np.asarray(scores, dtype=np.float64)))


def choose_epoch(rule: str, scores: Sequence[float], finished: bool) -> tuple[int, float]:
    """The epoch `rule` keeps from the valid scores of epochs 0, 1, ... so far (NaN where an
    epoch was not scored), and the score it was chosen by (the smoothed one for "smoothed");
    the earliest on a tie. Only scored epochs are candidates.

    A scored epoch's smoothed score is its mean with the scored epochs either side, so until the
    run is `finished` the latest scored epoch is no candidate yet, and a new score can move the
    choice only to the scored epoch before. A pure function of the curve, so a resumed run (its
    curve read back from epochs.csv) chooses as an uninterrupted one, and studies can apply
    every rule to a finished run's curve.
    """
    epochs = scored_epochs(scores)
    values = np.asarray(scores, dtype=np.float64)[epochs]
    if rule == "last":
        return int(epochs[-1]), float(values[-1])
    if rule == "smoothed":
        values = smoothed(values)
        if not finished and len(values) > 1:
            epochs, values = epochs[:-1], values[:-1]
    elif rule != "best":
        raise ValueError(f"selection rule {rule!r}: choose from {', '.join(SELECT_RULES)}")
    best = int(np.argmax(values))
    return int(epochs[best]), float(values[best])


def stalled(rule: str, scores: Sequence[float], patience: int) -> bool:
    """Whether the run can stop: `rule`'s score of epochs 0, 1, ... has not improved for
    `patience` epochs (0: never stop early).

    Judged on the score the rule chooses by (the smoothed one for "smoothed"; "last" chooses by
    none, so by the raw valid kNN), with choose_epoch's own tie rule: a tie is no improvement.
    A pure function of the curve, like choose_epoch, so a resumed run stops where an
    uninterrupted one would, and studies can replay it on finished runs' curves.
    """
    if patience <= 0:
        return False
    best, _ = choose_epoch("best" if rule == "last" else rule, scores, finished=False)
    return int(scored_epochs(scores)[-1]) - best >= patience


def stop_epoch(rule: str, scores: Sequence[float], patience: int) -> int:
    """The epoch a run with this valid curve stops after under `patience` (the last if none)."""
    for epoch in scored_epochs(scores)[1:]:
        if stalled(rule, scores[:epoch + 1], patience):
            return int(epoch)
    return len(scores) - 1


def is_scored(epoch: int, epochs: int, select_every: int) -> bool:
    """Whether a run of `epochs` epochs scores valid after `epoch` (--select-every): epoch 0,
    the last, and every `select_every`-th."""
    return epoch % select_every == 0 or epoch == epochs


def every(scores: Sequence[float], select_every: int) -> list[float]:
    """A curve scored every epoch as a run with --select-every would have scored it (the
    other epochs NaN): what studies replay on finished runs."""
    return [v if is_scored(e, len(scores) - 1, select_every) else float("nan")
            for e, v in enumerate(scores)]


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


class Selection:
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

    def __call__(self, backbone: Backbone, head: nn.Module | None = None) -> dict[str, float]:
        """`valid_knn` (what selects the epoch) and, given a classifier head, `valid_head`."""
        train_emb, valid_emb = self.embed(backbone)
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

"""Batch samplers that put clips sharing a label side by side, so every batch has positives.

Both yield lists of dataset indices (use them as a DataLoader's `batch_sampler`), are seeded,
and draw a new order for each epoch from their own generator.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from pytorch_metric_learning.samplers import MPerClassSampler
from pytorch_metric_learning.utils import common_functions as c_f
from torch.utils.data import Sampler

from hear_contrastune.errors import UserError


@contextmanager
def pml_random_state(rng: np.random.RandomState) -> Iterator[None]:
    """Make PML's samplers draw from `rng`; PML reads `c_f.NUMPY_RANDOM` for exactly this."""
    saved = c_f.NUMPY_RANDOM
    c_f.NUMPY_RANDOM = rng
    try:
        yield
    finally:
        c_f.NUMPY_RANDOM = saved


class SeededMPerClassSampler(Sampler[list[int]]):
    """PML's `MPerClassSampler` in batches, about one dataset's worth of clips per epoch.

    Each batch is batch_size / m classes with m clips each. Classes are drawn evenly, so clips of
    rare classes recur within an epoch and clips of common classes may be skipped.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, m: int, seed: int):
        self.batch_size = batch_size
        self.sampler = MPerClassSampler(
            labels, m, batch_size=batch_size, length_before_new_iter=len(labels)
        )
        self.rng = np.random.RandomState(seed)

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        with pml_random_state(self.rng):
            indices = [int(i) for i in self.sampler]
        for start in range(0, len(indices), self.batch_size):
            yield indices[start : start + self.batch_size]


class MPerLabelSampler(Sampler[list[int]]):
    """Multi-label batches built from groups of m clips that share one label.

    Each group starts from the next not yet visited clip of a shuffled epoch order, picks one of
    its labels at random, and adds m - 1 unvisited clips with that label (visited ones once the
    label runs out), so every clip is visited about once per epoch. Clips with no label join
    alone and act as negatives. The last partial batch is dropped.
    """

    def __init__(self, multi_hot: np.ndarray, batch_size: int, m: int, seed: int):
        self.batch_size = batch_size
        self.m = m
        self.clip_labels = [np.flatnonzero(row) for row in multi_hot]
        self.label_clips = [np.flatnonzero(column) for column in multi_hot.T]
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.clip_labels) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        batches = 0
        for group in self.epoch_groups():
            batch += group
            if len(batch) >= self.batch_size:
                yield batch[: self.batch_size]
                batches += 1
                if batches == len(self):
                    return
                # A group cut at the batch's end starts the next one rather than being lost.
                batch = batch[self.batch_size :]

    def epoch_groups(self) -> Iterator[list[int]]:
        """Groups of clips sharing a label, that together visit every clip at least once."""
        visited = np.zeros(len(self.clip_labels), dtype=bool)
        pools = [self.rng.permutation(clips) for clips in self.label_clips]
        next_in_pool = [0] * len(pools)
        for clip in self.rng.permutation(len(self.clip_labels)):
            if visited[clip]:
                continue
            visited[clip] = True
            group = [int(clip)]
            if len(self.clip_labels[clip]):
                label = self.rng.choice(self.clip_labels[clip])
                pool = pools[label]
                while len(group) < self.m and next_in_pool[label] < len(pool):
                    candidate = pool[next_in_pool[label]]
                    next_in_pool[label] += 1
                    if not visited[candidate]:
                        visited[candidate] = True
                        group.append(int(candidate))
                if len(group) < self.m:
                    group += self.revisits(pool, group)
            yield group

    def revisits(self, pool: np.ndarray, group: list[int]) -> list[int]:
        """Already visited clips of the label to fill the group up to m, when it ran out."""
        others = np.setdiff1d(pool, group)
        count = min(self.m - len(group), len(others))
        return [int(i) for i in self.rng.choice(others, size=count, replace=False)]


def make_sampler(
    labels: np.ndarray | torch.Tensor, batch_size: int, m: int, seed: int
) -> Sampler[list[int]]:
    """The batch sampler for these labels: 1-D class ids or a 2-D multi-hot (clips × labels)."""
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if not 2 <= m <= batch_size:
        raise UserError(f"m={m} clips per label must be between 2 and the batch size {batch_size}")
    if len(labels) < batch_size:
        raise UserError(f"--batch-size {batch_size} is larger than the {len(labels)} training "
                        "clips")
    if batch_size < 2 * m:  # one class (or label group) per batch: no negatives, nothing to learn
        raise UserError(f"batch size {batch_size} with m={m} holds one class per batch, so no "
                        f"clip has a negative; use a batch of at least {2 * m} (2 x m)")
    if labels.ndim == 2:
        return MPerLabelSampler(labels, batch_size, m, seed)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D or 2-D, got shape {labels.shape}")
    if batch_size % m:
        raise UserError(f"batch size {batch_size} must be a multiple of m={m} for class labels")
    num_classes = len(np.unique(labels))
    if m * num_classes < batch_size:
        raise UserError(
            f"m={m} clips × {num_classes} classes cannot fill a batch of {batch_size}; "
            f"use m >= {-(-batch_size // num_classes)} or a smaller batch"
        )
    return SeededMPerClassSampler(labels, batch_size, m, seed)


@dataclass(frozen=True)
class BatchShape:
    """A run's batch: `batch_size` clips, `m` of each class (label) drawn; `note` says why."""

    batch_size: int
    m: int
    note: str


def fit_batch(labels: np.ndarray | torch.Tensor, batch_size: int | None, m: int | None,
              default_batch: int, default_m: int) -> BatchShape:
    """The batch shape for these train labels, checked; None fits that value to the task.

    Fitted: at most `default_batch` clips (and no more than the train split holds), `default_m`
    of each class unless the task has too few classes to fill the batch that way. Then m rises so
    that every class is in every batch (a 10-class task: 10 x 6 = 60). m stays within the
    median class's clip count, so most classes give distinct clips; a class with fewer clips
    than m repeats its clips, each time in new random views (PML's MPerClassSampler draws with
    replacement). Explicit values are only checked (make_sampler), never changed.
    """
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    multilabel = labels.ndim == 2
    counts = labels.sum(axis=0) if multilabel else np.unique(labels, return_counts=True)[1]
    counts = counts[counts > 0]
    if len(counts) < 2:
        raise UserError(f"the training clips hold {len(counts)} class(es): a batch needs two "
                        "classes to contrast")
    n, classes = len(labels), len(counts)
    median = int(np.median(counts))
    fitted = batch_size is None or m is None
    if batch_size is None and m is None:
        batch_size, m = _fit_both(n, classes, median, default_batch, default_m, multilabel)
    elif batch_size is None:
        batch_size = min(default_batch, n) if multilabel else min(default_batch, n, m * classes)
        batch_size -= 0 if multilabel else batch_size % m
    elif m is None:
        m = _fit_m(batch_size, classes, default_m, multilabel)
    make_sampler(labels, batch_size, m, seed=0)  # the same checks as every epoch's sampler
    kind = "labels" if multilabel else "classes"
    if multilabel:
        shape = f"batches of {batch_size} clips in groups of {m} sharing a label"
    elif batch_size // m == classes:
        shape = f"batches of {batch_size} clips: {m} from each of the {classes} classes"
    else:
        shape = (f"batches of {batch_size} clips: {m} from each of {batch_size // m} of the "
                 f"{classes} classes")
    if not fitted:
        return BatchShape(batch_size, m, f"{shape} (as given)")
    why = (f"fitted to the {n} train clips in {classes} {kind}, median {median} a {kind[:-1]}; "
           f"the defaults are {default_batch} clips, {default_m} a class")
    short = int((counts < m).sum())
    repeats = (f"; {short} {kind} with fewer than {m} clips repeat theirs in new views"
               if short and not multilabel else "")
    return BatchShape(batch_size, m, f"{shape} ({why}){repeats}")


def _fit_both(n: int, classes: int, median: int, default_batch: int, default_m: int,
              multilabel: bool) -> tuple[int, int]:
    """(batch, m) for a task: the defaults where the task fills them, every class per batch
    where it has fewer classes than the default batch holds, never more clips than it has."""
    batch = min(default_batch, n)
    if multilabel:  # groups of m clips sharing a label fill any batch of at least 2 groups
        m = max(2, min(default_m, median, batch // 2))
    else:
        m = max(2, min(max(default_m, batch // classes), median))
        per_batch = min(classes, batch // m)
        if per_batch < 2:
            m = batch // 2
            per_batch = 2
        batch = per_batch * m
    if m < 2 or batch < 2 * m:
        raise UserError(f"{n} training clips cannot make a batch of two classes with two clips "
                        "each: the train split is too small to tune on")
    return batch, m


def _fit_m(batch_size: int, classes: int, default_m: int, multilabel: bool) -> int:
    """m for an explicit --batch-size: the default when it fits, else the smallest whole
    share of the batch that the task's classes can fill."""
    if multilabel:
        return max(2, min(default_m, batch_size // 2))
    fits = [d for d in range(2, batch_size // 2 + 1)
            if batch_size % d == 0 and d * classes >= batch_size]
    if not fits:
        raise UserError(f"--batch-size {batch_size}: no clips-per-class m fills it with the "
                        f"task's {classes} classes and leaves two classes per batch; choose "
                        "another --batch-size or set --m-per-class")
    return default_m if default_m in fits else fits[0]

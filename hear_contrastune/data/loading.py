"""Streaming a task's clips from disk, so peak memory does not grow with the task.

`ClipDataset` decodes one clip per item (in DataLoader workers); the samplers decide which
clips form a batch, the dataset only decodes them. Training takes fixed-length crops, drawn
from a generator seeded by (seed, epoch, clip), so a crop never depends on which worker read
it or on a resume. Embedding takes whole clips, batched by equal length (HEAR's API takes a
batch of equal-length audio): a clip of a length no other clip has goes alone, as heareval's
own runner feeds a task with clips of varying length.
"""

import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from hear_contrastune.data.audio import clip_length, read_clip
from hear_contrastune.data.task import Task
from hear_contrastune.errors import UserError

# DataLoader worker processes decoding clips. Decoding is light next to the encoder: on a 2-core
# CPU, decoding in the main process kept 1.02x the in-memory path's training throughput and one
# worker 0.92x (it takes a core from the encoder; benchmarks/bench_data.py); with more cores,
# workers overlap decoding with compute.
DEFAULT_WORKERS = 0 if (os.cpu_count() or 1) <= 2 else min(4, (os.cpu_count() or 1) // 2)


class ClipDataset(Dataset):
    """The clips of some splits of a task, in (split order, filename) order.

    Item i is (audio [T] float32, i). `num_samples` fixes T (crop or pad, for training);
    None gives whole clips (for embedding). `keep` (indices into that order) keeps only those
    clips: a few-shot run's draw (data.shots).
    """

    def __init__(self, task: Task, splits: Sequence[str], num_samples: int | None = None,
                 seed: int = 0, keep: Sequence[int] | None = None) -> None:
        self.task, self.num_samples, self.seed = task, num_samples, seed
        self.clips = [(split, filename, labels)
                      for split in splits for filename, labels in task.examples(split)]
        if keep is not None:
            self.clips = [self.clips[i] for i in keep]
        self.epoch = 0  # set before each epoch's loader is made: it seeds the crops
        self._lengths: list[int] | None = None

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def names(self) -> list[str]:
        """Each clip as "<split>/<filename>": what embeddings folders and few-shot draws record."""
        return [f"{split}/{filename}" for split, filename, _ in self.clips]

    @property
    def labels(self) -> list[list[str]]:
        return [labels for _, _, labels in self.clips]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | str:
        """(audio, i); or, for a clip that cannot be read, its one-line error, which
        `clip_batches` raises in the main process (a worker's own exception would arrive
        wrapped in a multi-line traceback)."""
        split, filename, _ = self.clips[i]
        rng = (np.random.default_rng((self.seed, self.epoch, i))
               if self.num_samples is not None else None)
        try:
            audio = read_clip(self.task, split, filename, self.num_samples, rng)
        except UserError as e:
            return str(e)
        return torch.from_numpy(audio), i

    def lengths(self) -> list[int]:
        """Each clip's length in samples, as `__getitem__` returns it (headers read once:
        model selection batches the same clips every epoch)."""
        if self._lengths is None:
            self._lengths = ([self.num_samples] * len(self) if self.num_samples is not None
                             else [clip_length(self.task, split, filename)
                                   for split, filename, _ in self.clips])
        return self._lengths


def length_batches(lengths: Sequence[int], indices: Iterable[int],
                   max_batch_samples: int) -> list[list[int]]:
    """`indices` in batches of equal clip length, each at most `max_batch_samples` samples
    (at least one clip), longest clips first."""
    by_length: dict[int, list[int]] = {}
    for i in indices:
        by_length.setdefault(lengths[i], []).append(i)
    batches = []
    for length in sorted(by_length, reverse=True):
        group = by_length[length]
        per_batch = max(1, max_batch_samples // max(1, length))
        batches += [group[s:s + per_batch] for s in range(0, len(group), per_batch)]
    return batches


def _collate(items: list[tuple[torch.Tensor, int] | str]) -> tuple[torch.Tensor, ...] | str:
    errors = [item for item in items if isinstance(item, str)]
    return errors[0] if errors else default_collate(items)


def clip_batches(dataset: ClipDataset, batches: Sequence[list[int]], workers: int,
                 pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(audio [b, T], indices [b]) for each batch of dataset indices, decoded by `workers`
    DataLoader processes; a clip that cannot be read is a one-line UserError."""
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers,
                        pin_memory=pin_memory, collate_fn=_collate)
    for batch in loader:
        if isinstance(batch, str):
            raise UserError(batch)
        yield batch

"""A heareval score on every bootstrap resample of the test clips at once.

The paired bootstrap (comparison.paired) needs a record's primary score on B = 1000 resamples
of its test clips. Calling heareval's scorer once per resample costs B calls: for mAP about
6 ms each on a small task and seconds on a large one, which made the report the slowest stage
of a compare run on a multilabel task. Neither heareval nor scikit-learn scores many resamples
in one call, so this module does, for the scores the suite uses, with heareval's numbers:

- a score that is a mean over clips of something each clip decides alone (top1_acc,
  pitch_acc, chroma_acc: heareval counts a clip correct or not): heareval's scorer is called
  once per clip, and a resample's score is the mean over the clips it draws;
- mAP (heareval's: scikit-learn's macro average precision): a resample is the clips weighted
  by how often it draws each, and scikit-learn's average precision of weighted clips is that
  of the clips repeated, computed here for all resamples of a label in one cumulative sum.
  A label no drawn clip carries scores 0, as scikit-learn scores it.

Any other score falls back to one heareval call per resample. tests/test_paired.py checks both
fast paths against those calls.
"""

import warnings
from typing import Any

import numpy as np

from hear_contrastune.probes.protocol import primary_score

PER_CLIP_SCORES = ("top1_acc", "pitch_acc", "chroma_acc")  # heareval: correct clips / clips
MAP_SCORES = ("mAP",)
BLOCK_ELEMENTS = 2**22  # resamples x clips held at a time in the mAP path (32 MiB of float64)


def resampled_scores(scorer: Any, scores: np.ndarray, targets: np.ndarray,
                     idx: np.ndarray) -> np.ndarray:
    """`scorer`'s value on each resample: row b of `idx` [B, n] is resample b's clip indices."""
    with warnings.catch_warnings():  # a resample can miss a label: scikit-learn says so
        warnings.simplefilter("ignore")
        if str(scorer) in PER_CLIP_SCORES:
            per_clip = np.array([primary_score([scorer], scores[i:i + 1], targets[i:i + 1])
                                 for i in range(len(scores))])
            return per_clip[idx].mean(axis=1)
        if str(scorer) in MAP_SCORES:
            return resampled_map(scores, targets, idx)
        return np.array([primary_score([scorer], scores[i], targets[i]) for i in idx])


def resampled_map(scores: np.ndarray, targets: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Macro average precision (scikit-learn's, uninterpolated) of each resample of the clips."""
    n_resamples, n = idx.shape
    block = max(1, BLOCK_ELEMENTS // n)
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, block):
        rows = idx[start:start + block]
        flat = (np.arange(len(rows))[:, None] * n + rows).ravel()  # how often each draws each
        counts = np.bincount(flat, minlength=len(rows) * n).reshape(len(rows), n).astype(float)
        out[start:start + len(rows)] = np.mean(
            [weighted_ap(scores[:, j], targets[:, j] > 0, counts)
             for j in range(scores.shape[1])], axis=0)
    return out


def weighted_ap(score: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One label's average precision under each row of clip weights [R, n]: the sum over
    distinct score thresholds, highest first, of (recall gained) x (precision there)."""
    order = np.argsort(score, kind="mergesort")[::-1]  # scikit-learn's order
    ranked = score[order]
    w = weights[:, order]
    tp = np.cumsum(w * positive[order], axis=1)
    seen = np.cumsum(w, axis=1)
    ends = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # last clip of each score
    tp, seen = tp[:, ends], seen[:, ends]
    gained = np.diff(tp, axis=1, prepend=0.0)
    precision = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
    total = tp[:, -1]
    return np.divide((gained * precision).sum(axis=1), total, out=np.zeros_like(total),
                     where=total > 0)

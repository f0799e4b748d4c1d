"""Per-clip test predictions of a probe, saved beside its JSON result as an .npz.

Why: a test score alone cannot say whether two methods differ by more than the luck of which
clips were in the test set; the paired bootstrap (comparison.paired) resamples clips, so it
needs each clip's score row and target. The file holds, per fold of the probe's roles, the
score matrix [n, n_labels] (float32, vocabulary order, exactly what heareval's scorer was given)
and the multi-hot targets, plus the fold names, the vocabulary and the primary score's name,
so the metric can be recomputed from the file alone. It is written with np.savez and read with
allow_pickle=False: nothing in it is executable.

heareval's own predictors leave `<fold>.predictions.pkl` (a plain pickle of torch tensors); it
is converted by `from_heareval_pickle` in the process that has just written it, never later.
"""

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hear_contrastune.atomic import atomic_path
from hear_contrastune.data.embeddings import EmbeddedTask
from hear_contrastune.data.hear_format import Roles
from hear_contrastune.errors import UserError


@dataclass(frozen=True)
class Predictions:
    """One probe's test predictions: per fold, scores and multi-hot targets [n, n_labels]."""

    folds: list[str]
    vocabulary: list[str]
    primary: str  # heareval's name of the primary score, e.g. "top1_acc"
    scores: list[np.ndarray]
    targets: list[np.ndarray]


def write_predictions(path: Path, pred: Predictions) -> None:
    """Save `pred` to `path` (.npz), atomically."""
    arrays: dict[str, np.ndarray] = {
        "folds": np.array(pred.folds, dtype=str),
        "vocabulary": np.array(pred.vocabulary, dtype=str),
        "primary": np.array(pred.primary, dtype=str),
    }
    for i, (s, t) in enumerate(zip(pred.scores, pred.targets, strict=True)):
        arrays[f"scores_{i}"] = np.asarray(s, dtype=np.float32)
        arrays[f"targets_{i}"] = np.asarray(t, dtype=np.float32)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: no ".npz" appended
        np.savez(f, **arrays)


def read_predictions(path: Path) -> Predictions:
    """A predictions file; anything malformed is a one-line UserError naming it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            folds = [str(f) for f in z["folds"]]
            vocabulary = [str(v) for v in z["vocabulary"]]
            primary = str(z["primary"])
            scores = [z[f"scores_{i}"] for i in range(len(folds))]
            targets = [z[f"targets_{i}"] for i in range(len(folds))]
    except FileNotFoundError:
        raise UserError(f"{path}: per-clip predictions file is missing") from None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: not a predictions file ({type(e).__name__}: {e})") from None
    for s, t in zip(scores, targets, strict=True):
        if s.ndim != 2 or s.shape != t.shape or s.shape[1] != len(vocabulary):
            raise UserError(f"{path}: scores {s.shape} and targets {t.shape} do not match a "
                            f"vocabulary of {len(vocabulary)} labels")
    return Predictions(folds, vocabulary, primary, scores, targets)


def heareval_predictions(folder: Path, task: EmbeddedTask, roles: list[Roles]) -> Predictions:
    """The `<fold>.predictions.pkl` of every role that heareval has just written into
    `folder`, as a Predictions (the task gives the vocabulary and the primary score)."""
    folds = ["|".join(role["test"]) for role in roles]
    pairs = [from_heareval_pickle(folder / f"{fold}.predictions.pkl") for fold in folds]
    return Predictions(folds, list(task.vocabulary), str(task.metadata["evaluation"][0]),
                       [s for s, _ in pairs], [t for _, t in pairs])


def from_heareval_pickle(pkl: Path) -> tuple[np.ndarray, np.ndarray]:
    """(scores, targets) of the `<fold>.predictions.pkl` heareval has JUST written in this
    process (a pickle of torch tensors: only ever read here, right after it was written)."""
    with open(pkl, "rb") as f:
        held: Any = pickle.load(f)  # noqa: S301 - our own process wrote it a moment ago
    return (held["prediction"].numpy().astype(np.float32),
            held["target"].numpy().astype(np.float32))

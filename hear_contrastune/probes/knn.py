"""contrastune knn-probe: a k-nearest-neighbour probe of an embeddings folder, scored like HEAR.

For each of heareval's data splits (one for trainvaltest, one per fold for k-fold, with
heareval's fold roles) the probe searches the neighbours of the valid and test clips among the
train clips once, at the largest k of the grid; picks k on the validation clips by the task's
primary score; and scores the test clips at that k with heareval's own score functions, so the
numbers sit beside HEAR's. The result goes to test.knn-predicted-scores.json, laid out like
heareval's test.predicted-scores.json, next to it.
"""

import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hear_contrastune.data.embeddings import EmbeddedTask, open_embedded_task
from hear_contrastune.data.hear_format import Roles
from hear_contrastune.errors import UserError
from hear_contrastune.estimators.knn_search import (
    DEFAULT_TEMPERATURE,
    METRICS,
    VOTE_WEIGHTINGS,
    KnnIndex,
    Neighbours,
    resolve_device,
    vote,
)
from hear_contrastune.probes.protocol import (
    FoldFit,
    Split,
    cached_probe,
    probe_table,
    probe_task,
)

OUTPUT_NAME = "test.knn-predicted-scores.json"
PREDICTIONS_NAME = "test.knn-predictions.npz"  # per-clip test scores (probes.predictions)
DEFAULT_K_GRID = (1, 3, 5, 10, 20, 50, 100)


def check_options(
    k_grid: Iterable[int], metric: str, weighting: str, temperature: float
) -> tuple[int, ...]:
    """Validate the options before any file is read; returns the k grid sorted and unique."""
    ks = list(k_grid)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise UserError(f"--k {ks}: expected one or more whole numbers >= 1")
    if metric not in METRICS:
        raise UserError(f"--metric {metric!r}: expected one of {', '.join(METRICS)}")
    if weighting not in VOTE_WEIGHTINGS:
        raise UserError(f"--weighting {weighting!r}: expected one of {', '.join(VOTE_WEIGHTINGS)}")
    if not (isinstance(temperature, int | float) and math.isfinite(temperature)
            and temperature > 0):
        raise UserError(f"--temperature {temperature}: must be a number > 0")
    return tuple(sorted(set(ks)))


def run_knn_probe(
    task_dirs: Sequence[str | Path],
    k_grid: Iterable[int] = DEFAULT_K_GRID,
    metric: str = METRICS[0],
    weighting: str = VOTE_WEIGHTINGS[0],
    temperature: float = DEFAULT_TEMPERATURE,
    device: str | None = None,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Probe every task folder; one summary per task, in order.

    A summary is {"task", "task_dir", "output", "skipped", "result"}, "result" being the JSON
    written (or found, for a task skipped because its output exists for the same embeddings
    and options, its "key", and `force` is off).
    All folders are opened before any work, so a typo fails at once.
    """
    ks = check_options(k_grid, metric, weighting, temperature)
    dev = resolve_device(device)
    tasks = [open_embedded_task(d) for d in task_dirs]
    options = {"k_grid": list(ks), "metric": metric, "weighting": weighting,
               "temperature": temperature}
    return [cached_probe(task, OUTPUT_NAME, options, force,
                         lambda t=task: probe_task(
                             t, KnnModel(t, ks, metric, weighting, temperature, dev)),
                         PREDICTIONS_NAME)
            for task in tasks]


class KnnModel:
    """The kNN probe's model: one search per fold at the largest k, a vote at each k."""

    name, param = "knn", "k"

    def __init__(self, task: EmbeddedTask, k_grid: tuple[int, ...], metric: str, weighting: str,
                 temperature: float, device: torch.device) -> None:
        self.multilabel, self.k_grid, self.metric, self.weighting = (
            task.multilabel, k_grid, metric, weighting)
        self.temperature, self.device = temperature, device
        self.search_s, self.gemm = 0.0, "mm"

    def fit(self, splits: dict[str, Split], targets: dict[str, np.ndarray], role: Roles,
            roles: list[Roles]) -> FoldFit:
        t = time.perf_counter()
        queried = {s for r in roles for s in r["valid"] + r["test"]}
        trained = {s for r in roles for s in r["train"]}
        train_names, valid, test = role["train"], role["valid"][0], role["test"][0]
        train_x = (splits[train_names[0]][0] if len(train_names) == 1
                   else np.concatenate([splits[n][0] for n in train_names]))
        train_y = np.concatenate([targets[n] for n in train_names])
        # Multiclass votes go by class index (a scatter-add instead of a gather).
        train_t = torch.from_numpy(train_y if self.multilabel else train_y.argmax(axis=1))
        # Arrays this probe read are normalised in place where no other role needs them raw.
        index = KnnIndex(train_x, self.metric, self.device,
                         copy=len(train_names) == 1 and train_names[0] in queried)
        n_train, self.gemm = index.n_train, "onednn" if index.onednn else "mm"
        k_max = min(self.k_grid[-1], n_train)
        valid_nn = index.search(splits[valid][0], k_max, copy=valid in trained)
        test_nn = index.search(splits[test][0], k_max, copy=test in trained)
        del index, train_x
        self.search_s += time.perf_counter() - t
        ks = sorted({min(k, n_train) for k in self.k_grid})
        n_classes = train_y.shape[1]
        return FoldFit(
            valid={k: self.vote(valid_nn, train_t, n_classes, k) for k in ks},
            test=lambda k: self.vote(test_nn, train_t, n_classes, k),
            details={"n_train": n_train, "k_grid": ks, "k_clipped": self.k_grid[-1] > n_train})

    def vote(self, nn: Neighbours, train_targets: torch.Tensor, n_classes: int,
             k: int) -> np.ndarray:
        """Vote scores as the numpy matrix heareval's score functions take."""
        return vote(nn, train_targets, k, self.weighting, self.temperature, n_classes).numpy()

    def record(self) -> dict[str, Any]:
        return {
            "hparams": {
                "metric": self.metric,
                "weighting": self.weighting,
                "temperature": self.temperature if self.weighting == "similarity" else None,
                "k_grid": list(self.k_grid),
            },
            "device": str(self.device),
            "gemm": self.gemm,
            "threads": torch.get_num_threads(),
            "timing": {"search_s": self.search_s},
        }


def format_table(results: list[dict[str, Any]]) -> str:
    """A plain-text table of run_knn_probe's summaries, one row per task."""
    return probe_table(results, KnnModel.name, KnnModel.param, {
        "metric": lambda doc: str(doc.get("hparams", {}).get("metric", "?")),
        "weighting": lambda doc: str(doc.get("hparams", {}).get("weighting", "?")),
    })

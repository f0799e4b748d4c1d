"""contrastune logistic-probe: a converged linear probe of an embeddings folder, scored like HEAR.

Why beside the linear probe (probes/linear.py, heareval's predictor with no hidden layer, kept
as it is): heareval trains that layer with Adam for a budget of epochs (its fast grid: 10 or
50, in batches of 1024 clips, so tens to a few hundred steps), and it stops short of what a
linear model can do. Measured on 9 task x method cells, a standardised scikit-learn
LogisticRegression at its default C beat it in all 9, by 0.03-0.12. This probe solves the same
convex problem to convergence, so its number is the linear separability of the embeddings and
not an artefact of a training budget.

Per heareval split (its fold roles, probes/protocol.py): the features are standardised with the
train clips' mean and std; for each C of a log grid an L2-regularised logistic regression is fit
on the full train split (multinomial for multiclass; one independent sigmoid per label, one-vs-
rest, for multilabel); C is chosen on the valid clips by the task's primary score; the test
clips are scored at that C with heareval's own score functions, and folds aggregated as heareval
does. The result goes to test.logistic-predicted-scores.json, laid out like the kNN probe's.

The fit itself (its solver, tolerance and C path) is estimators.logistic_fit's, shared with
LP-FT's first stage.
"""

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from hear_contrastune.data.embeddings import EmbeddedTask, open_embedded_task
from hear_contrastune.data.hear_format import Roles
from hear_contrastune.errors import UserError
from hear_contrastune.estimators.logistic_fit import (
    BLAS_THREADS,
    DEFAULT_C_GRID,
    MAX_ITER,
    TOL,
    fit_path,
)
from hear_contrastune.probes.protocol import (
    FoldFit,
    Split,
    cached_probe,
    probe_table,
    probe_task,
)

OUTPUT_NAME = "test.logistic-predicted-scores.json"
PREDICTIONS_NAME = "test.logistic-predictions.npz"  # per-clip test scores (probes.predictions)


def check_c_grid(c_grid: Iterable[float]) -> tuple[float, ...]:
    """Validate the C grid before any file is read; returns it sorted and unique."""
    cs = list(c_grid)
    if not cs or any(isinstance(c, bool) or not isinstance(c, int | float)
                     or not math.isfinite(c) or c <= 0 for c in cs):
        raise UserError(f"--c {cs}: expected one or more numbers > 0")
    return tuple(sorted({float(c) for c in cs}))


def run_logistic_probe(
    task_dirs: Sequence[str | Path],
    c_grid: Iterable[float] = DEFAULT_C_GRID,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Probe every task folder; one summary per task, in order.

    A summary is {"task", "task_dir", "output", "skipped", "result"}, "result" being the JSON
    written (or found, for a task skipped because its output exists for the same embeddings
    and options, its "key", and `force` is off).
    All folders are opened before any work, so a typo fails at once.
    """
    cs = check_c_grid(c_grid)
    tasks = [open_embedded_task(d) for d in task_dirs]
    options = {"c_grid": list(cs), "tol": TOL, "max_iter": MAX_ITER}
    return [cached_probe(task, OUTPUT_NAME, options, force,
                         lambda t=task: probe_task(t, LogisticModel(t, cs)), PREDICTIONS_NAME)
            for task in tasks]


class LogisticModel:
    """The logistic probe's model: one standardised fit per C of the grid, on each fold."""

    name, param = "logistic", "C"

    def __init__(self, task: EmbeddedTask, c_grid: tuple[float, ...]) -> None:
        self.multilabel, self.vocabulary, self.c_grid = task.multilabel, task.vocabulary, c_grid

    def fit(self, splits: dict[str, Split], targets: dict[str, np.ndarray], role: Roles,
            roles: list[Roles]) -> FoldFit:
        train_names, valid, test = role["train"], role["valid"][0], role["test"][0]
        scaler = StandardScaler()  # float64 here, or every fit would make its own copy
        train_x = scaler.fit_transform(
            np.concatenate([splits[n][0] for n in train_names], dtype=np.float64))
        train_y = np.concatenate([targets[n] for n in train_names])
        queries = [scaler.transform(splits[s][0].astype(np.float64)) for s in (valid, test)]
        with threadpool_limits(BLAS_THREADS, user_api="blas"):
            path = fit_path(train_x, train_y, queries, self.c_grid, self.multilabel)
        constant = train_y.min(axis=0) == train_y.max(axis=0)
        return FoldFit(
            valid={c: fit.predictions[0] for c, fit in path.items()},
            test=lambda c: path[c].predictions[1].astype(np.float32),  # as the file keeps it
            details={
                "n_train": len(train_x),
                "constant_labels": [self.vocabulary[j] for j in np.flatnonzero(constant)],
                "iterations": {str(c): fit.iterations for c, fit in path.items()},
                "converged": {str(c): fit.converged for c, fit in path.items()},
            })

    def record(self) -> dict[str, Any]:
        return {
            "hparams": {
                "model": "one-vs-rest" if self.multilabel else "multinomial",
                "solver": "lbfgs",
                "standardised": True,
                "c_grid": list(self.c_grid),
                "tol": TOL,
                "max_iter": MAX_ITER,
            },
            "threads": BLAS_THREADS,
        }


def format_table(results: list[dict[str, Any]]) -> str:
    """A plain-text table of run_logistic_probe's summaries, one row per task."""
    return probe_table(results, LogisticModel.name, LogisticModel.param, {
        "model": lambda doc: str(doc.get("hparams", {}).get("model", "?")),
    })

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
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from hear_contrastune.data.embeddings import EmbeddedTask, open_embedded_task
from hear_contrastune.errors import UserError
from hear_contrastune.estimators.logistic_fit import (
    BLAS_THREADS,
    DEFAULT_C_GRID,
    MAX_ITER,
    TOL,
    fit_path,
)
from hear_contrastune.estimators.valid_choice import choose_on_valid
from hear_contrastune.probes.predictions import Predictions
from hear_contrastune.probes.protocol import (
    aggregate_folds,
    cached_probe,
    check_prediction_type,
    fold_roles,
    kept_predictions,
    label_matrix,
    primary_score,
    read_task_splits,
    score_all,
    score_functions,
    test_score_text,
    text_table,
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
    return [cached_probe(task, OUTPUT_NAME, options, force, lambda t=task: probe_task(t, cs),
                         PREDICTIONS_NAME)
            for task in tasks]


def probe_task(task: EmbeddedTask, c_grid: tuple[float, ...]
               ) -> tuple[dict[str, Any], Predictions]:
    """The whole protocol on one task; returns the document to write and the per-clip test
    predictions (float32, scored as saved)."""
    t0 = time.perf_counter()
    check_prediction_type(task)
    roles = fold_roles(task)
    scores = score_functions(task)  # before reading: an unknown score fails at once
    maximize = bool(scores[0].maximize)
    splits = read_task_splits(task, roles)
    targets = {name: label_matrix(labels, task.vocabulary) for name, (_, labels) in splits.items()}
    t_read = time.perf_counter()
    folds: dict[str, dict[str, Any]] = {}
    details: dict[str, dict[str, Any]] = {}
    kept: list[tuple[str, np.ndarray, np.ndarray]] = []  # (fold, test scores, test targets)
    with threadpool_limits(BLAS_THREADS, user_api="blas"):
        for role in roles:
            fold = "|".join(role["test"])
            train_names, valid, test = role["train"], role["valid"][0], role["test"][0]
            scaler = StandardScaler()  # float64 here, or every fit would make its own copy
            train_x = scaler.fit_transform(
                np.concatenate([splits[n][0] for n in train_names], dtype=np.float64))
            train_y = np.concatenate([targets[n] for n in train_names])
            queries = [scaler.transform(splits[s][0].astype(np.float64)) for s in (valid, test)]
            path = fit_path(train_x, train_y, queries, c_grid, task.multilabel)
            val_scores = {c: primary_score(scores, fit.predictions[0], targets[valid])
                          for c, fit in path.items()}
            best_c = choose_on_valid(val_scores, maximize)  # ties go to the smaller C
            test_pred = path[best_c].predictions[1].astype(np.float32)  # as the file keeps it
            kept.append((fold, test_pred, targets[test]))
            folds[fold] = {
                **score_all(scores, test_pred, targets[test]),
                "validation_score": val_scores[best_c],
                "C": best_c,
            }
            constant = train_y.min(axis=0) == train_y.max(axis=0)
            details[fold] = {
                "train": train_names, "valid": valid, "test": test, "n_train": len(train_x),
                "constant_labels": [task.vocabulary[j] for j in np.flatnonzero(constant)],
                "validation_scores": {str(c): v for c, v in val_scores.items()},
                "iterations": {str(c): fit.iterations for c, fit in path.items()},
                "converged": {str(c): fit.converged for c, fit in path.items()},
            }
    t_end = time.perf_counter()
    doc: dict[str, Any] = dict(folds)
    if len(folds) > 1:
        doc["aggregated_scores"] = aggregate_folds(folds)
    doc.update({
        "hparams": {
            "model": "one-vs-rest" if task.multilabel else "multinomial",
            "solver": "lbfgs",
            "standardised": True,
            "c_grid": list(c_grid),
            "tol": TOL,
            "max_iter": MAX_ITER,
        },
        "postprocessing": [],
        "score_mode": "max" if maximize else "min",
        "primary_score": str(scores[0]),
        "embedding_path": str(task.path),
        "logistic": details,
        "threads": BLAS_THREADS,
        "timing": {"read_s": t_read - t0, "fit_and_score_s": t_end - t_read,
                   "total_s": t_end - t0},
    })
    return doc, kept_predictions(kept, task.vocabulary, str(scores[0]))


def format_table(results: list[dict[str, Any]]) -> str:
    """A plain-text table of run_logistic_probe's summaries, one row per task."""
    header = ("task", "folds", "model", "C", "primary", "test score", "time", "")
    rows = [header]
    for summary in results:
        doc = summary["result"]
        fold_names = list(doc.get("logistic", {}))
        score = test_score_text(doc, fold_names)
        rows.append((
            summary["task"],
            str(len(fold_names)),
            str(doc.get("hparams", {}).get("model", "?")),
            "/".join(f"{doc[f]['C']:g}" for f in fold_names),
            str(doc.get("primary_score", "?")),
            score,
            f"{doc.get('timing', {}).get('total_s', math.nan):.1f}s",
            "(skipped: output exists)" if summary["skipped"] else "",
        ))
    return text_table(rows)

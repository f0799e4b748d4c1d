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

The solver is scikit-learn's LogisticRegression(solver="lbfgs") itself: it is the reference
implementation of exactly this objective (cross-entropy summed over clips + |W|^2 / 2C, the
intercept unpenalised), minimised by scipy's L-BFGS-B until the largest entry of the gradient
(of the loss per clip) is under TOL. Writing the objective again would be more code to trust for
the same optimum. Two settings differ from its defaults, both for convergence: MAX_ITER is far
above what a fit needs, so a fit stops at the tolerance and not at an iteration cap, and a fit
that still does not converge is recorded, not hidden; and TOL
is 1e-6, not 1e-4: at 1e-4, fits at large C stopped early on nearly separable embeddings
(quickstart's gm-program, C = 1000: 14 iterations and valid accuracy 0.574, against 0.609 at 1e-6
and 0.615 at 1e-8), which biased the choice of C towards small values.
"""

import math
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from hear_contrastune.data.embeddings import EmbeddedTask, open_embedded_task
from hear_contrastune.errors import UserError
from hear_contrastune.probes.knn import _choose_k as choose_on_valid
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
DEFAULT_C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3)
TOL = 1e-6
MAX_ITER = 10_000
# One BLAS thread. On a 2-core machine with another process running, OpenBLAS's two threads
# wait on each other: the 3000 x 256, 50-class probe took 397 s with two, 10.5 s with one.
BLAS_THREADS = 1


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


class Fit(NamedTuple):
    """One C's models, applied: a score matrix [n, n_labels] per query set, in vocabulary order
    (heareval's scorers index it so); the most L-BFGS iterations a fit took; whether every fit
    converged; and the models as one linear layer, logits = x @ weight.T + bias ([n_labels, d],
    [n_labels]; softmax for multiclass, sigmoid per label for multilabel), which LP-FT starts
    its classifier from. A label constant in train gets weight 0 and a bias of +-CONSTANT_LOGIT."""

    predictions: list[np.ndarray]
    iterations: int
    converged: bool
    weight: np.ndarray
    bias: np.ndarray


CONSTANT_LOGIT = 20.0  # a label never (or always) seen in train: probability ~2e-9 (or 1 - that)


def fit_path(
    train_x: np.ndarray, train_y: np.ndarray, queries: list[np.ndarray],
    c_grid: tuple[float, ...], multilabel: bool,
) -> dict[float, Fit]:
    """Fit at each C on standardised train features and multi-hot targets. The grid is
    ascending and each fit starts from the last C's solution, which moves smoothly with C: that
    saved a quarter of the time (3000 clips x 2048 dims, 50 classes: 52 s against 71 s). Both
    starts end within TOL of the optimum; the scores they gave differed by at most 0.006, at
    C = 1000 where the optimum is flattest."""
    n_labels = train_y.shape[1]
    # A label whose train column is constant has no boundary to learn: in multilabel, one in no
    # train clip (or in all) is predicted with its train prior, 0 (or 1), in every clip; in
    # multiclass, a class absent from train keeps probability 0 and the others share the rest.
    constant = train_y.min(axis=0) == train_y.max(axis=0)
    if multilabel:  # one-vs-rest: an independent binary model per label, as OneVsRestClassifier
        jobs = [(np.array([j]), train_y[:, j]) for j in np.flatnonzero(~constant)]
    elif constant.all():  # a single class in train: it gets all the probability
        jobs = []
    else:  # multinomial over the classes present in train; classes_ come in index order
        jobs = [(np.flatnonzero(~constant), train_y.argmax(axis=1))]
    models = [LogisticRegression(solver="lbfgs", tol=TOL, max_iter=MAX_ITER, warm_start=True)
              for _ in jobs]
    path = {}
    for c in c_grid:
        outs = [np.zeros((len(q), n_labels)) for q in queries]
        for out in outs:
            out[:, constant] = train_y[0, constant]
        iterations, converged = 0, True
        weight = np.zeros((n_labels, train_x.shape[1]))
        bias = np.where(train_y[0] > 0, CONSTANT_LOGIT, -CONSTANT_LOGIT) * constant
        for model, (columns, target) in zip(models, jobs, strict=True):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                model.set_params(C=c).fit(train_x, target)
            converged &= not any(issubclass(w.category, ConvergenceWarning) for w in caught)
            iterations = max(iterations, int(model.n_iter_.max()))
            coef, intercept = model.coef_, model.intercept_
            if coef.shape[0] == 1 and len(columns) == 2:  # binary: logit of the second class
                coef = np.concatenate([np.zeros_like(coef), coef])
                intercept = np.concatenate([np.zeros_like(intercept), intercept])
            weight[columns], bias[columns] = coef, intercept
            for out, q in zip(outs, queries, strict=True):
                proba = model.predict_proba(q)
                out[:, columns] = proba[:, 1:] if multilabel else proba
        path[c] = Fit(outs, iterations, converged, weight, bias)
    return path


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

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
from hear_contrastune.errors import UserError
from hear_contrastune.estimators.knn_search import (
    DEFAULT_TEMPERATURE,
    METRICS,
    WEIGHTINGS,
    KnnIndex,
    Neighbours,
    resolve_device,
    vote,
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
    if weighting not in WEIGHTINGS:
        raise UserError(f"--weighting {weighting!r}: expected one of {', '.join(WEIGHTINGS)}")
    if not (isinstance(temperature, int | float) and math.isfinite(temperature)
            and temperature > 0):
        raise UserError(f"--temperature {temperature}: must be a number > 0")
    return tuple(sorted(set(ks)))


def run_knn_probe(
    task_dirs: Sequence[str | Path],
    k_grid: Iterable[int] = DEFAULT_K_GRID,
    metric: str = METRICS[0],
    weighting: str = WEIGHTINGS[0],
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
                         lambda t=task: probe_task(t, ks, metric, weighting, temperature, dev),
                         PREDICTIONS_NAME)
            for task in tasks]


def probe_task(
    task: EmbeddedTask,
    k_grid: tuple[int, ...],
    metric: str,
    weighting: str,
    temperature: float,
    device: torch.device,
) -> tuple[dict[str, Any], Predictions]:
    """The whole protocol on one task; returns the document to write and the per-clip test
    predictions."""
    t0 = time.perf_counter()
    check_prediction_type(task)
    roles = fold_roles(task)
    splits = read_task_splits(task, roles)
    queried = {s for role in roles for s in role["valid"] + role["test"]}
    trained = {s for role in roles for s in role["train"]}
    # Multi-hot targets (heareval's format) only where scored: a multiclass train split needs
    # just its class indices, which the votes go by (a scatter-add instead of a gather).
    targets = {name: label_matrix(splits[name][1], task.vocabulary) for name in queried}
    if task.multilabel:
        train_y = {name: label_matrix(splits[name][1], task.vocabulary) for name in trained}
    else:
        index_of = {label: i for i, label in enumerate(task.vocabulary)}
        train_y = {name: np.array([index_of[row[0]] for row in splits[name][1]], np.int64)
                   for name in trained}
    t_read = time.perf_counter()
    scores = score_functions(task)
    maximize = bool(scores[0].maximize)
    n_classes = len(task.vocabulary)
    t_import = time.perf_counter()
    search_s, gemm = 0.0, "mm"
    folds: dict[str, dict[str, Any]] = {}
    details: dict[str, dict[str, Any]] = {}
    kept: list[tuple[str, np.ndarray, np.ndarray]] = []  # (fold, test scores, test targets)
    for role in roles:
        fold = "|".join(role["test"])
        t = time.perf_counter()
        train_names, valid, test = role["train"], role["valid"][0], role["test"][0]
        if len(train_names) == 1:
            train_x, train_t = splits[train_names[0]][0], torch.from_numpy(train_y[train_names[0]])
        else:
            train_x = np.concatenate([splits[n][0] for n in train_names])
            train_t = torch.from_numpy(np.concatenate([train_y[n] for n in train_names]))
        # Arrays this probe read are normalised in place where no other role needs them raw.
        index = KnnIndex(train_x, metric, device, copy=len(train_names) == 1 and
                         train_names[0] in queried)
        n_train, gemm = index.n_train, "onednn" if index.onednn else "mm"
        k_max = min(k_grid[-1], n_train)
        valid_nn = index.search(splits[valid][0], k_max, copy=valid in trained)
        test_nn = index.search(splits[test][0], k_max, copy=test in trained)
        del index, train_x
        search_s += time.perf_counter() - t

        ks = sorted({min(k, n_train) for k in k_grid})
        val_scores = {
            k: primary_score(
                scores, _vote(valid_nn, train_t, n_classes, k, weighting, temperature),
                targets[valid])
            for k in ks
        }
        best_k = choose_on_valid(val_scores, maximize)
        test_pred = _vote(test_nn, train_t, n_classes, best_k, weighting, temperature)
        kept.append((fold, test_pred, targets[test]))
        folds[fold] = {
            **score_all(scores, test_pred, targets[test]),
            "validation_score": val_scores[best_k],
            "k": best_k,
        }
        details[fold] = {
            "train": train_names, "valid": valid, "test": test, "n_train": n_train,
            "k_grid": ks, "k_clipped": k_grid[-1] > n_train,
            "validation_scores": {str(k): v for k, v in val_scores.items()},
        }
    t_end = time.perf_counter()
    doc: dict[str, Any] = dict(folds)
    if len(folds) > 1:
        doc["aggregated_scores"] = aggregate_folds(folds)
    doc.update({
        "hparams": {
            "metric": metric,
            "weighting": weighting,
            "temperature": temperature if weighting == "similarity" else None,
            "k_grid": list(k_grid),
        },
        "postprocessing": [],
        "score_mode": "max" if maximize else "min",
        "primary_score": str(scores[0]),
        "embedding_path": str(task.path),
        "knn": details,
        "device": str(device),
        "gemm": gemm,
        "threads": torch.get_num_threads(),
        "timing": {
            "read_s": t_read - t0,
            "import_scores_s": t_import - t_read,
            "search_s": search_s,
            "vote_and_score_s": t_end - t_import - search_s,
            "total_s": t_end - t0,
        },
    })
    return doc, kept_predictions(kept, task.vocabulary, str(scores[0]))


def _vote(nn: Neighbours, train_targets: torch.Tensor, n_classes: int, k: int, weighting: str,
          temperature: float) -> np.ndarray:
    """Vote scores as the numpy matrix heareval's score functions take."""
    return vote(nn, train_targets, k, weighting, temperature, n_classes).numpy()


def format_table(results: list[dict[str, Any]]) -> str:
    """A plain-text table of run_knn_probe's summaries, one row per task."""
    header = ("task", "folds", "metric", "weighting", "k", "primary", "test score", "time", "")
    rows = [header]
    for summary in results:
        doc = summary["result"]
        fold_names = [f for f in doc.get("knn", {})]
        score = test_score_text(doc, fold_names)
        hp = doc.get("hparams", {})
        rows.append((
            summary["task"],
            str(len(fold_names)),
            str(hp.get("metric", "?")),
            str(hp.get("weighting", "?")),
            "/".join(str(doc[f]["k"]) for f in fold_names),
            str(doc.get("primary_score", "?")),
            score,
            f"{doc.get('timing', {}).get('total_s', math.nan):.1f}s",
            "(skipped: output exists)" if summary["skipped"] else "",
        ))
    return text_table(rows)

"""What the probes share with heareval's evaluator: fold roles, checked splits, scores, aggregation,
and the one protocol every scoring probe runs (`probe_task`).

Matching heareval here is what makes a probe's numbers comparable with HEAR's: the same
train/valid/test roles per fold, heareval's own score functions called on the same
(score matrix, multi-hot target) pair, and its mean/std over folds. heareval.score imports
pandas, scikit-learn, scipy, sed_eval and dcase_util (about a second), so it is imported only
when scores are built.

The protocol, per fold: the probe's model is fit on the train clips over its grid (k for the
kNN probe, C for the logistic one), the grid value is chosen on the valid clips by the task's
primary score (estimators.valid_choice), and the test clips are scored at that value. A probe
module brings only its model (a `ProbeModel`): how it fits a fold and what it records.
"""

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hear_contrastune.atomic import read_json_or_none, write_json
from hear_contrastune.data.embeddings import EmbeddedTask, content_key, read_split
from hear_contrastune.data.hear_format import PREDICTION_TYPES, Roles, fold_roles
from hear_contrastune.errors import UserError
from hear_contrastune.estimators.valid_choice import choose_on_valid
from hear_contrastune.probes.predictions import Predictions, write_predictions

Split = tuple[np.ndarray, list[list[str]]]


def check_prediction_type(task: EmbeddedTask) -> None:
    """Only scene multiclass/multilabel tasks have score matrices to probe."""
    kind = task.metadata["prediction_type"]
    if kind not in PREDICTION_TYPES:
        raise UserError(f"{task.path / 'task_metadata.json'}: prediction_type {kind!r}: "
                        f"expected one of {', '.join(PREDICTION_TYPES)}")


def read_checked_split(task: EmbeddedTask, split: str, dim: int | None = None) -> Split:
    """read_split plus what a probe needs on top: clips, the same width as other splits, and
    exactly one label per clip for multiclass (heareval would die on an assert mid-training)."""
    x, labels = read_split(task, split)
    if len(x) == 0:
        raise UserError(f"{task.path / f'{split}.embedding-dimensions.json'}: split has no clips")
    if dim is not None and x.shape[1] != dim:
        raise UserError(f"{task.path / f'{split}.embedding-dimensions.json'}: "
                        f"{x.shape[1]} dimensions, but other splits have {dim}")
    if not task.multilabel:
        bad = [i for i, row in enumerate(labels) if len(row) != 1]
        if bad:
            raise UserError(
                f"{task.path / f'{split}.target-labels.pkl'}: {len(bad)} of {len(labels)} "
                f"clips (first: row {bad[0]}, {len(labels[bad[0]])} labels) do not have exactly "
                "one label, but the task is multiclass"
            )
    return x, labels


def split_names(roles: list[Roles]) -> list[str]:
    """Every split the roles use, once each, in order of first use."""
    return list(dict.fromkeys(
        split for role in roles for key in ("train", "valid", "test") for split in role[key]
    ))


def read_task_splits(task: EmbeddedTask, roles: list[Roles]) -> dict[str, Split]:
    """Every split the roles use, read once and checked against each other."""
    splits: dict[str, Split] = {}
    dim = None
    for name in split_names(roles):
        splits[name] = read_checked_split(task, name, dim)
        dim = splits[name][0].shape[1]
    return splits


def check_task(task: EmbeddedTask) -> tuple[list[Roles], int]:
    """Fail early, with one line, on anything that would break heareval's predictor midway.

    Returns the roles and the embedding width. Reads one split at a time, so at most one split
    is held in memory.
    """
    check_prediction_type(task)
    roles = fold_roles(task)
    dim = None
    for name in split_names(roles):
        dim = read_checked_split(task, name, dim)[0].shape[1]
    assert dim is not None  # fold_roles always names at least three splits
    return roles, dim


def label_matrix(labels: list[list[str]], vocabulary: list[str]) -> np.ndarray:
    """Multi-hot float32 [n, n_labels] in vocabulary order: heareval's target format."""
    index = {label: i for i, label in enumerate(vocabulary)}
    y = np.zeros((len(labels), len(vocabulary)), dtype=np.float32)
    for row, clip_labels in enumerate(labels):
        y[row, [index[label] for label in clip_labels]] = 1.0
    return y


def score_functions(task: EmbeddedTask) -> list[Any]:
    """heareval's own score objects for metadata["evaluation"]; the first is the primary."""
    meta_file = task.path / "task_metadata.json"
    names = task.metadata.get("evaluation")
    if not isinstance(names, list) or not names:
        raise UserError(f"{meta_file}: 'evaluation' must be a non-empty list of score names")
    return [score_function(name, task.vocabulary, meta_file) for name in names]


def score_function(name: str, vocabulary: list[str], where: Path) -> Any:
    """heareval's score object called `name` for a scene task of this vocabulary; `where` is
    the file that named it, for the error."""
    with warnings.catch_warnings():  # dcase_util's pkg_resources deprecation, on import only
        warnings.simplefilter("ignore")
        from heareval.score import SoundEventScore, available_scores
    if name not in available_scores:
        raise UserError(f"{where}: unknown score {name!r} in 'evaluation' "
                        f"(heareval has {', '.join(available_scores)})")
    score = available_scores[name](label_to_idx={label: i for i, label in enumerate(vocabulary)})
    if isinstance(score, SoundEventScore):
        raise UserError(f"{where}: score {name!r} is for event embeddings, "
                        "not scene embeddings")
    return score


def _value(ret: Any) -> float:
    """A score's headline value: heareval takes the first entry of a tuple-returning score."""
    return float(ret[0][1]) if isinstance(ret, tuple) else float(ret)


def primary_score(scores: list[Any], predictions: np.ndarray, targets: np.ndarray) -> float:
    """The value heareval selects models by (its "val_score")."""
    return _value(scores[0](predictions, targets))


def score_all(
    scores: list[Any], predictions: np.ndarray, targets: np.ndarray, prefix: str = "test"
) -> dict[str, float]:
    """Every score, named as heareval's log_scores names them: `<prefix>_score` is the primary,
    `<prefix>_<name>` each score, `<prefix>_<name>_<sub>` each entry of a tuple score."""
    named: dict[str, float] = {}
    for score in scores:
        ret = score(predictions, targets)
        named[f"{prefix}_{score}"] = _value(ret)
        if isinstance(ret, tuple):
            named.update({f"{prefix}_{score}_{sub}": float(v) for sub, v in ret})
    return {f"{prefix}_score": named[f"{prefix}_{scores[0]}"], **named}


def aggregate_folds(fold_results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """heareval's aggregate_test_results without pandas: for every numeric entry, the mean and
    the sample standard deviation (ddof=1) over folds, NaN skipped as pandas skips it."""
    keys = dict.fromkeys(
        key
        for result in fold_results.values()
        for key, value in result.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    )
    aggregated: dict[str, float] = {}
    for key in keys:
        values = [float(r[key]) for r in fold_results.values() if key in r]
        values = [v for v in values if not math.isnan(v)]
        mean = math.fsum(values) / len(values) if values else math.nan
        std = (
            math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
            if len(values) > 1
            else math.nan
        )
        aggregated[f"{key}_mean"] = mean
        aggregated[f"{key}_std"] = std
    return aggregated


def cached_probe(task: EmbeddedTask, output_name: str, options: dict[str, Any], force: bool,
                 compute: Callable[[], tuple[dict[str, Any], Predictions]],
                 predictions_name: str) -> dict[str, Any]:
    """One task's probe summary {"task", "task_dir", "output", "skipped", "result"}: the result
    at `output_name` when its "key" (the embeddings' hash and `options`) matches, its per-clip
    predictions file `predictions_name` is there, and not `force`; else `compute()`'s, written
    with its key (the predictions first: a result on disk implies its predictions were)."""
    out = task.path / output_name
    key = {"embeddings": content_key(task), **options}
    held = read_json_or_none(out)
    skipped = (not force and isinstance(held, dict) and held.get("key") == key
               and (task.path / predictions_name).is_file())
    if skipped:
        result = held
    else:  # no result, one of other embeddings or options, or no predictions: probe again
        doc, predictions = compute()
        write_predictions(task.path / predictions_name, predictions)
        result = {**doc, "predictions": predictions_name, "key": key}
        write_json(out, result)
    return {"task": task.name, "task_dir": str(task.path), "output": str(out),
            "skipped": skipped, "result": result}


def kept_predictions(kept: list[tuple[str, np.ndarray, np.ndarray]], vocabulary: list[str],
                     primary: str) -> Predictions:
    """A probe's (fold, test scores, test targets) per fold, as a Predictions."""
    return Predictions([f for f, _, _ in kept], list(vocabulary), primary,
                       [s for _, s, _ in kept], [t for _, _, t in kept])


def test_score_text(doc: dict[str, Any], fold_names: list[str]) -> str:
    """A probe result's test score for a table: mean ± std over folds, or the one fold's."""
    if "aggregated_scores" in doc:
        agg = doc["aggregated_scores"]
        return f"{agg['test_score_mean']:.4f} ± {agg['test_score_std']:.4f}"
    return f"{doc[fold_names[0]]['test_score']:.4f}" if fold_names else "?"


def text_table(rows: list[tuple[str, ...]]) -> str:
    """Rows of cells (the first one the header) as left-aligned plain-text columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


@dataclass
class FoldFit:
    """One fold's model over its grid: the valid score matrix at each grid value, the test score
    matrix at a chosen value, and what the result records about the fit."""

    valid: dict[Any, np.ndarray]
    test: Callable[[Any], np.ndarray]
    details: dict[str, Any]


class ProbeModel(Protocol):
    """What a probe brings to `probe_task`."""

    name: str  # the result's key for the per-fold details ("knn", "logistic")
    param: str  # the grid parameter chosen on valid ("k", "C")

    def fit(self, splits: dict[str, Split], targets: dict[str, np.ndarray], role: Roles,
            roles: list[Roles]) -> FoldFit:
        """Fit on role["train"] over the grid; predict role["valid"] and role["test"]. `targets`
        are every split's multi-hot label matrices; `roles` are all folds' (a model may reuse a
        split's array in place only where no other fold reads it)."""
        ...

    def record(self) -> dict[str, Any]:
        """Top-level entries of the result: at least "hparams"; "timing" parts if any."""
        ...


def probe_task(task: EmbeddedTask, model: ProbeModel) -> tuple[dict[str, Any], Predictions]:
    """The protocol on one task: the document to write and the per-clip test predictions."""
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
    for role in roles:
        fold = "|".join(role["test"])
        valid, test = role["valid"][0], role["test"][0]
        fit = model.fit(splits, targets, role, roles)
        val_scores = {value: primary_score(scores, pred, targets[valid])
                      for value, pred in fit.valid.items()}
        best = choose_on_valid(val_scores, maximize)  # ties go to the smaller value
        test_pred = fit.test(best)
        kept.append((fold, test_pred, targets[test]))
        folds[fold] = {**score_all(scores, test_pred, targets[test]),
                       "validation_score": val_scores[best], model.param: best}
        details[fold] = {"train": role["train"], "valid": valid, "test": test, **fit.details,
                         "validation_scores": {str(v): s for v, s in val_scores.items()}}
    t_end = time.perf_counter()
    doc: dict[str, Any] = dict(folds)
    if len(folds) > 1:
        doc["aggregated_scores"] = aggregate_folds(folds)
    record = model.record()
    hparams, timing = record.pop("hparams"), record.pop("timing", {})
    doc.update({
        "hparams": hparams,
        "postprocessing": [],
        "score_mode": "max" if maximize else "min",
        "primary_score": str(scores[0]),
        "embedding_path": str(task.path),
        model.name: details,
        **record,
        "timing": {"read_s": t_read - t0, "fit_and_score_s": t_end - t_read,
                   "total_s": t_end - t0, **timing},
    })
    return doc, kept_predictions(kept, task.vocabulary, str(scores[0]))


def probe_table(results: list[dict[str, Any]], model: str, param: str,
                columns: dict[str, Callable[[dict[str, Any]], str]]) -> str:
    """A plain-text table of a probe's summaries (cached_probe's), one row per task: `columns`
    are the probe's own (header: cell of the result), then the chosen `param` per fold."""
    rows = [("task", "folds", *columns, param, "primary", "test score", "time", "")]
    for summary in results:
        doc = summary["result"]
        fold_names = list(doc.get(model, {}))
        rows.append((
            summary["task"],
            str(len(fold_names)),
            *(cell(doc) for cell in columns.values()),
            "/".join(f"{doc[f][param]:g}" for f in fold_names),
            str(doc.get("primary_score", "?")),
            test_score_text(doc, fold_names),
            f"{doc.get('timing', {}).get('total_s', math.nan):.1f}s",
            "(skipped: output exists)" if summary["skipped"] else "",
        ))
    return text_table(rows)

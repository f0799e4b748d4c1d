"""results.json: one record per (task, shots, method, seed, fold, probe), written by `compare`,
read by the report and the summary table. A k-fold task's score is the mean over its folds, as
heareval reports it (`task_scores`); a record of a train/valid/test task has fold "" and
n_folds 0. A record keeps the probe's valid score (what chooses among baselines) and the path,
relative to the run folder, of its per-clip test predictions (what the paired intervals are
recomputed from)."""

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hear_contrastune.atomic import write_json
from hear_contrastune.data.shots import ALL_SHOTS
from hear_contrastune.errors import UserError


@dataclass(frozen=True)
class Record:
    """A probe's primary test score for one (task, method, seed)."""

    task: str
    method: str
    seed: int
    probe: str
    metric: str
    score: float
    fold: str = ""
    n_folds: int = 0  # the task's folds (0: train/valid/test), to tell a subset of folds
    shots: int = ALL_SHOTS  # train clips per class the run had (ALL_SHOTS: all of them)
    valid_score: float = math.nan  # the probe's primary score on valid, where it has one
    predictions: str = ""  # per-clip test predictions (.npz), relative to the run folder


@dataclass(frozen=True)
class ResultsFile:
    """What results.json holds besides its records: the options the run was asked for ({} in
    a file written before they were recorded), each task's content key (comparison.reuse), and
    whether the compare that wrote it finished (it is rewritten after every finished stage)."""

    records: list[Record]
    options: dict[str, Any]
    task_keys: dict[str, str]
    finished: bool


def write_results(path: Path, results: ResultsFile) -> None:
    """Write {"finished", "options", "task_keys", "records": [...]}, atomically."""
    rows = [{**asdict(r), "valid_score": r.valid_score if math.isfinite(r.valid_score)
             else None} for r in results.records]  # JSON has no NaN: null, read as math.nan
    write_json(path, {"finished": results.finished, "options": results.options,
                      "task_keys": results.task_keys, "records": rows})


def read_results(path: Path) -> ResultsFile:
    """results.json; a malformed file is a one-line UserError (it is the report's main input,
    and a silent skip would make a wrong table). A bare list of records (written before
    results.json recorded the options) is read too, as a finished run's."""
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    doc = raw if isinstance(raw, dict) else {"records": raw}
    options, keys = doc.get("options", {}), doc.get("task_keys", {})
    return ResultsFile(parse_records(path, doc.get("records")),
                       options if isinstance(options, dict) else {},
                       {str(k): str(v) for k, v in keys.items()} if isinstance(keys, dict)
                       else {},
                       doc.get("finished", True) is True)


def load_results(path: Path) -> list[Record]:
    """results.json's records."""
    return read_results(path).records


def parse_records(path: Path, raw: Any) -> list[Record]:
    """The records of results.json at `path`, each checked, none twice."""
    if not isinstance(raw, list):
        raise UserError(f"{path}: expected a JSON list of records")
    records, seen = [], set()
    for i, r in enumerate(raw):
        try:
            score = math.nan if r["score"] is None else float(r["score"])
            valid = r.get("valid_score")
            rec = Record(str(r["task"]), str(r["method"]), int(r["seed"]), str(r["probe"]),
                         str(r["metric"]), score, str(r.get("fold", "")),
                         int(r.get("n_folds", 0)), int(r.get("shots", 0)),
                         math.nan if valid is None or math.isnan(float(valid))
                         else float(valid),
                         str(r.get("predictions", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path}: record {i} is not {{task, method, seed, probe, metric, "
                            f"score}} ({type(e).__name__}: {e})") from None
        key = (rec.task, rec.shots, rec.method, rec.seed, rec.fold, rec.probe)
        if key in seen:
            raise UserError(f"{path}: two records for task {rec.task!r}, shots {rec.shots}, "
                            f"method {rec.method!r}, seed {rec.seed}, fold {rec.fold!r}, "
                            f"probe {rec.probe!r}")
        seen.add(key)
        records.append(rec)
    return records


def task_scores(records: list[Record]) -> list[Record]:
    """One record per (task, shots, method, seed, probe): a k-fold task's folds averaged
    (fold "" then, and no predictions file; `fold_coverage` says which folds went in)."""
    groups: dict[tuple[str, int, str, int, str], list[Record]] = {}
    for r in records:
        groups.setdefault((r.task, r.shots, r.method, r.seed, r.probe), []).append(r)
    out = []
    for (task, shots, method, seed, probe), recs in groups.items():
        score = math.fsum(r.score for r in recs) / len(recs)
        valid = math.fsum(r.valid_score for r in recs) / len(recs)
        out.append(Record(task, method, seed, probe, recs[0].metric, score, "",
                          recs[0].n_folds, shots, valid))
    return out


def fold_coverage(records: list[Record]) -> dict[str, str]:
    """task -> what its k-fold scores cover, e.g. "mean over 5 folds" or "folds fold00, fold01
    of 5: a subset, not the task's score"; train/valid/test tasks are left out."""
    out = {}
    for task in sorted({r.task for r in records if r.n_folds}):
        recs = [r for r in records if r.task == task]
        folds = sorted({r.fold for r in recs})
        n = max(r.n_folds for r in recs)
        out[task] = (f"mean over {n} folds" if len(folds) == n else
                     f"folds {', '.join(folds)} of {n}: a subset, not the task's score")
    return out

"""What the report reads from a comparison run folder (comparison.run_layout), or from several
(`contrastune report`), and what it could not read: a partial run still gets a report, with
what is missing listed under "Notes"."""

import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from hear_contrastune.comparison.options import SELECTION, first_difference, result_options
from hear_contrastune.comparison.results import Record, ResultsFile, read_results
from hear_contrastune.comparison.run_layout import (
    FOLDS_DIR,
    MODELS_DIR,
    RESULTS_FILE,
    embeddings_root,
    method_key,
    parse_run_label,
    score_key,
)
from hear_contrastune.data.embeddings import EmbeddedTask, open_embedded_task, read_split
from hear_contrastune.data.hear_format import is_hear_folder
from hear_contrastune.errors import UserError
from hear_contrastune.probes.protocol import label_matrix
from hear_contrastune.training.run_log import read_csv

# The pairwise measures and the scatter plots are O(n^2) / cluttered beyond this many clips; a
# fixed random sample of the test clips (the same clips for every method) stands in for them.
MAX_POINTS = 2000


@dataclass(frozen=True)
class RunFolder:
    """One (task, method, seed[, fold]) folder: probed embeddings or a tuning run."""

    task: str
    method: str
    seed: int
    fold: str
    path: Path
    task_folder: str  # the task's folder name in the run (results.json uses `task`)


@dataclass
class ReportInput:
    """Everything the report reads from one run folder or several (`sources`), and what it
    could not read. `path` is where the report goes: the run folder itself, or a merged
    report's folder; records' predictions paths are relative to it."""

    path: Path
    records: list[Record]
    embeddings: list[RunFolder]
    models: list[RunFolder]
    notes: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)  # what compare was asked for
    sources: list[Path] = field(default_factory=list)  # the compare run folders read
    runs: list[str] = field(default_factory=list)  # a merged report: what each source holds

    def show(self, path: Path) -> str:
        """A path as the report's notes name it: relative to the report's folder."""
        return os.path.relpath(path, self.path)


def find_embeddings(run_dir: Path) -> list[RunFolder]:
    """Every probed embeddings folder: embeddings/<label>/<task>/ of a train/valid/test task,
    folds/<label>/<task>/<fold>/ of a k-fold one (whose whole embeddings are probed fold by
    fold); keyed by the task's name in its metadata (the name results.json uses)."""
    found = []
    for root, per_fold in ((embeddings_root(run_dir), False), (run_dir / FOLDS_DIR, True)):
        for label_dir in sorted(root.iterdir()) if root.is_dir() else []:
            label = parse_run_label(label_dir.name)
            if not (label and label_dir.is_dir()) or label.shots:  # few-shot runs: scores only
                continue
            method, seed = label.method, label.seed
            for task_dir in sorted(p for p in label_dir.iterdir() if p.is_dir()):
                for folder in sorted(task_dir.iterdir()) if per_fold else [task_dir]:
                    if not is_hear_folder(folder):
                        continue
                    name, kfold = task_dir.name, False
                    try:
                        task = open_embedded_task(folder)
                        name, kfold = task.name, task.kfold
                    except UserError:
                        pass  # reported when its embeddings are read
                    if not kfold:
                        found.append(RunFolder(name, method, seed, folder.name if per_fold
                                               else "", folder, task_dir.name))
    return found


def find_models(root: Path, task_names: dict[str, str]) -> list[RunFolder]:
    """models/<task folder>/<label>/ holding an epochs.csv; `task_names` maps a task folder's
    name to its metadata name where the embeddings tell it."""
    found = []
    for task_dir in sorted(root.iterdir()) if root.is_dir() else []:
        for run_dir in sorted(task_dir.iterdir()) if task_dir.is_dir() else []:
            label = parse_run_label(run_dir.name)
            if label and not label.shots and (run_dir / "epochs.csv").is_file():
                name = task_names.get(task_dir.name, task_dir.name)
                found.append(RunFolder(name, label.method, label.seed, label.fold, run_dir,
                                       task_dir.name))
    return found


def load_run(run_dir: Path) -> ReportInput:
    """Find everything the report can use under `run_dir`."""
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a directory")
    notes = []
    results = run_dir / RESULTS_FILE
    held = read_results(results) if results.is_file() else ResultsFile([], {}, {}, True)
    if not held.records:
        notes.append("results.json is missing or empty: no probe scores to show.")
    embeddings = find_embeddings(run_dir)
    task_names = {e.task_folder: e.task for e in embeddings}
    models = find_models(run_dir / MODELS_DIR, task_names)
    return ReportInput(run_dir, held.records, embeddings, models, notes, held.options, [run_dir])


def finished_results(run_dir: Path) -> ResultsFile:
    """A run folder's results.json, which a merged report takes only from a finished compare
    that recorded its options (without them, nothing says whether its results may be mixed)."""
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        raise UserError(f"{run_dir}: no {RESULTS_FILE}; not a compare run folder")
    held = read_results(path)
    if not held.finished:
        raise UserError(f"{path}: its compare has not finished; rerun the same compare to "
                        "finish it first")
    if not held.options:
        raise UserError(f"{path}: records no options (an older compare); cannot tell whether "
                        "its results may be merged")
    return held


def merge_runs(run_dirs: list[Path], out: Path) -> ReportInput:
    """The input of one report on several finished compare runs, in `out`. Refused, in one line:
    runs whose options differ in one that changes results (comparison.options), a task whose
    content differs between runs, a record two runs hold with different scores (the same
    record, e.g. the frozen encoder's in two runs of one task, is taken once), and a record
    whose predictions file is missing (the verdict needs every one)."""
    for i, d in enumerate(run_dirs):
        if any(d.resolve() == e.resolve() for e in run_dirs[:i]):
            raise UserError(f"{d}: given twice")
    held = [finished_results(d) for d in run_dirs]
    for d, h in zip(run_dirs[1:], held[1:], strict=True):
        diff = first_difference(held[0].options, h.options)
        if diff:
            raise UserError(f"{d}: ran with other options than {run_dirs[0]}: {diff}; only "
                            f"runs that differ in {', '.join(SELECTION)} can be merged")
    keys: dict[str, tuple[str, Path]] = {}
    chosen: dict[tuple[str, int, str, int, str, str], tuple[Record, int]] = {}
    records, embeddings, models, runs = [], [], [], []
    for i, (d, h) in enumerate(zip(run_dirs, held, strict=True)):
        for task, key in h.task_keys.items():
            if keys.setdefault(task, (key, d))[0] != key:
                raise UserError(f"{d}: task {task!r} has other contents than in "
                                f"{keys[task][1]}; their results cannot be merged")
        for r in h.records:
            first, j = chosen.setdefault((r.task, r.shots, r.method, r.seed, r.fold, r.probe),
                                         (r, i))
            if j != i:
                if not (same(first.score, r.score) and same(first.valid_score, r.valid_score)):
                    raise UserError(f"{d}: task {r.task!r}, method {r.method!r}, seed "
                                    f"{r.seed}, fold {r.fold!r}, shots {r.shots}, probe "
                                    f"{r.probe!r} scored otherwise in {run_dirs[j]}")
                continue
            if r.predictions and not (d / r.predictions).is_file():
                raise UserError(f"{d / r.predictions}: missing, the predictions of task "
                                f"{r.task!r}, method {r.method!r}, seed {r.seed}, probe "
                                f"{r.probe!r}; copy the run's *.npz files with its results.json")
            records.append(r if not r.predictions else replace(
                r, predictions=os.path.relpath((d / r.predictions).resolve(), out.resolve())))
        found = find_embeddings(d)
        embeddings += found
        models += find_models(d / MODELS_DIR, {e.task_folder: e.task for e in found})
        runs.append(f"{d}: {selection_text(h.records)}")
    return ReportInput(out, records, embeddings, models, [], result_options(held[0].options),
               list(run_dirs), runs)


def same(a: float, b: float) -> bool:
    """Two scores are the same result (NaN, no score, equals NaN)."""
    return a == b or (math.isnan(a) and math.isnan(b))


def selection_text(records: list[Record]) -> str:
    """Which tasks, methods, seeds and probes a run's records cover, for a merged report."""
    def listed(values: set) -> str:
        return ", ".join(map(str, sorted(values))) or "none"

    methods = sorted({r.method for r in records}, key=method_key)
    return (f"tasks {listed({r.task for r in records})}; methods {', '.join(methods)}; "
            f"seeds {listed({r.seed for r in records})}; "
            f"probes {', '.join(sorted({r.probe for r in records}, key=score_key))}")


def test_points(task: EmbeddedTask) -> tuple[np.ndarray, np.ndarray, int]:
    """The test clips' embeddings [n, d] and multi-hot labels [n, n_labels], at most MAX_POINTS
    of them, and the number of clips there were. A k-fold task's folds are pooled (each clip is
    a test clip in one fold). The sample depends only on the clip count, so every method gets
    the same clips."""
    names = ["test"] if "test" in task.splits else sorted(task.splits)
    if not names:
        raise UserError(f"{task.metadata_file}: lists no splits")
    parts = [read_split(task, name) for name in names]
    x = np.concatenate([p[0] for p in parts])
    y = label_matrix([row for p in parts for row in p[1]], task.vocabulary)
    n = len(x)
    if n > MAX_POINTS:
        keep = np.sort(np.random.default_rng(0).choice(n, MAX_POINTS, replace=False))
        x, y = x[keep], y[keep]
    return x, y, n


def knn_curve(path: Path) -> tuple[str, dict[int, float]]:
    """The kNN probe's primary score name and its validation score per k, averaged over folds
    (over the k every fold tried: a small fold clips the grid)."""
    doc = json.loads(path.read_text())
    folds = [d["validation_scores"] for d in doc["knn"].values()]
    ks = sorted(set.intersection(*(set(map(int, f)) for f in folds)))
    return str(doc["primary_score"]), {
        k: float(np.mean([f[str(k)] for f in folds])) for k in ks
    }


@dataclass
class TrainingLog:
    """One tuning run's epochs.csv and steps.csv (each with an epoch column; steps is an empty
    dict where steps.csv is absent or empty)."""

    seed: int
    fold: str
    epochs: dict[str, np.ndarray]
    steps: dict[str, np.ndarray]

    @property
    def name(self) -> str:
        return f"seed {self.seed}" + (f" {self.fold}" if self.fold else "")

    @property
    def valid_columns(self) -> list[str]:
        """The validation scores logged: valid_knn (what selects the epoch) first, then e.g.
        valid_head, the fine-tuned classifier's own score."""
        return [c for c in self.epochs if c.startswith("valid")]

    @property
    def valid_column(self) -> str | None:
        """The validation score that selects the epoch."""
        return next(iter(self.valid_columns), None)


def load_training(run: ReportInput) -> dict[str, dict[str, list[TrainingLog]]]:
    """task -> method -> one log per seed (and fold, for a k-fold task)."""
    logs: dict[str, dict[str, list[TrainingLog]]] = defaultdict(dict)
    for folder in sorted(run.models, key=lambda f: (f.task, method_key(f.method), f.seed,
                                                     f.fold)):
        epochs = read_csv(folder.path / "epochs.csv")
        if "epoch" not in epochs:
            run.notes.append(f"no epochs logged in {run.show(folder.path)}")
            continue
        steps_file = folder.path / "steps.csv"
        steps = read_csv(steps_file) if steps_file.is_file() else {}
        log = TrainingLog(folder.seed, folder.fold, epochs, steps if "epoch" in steps else {})
        logs[folder.task].setdefault(folder.method, []).append(log)
    return dict(logs)

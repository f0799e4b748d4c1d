"""The report's tables: probe scores per method and task, geometry, training; cells of
"mean ± std" over seeds with the best in each column marked."""

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from hear_contrastune.comparison.report.geometry import MEASURES, TaskEmbeddings
from hear_contrastune.comparison.report.load import TrainingLog
from hear_contrastune.comparison.results import Record, fold_coverage, task_scores
from hear_contrastune.comparison.run_layout import SHORT_TITLES, TITLES, method_key, score_key
from hear_contrastune.data.shots import ALL_SHOTS

DECIMALS = 3


@dataclass(frozen=True)
class Cell:
    text: str
    value: float | None = None  # compared for "best in column" (the shown, rounded mean)


def stat_cell(values: Iterable[float | None], decimals: int = DECIMALS) -> Cell:
    """"mean ± std" (sample std, ddof = 1, as heareval aggregates folds) over the finite
    values; just the mean for one value; "–" for none."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return Cell("–")
    mean = math.fsum(vals) / len(vals)
    text = f"{mean:.{decimals}f}"
    if len(vals) > 1:
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
        text += f" ± {std:.{decimals}f}"
    return Cell(text, round(mean, decimals))


@dataclass
class Table:
    """Header, rows of cells and, per column, whether higher is better (True), lower (False),
    or neither (None: nothing is bold). The first `names` columns name the row (left-aligned)."""

    header: list[str]
    rows: list[list[Cell]]
    higher_is_better: list[bool | None]
    names: int = 1

    def bold(self) -> set[tuple[int, int]]:
        """(row, column) of the best cells of each ranked column; ties are all bold."""
        out = set()
        for c, higher in enumerate(self.higher_is_better):
            vals = [(r, row[c].value) for r, row in enumerate(self.rows)
                    if row[c].value is not None]
            if higher is None or len(vals) < 2:
                continue
            best = (max if higher else min)(v for _, v in vals)
            out |= {(r, c) for r, v in vals if v == best}
        return out


def results_tables(records: list[Record]) -> list[tuple[str, Table, str]]:
    """One table per probe: rows = methods, columns = tasks and the mean over the tasks every
    method of the table has; a k-fold task's score is its fold mean, and its column says which
    folds it covers. Returns (title, table, footnote)."""
    coverage = fold_coverage(records)
    records = task_scores(records)
    out = []
    for probe in sorted({r.probe for r in records}, key=score_key):
        recs = [r for r in records if r.probe == probe]
        tasks = sorted({r.task for r in recs})
        methods = sorted({r.method for r in recs}, key=method_key)
        scores: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
        metrics: dict[str, list[str]] = defaultdict(list)
        for r in recs:
            scores[r.method, r.task][r.seed] = r.score
            if r.metric not in metrics[r.task]:
                metrics[r.task].append(r.metric)
        shared = [t for t in tasks if all((m, t) in scores for m in methods)]
        header = ["method", *(f"{t} ({'/'.join(metrics[t])}"
                              + (f"; {coverage[t]})" if t in coverage else ")") for t in tasks),
                  f"mean over {len(shared)} task{'s' * (len(shared) != 1)}"]
        rows = [[Cell(m), *(stat_cell(scores[m, t].values()) if (m, t) in scores else Cell("–")
                             for t in tasks), mean_over_tasks(scores, m, shared)]
                for m in methods]
        note = "" if len(shared) == len(tasks) else (
            "The mean leaves out " + ", ".join(t for t in tasks if t not in shared)
            + ", which not every method has.")
        out.append((TITLES.get(probe, probe), Table(header, rows, [None] + [True] * (
            len(tasks) + 1)), note))
    return out


def mean_over_tasks(scores: dict[tuple[str, str], dict[int, float]], method: str,
                    tasks: Sequence[str]) -> Cell:
    """The mean over `tasks`; ± the std over seeds of the per-seed task means when every task
    has the same seeds (otherwise the mean of the task means alone)."""
    if not tasks:
        return Cell("–")
    per_task = [scores[method, t] for t in tasks]
    seeds = set(per_task[0])
    if all(set(s) == seeds for s in per_task):
        return stat_cell(math.fsum(s[seed] for s in per_task) / len(tasks) for seed in seeds)
    task_means = [stat_cell(s.values()).value for s in per_task]
    if any(v is None for v in task_means):
        return Cell("–")
    mean = math.fsum(task_means) / len(task_means)
    return Cell(f"{mean:.{DECIMALS}f}", round(mean, DECIMALS))


def geometry_table(summary: TaskEmbeddings) -> Table:
    """Rows = methods, columns = the measures (mean ± std over seeds)."""
    rows = [[Cell(m), *(stat_cell(g[measure.key] for g in per_seed) for measure in MEASURES)]
            for m, per_seed in summary.geometry.items()]
    return Table(["method", *(m.title for m in MEASURES)], rows,
                 [None, *(m.higher_is_better for m in MEASURES)])


def training_table(logs: dict[str, dict[str, list[TrainingLog]]]) -> Table:
    """Per (task, method): epochs, best validation score, time and throughput, over its runs
    (seeds, and folds of a k-fold task)."""
    rows = []
    for task, by_method in sorted(logs.items()):
        for method, runs in by_method.items():
            valid_names = sorted({r.valid_column for r in runs if r.valid_column})
            best = [float(np.nanmax(r.epochs[r.valid_column])) for r in runs
                    if r.valid_column and np.isfinite(r.epochs[r.valid_column]).any()]
            minutes = [float(np.nansum(r.epochs["seconds"])) / 60 for r in runs
                       if "seconds" in r.epochs]
            rows.append([Cell(task), Cell(method), Cell(", ".join(valid_names) or "–"),
                         Cell(str(len(runs))),
                         Cell(str(max(int(np.nanmax(r.epochs["epoch"])) for r in runs))),
                         stat_cell(best), stat_cell(minutes, 1),
                         stat_cell((epoch_throughput(r) for r in runs), 0)])
    header = ["task", "method", "validation column", "runs", "epochs", "best validation",
              "minutes per run", "clips/s"]
    return Table(header, rows, [None] * len(header), names=3)


def epoch_throughput(log: TrainingLog) -> float | None:
    """Median over epochs of clips/s at each epoch's last step (tune logs a running mean)."""
    if "clips_per_s" not in log.steps:
        return None
    epochs, rate = log.steps["epoch"], log.steps["clips_per_s"]
    last = np.r_[epochs[1:] != epochs[:-1], True]
    finite = rate[last][np.isfinite(rate[last])]
    return float(np.median(finite)) if len(finite) else None


def summary_table(records: list[Record]) -> str:
    """Markdown: one row per (task, method), one column per probe, the primary test score as
    mean ± std over seeds, for runs on all train clips. What `compare` and `quickstart`
    print."""
    records = [r for r in records if r.shots == ALL_SHOTS]
    coverage = fold_coverage(records)
    records = task_scores(records)
    probes = sorted({r.probe for r in records}, key=score_key)
    lines = ["| task (metric) | method | "
             + " | ".join(SHORT_TITLES.get(p, p) for p in probes) + " |",
             "|---|---|" + "---:|" * len(probes)]
    for task in sorted({r.task for r in records}):
        recs = [r for r in records if r.task == task]
        metric = "/".join(dict.fromkeys(r.metric for r in recs))
        if task in coverage:
            metric += f"; {coverage[task]}"
        for method in sorted({r.method for r in recs}, key=method_key):
            cells = [stat_cell(r.score for r in recs if (r.method, r.probe) == (method, p)).text
                     for p in probes]
            lines.append(f"| {task} ({metric}) | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fold_table(records: list[Record]) -> Table | None:
    """k-fold tasks: each fold's score (mean over seeds) per (task, method, probe), and their
    mean ± std over folds: how much the task's score depends on the fold; None without any."""
    kfold = [r for r in records if r.n_folds]
    if not kfold:
        return None
    folds = sorted({r.fold for r in kfold})
    rows = []
    for task in sorted({r.task for r in kfold}):
        recs = [r for r in kfold if r.task == task]
        for method in sorted({r.method for r in recs}, key=method_key):
            for probe in sorted({r.probe for r in recs if r.method == method}, key=score_key):
                per_fold = {f: [r.score for r in recs
                                if (r.method, r.probe, r.fold) == (method, probe, f)]
                            for f in folds}
                means = {f: math.fsum(v) / len(v) for f, v in per_fold.items() if v}
                rows.append([Cell(task), Cell(method), Cell(SHORT_TITLES.get(probe, probe)),
                             *(stat_cell([means[f]]) if f in means else Cell("–")
                               for f in folds),
                             stat_cell(means.values())])
    header = ["task", "method", "probe", *folds, "mean ± std over folds"]
    return Table(header, rows, [None] * len(header), names=3)

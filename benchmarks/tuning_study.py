"""The tuning study, on valid splits only: `contrastune search` for every tuned method on every
task of the eval_tasks suite, with the same budget each, and the defaults it points to.

Each (task, method) gets `--trials` trials of the same search (hear_contrastune.search: seeded
TPE, successive-halving pruning on each epoch's valid score, the same space and seed for every
method). k-fold tasks are searched on one fold's roles (fold00: valid fold01, train the rest).
No test split is read. A task is one chunk: its searches run one after another, then their
small outputs (search.json, study.journal, trials.csv, best.json, search.png; never the trial
folders, which hold checkpoints) are copied to KEEP/<task>/<method>/ for committing, and
KEEP/summary.md is rewritten from every finished task:

- per task and method: the best valid score, the trials (pruned), the epochs trained, the
  minutes, and the configuration;
- per method, the suggested default of each parameter: the median over tasks of each task's
  best value (the geometric median's stand-in, the median of the logs, for log-scale
  parameters; the most frequent choice for categorical ones). Each task's best configuration is
  a noisy estimate; the median across tasks is what holds up on several at once.

    python benchmarks/tuning_study.py --out runs/tuning-study --keep docs/tuning-study
    python benchmarks/tuning_study.py --out /tmp/ts --keep /tmp/ts-keep --size small \\
        --epochs 2 --trials 3 --tasks gm-program                          # a minute or two

Resumable: the searches live in OUT/search/<task>/<method>/ and resume where they stopped;
a task whose KEEP folder is complete (best.json of every method, for this many trials) is
skipped.
"""

import json
import logging
import math
import shutil
import statistics
from pathlib import Path

import click

import eval_tasks
from hear_contrastune.atomic import write_text
from hear_contrastune.data.loading import DEFAULT_WORKERS
from hear_contrastune.data.task import load_task
from hear_contrastune.search import Search, run_search
from hear_contrastune.training.config import DEFAULTS, TUNED_METHODS, TuneConfig
from hear_contrastune.training.search_space import SPACE

KEPT_FILES = ("search.json", "study.journal", "trials.csv", "best.json", "search.png")


def study_task(name: str, out: Path, keep: Path, size: str, epochs: int, trials: int,
               methods: tuple[str, ...], device: str | None) -> None:
    """One chunk: every method's search on one task, then its small outputs copied to keep."""
    task_dir = eval_tasks.build(name, out / "tasks", size=size)
    task = load_task(task_dir)
    fold = sorted(task.splits)[0] if task.kfold else ""
    for method in methods:
        if done(keep / name / method, trials):
            continue
        # every epoch scored, as when the study began (before --select-every): one pruner
        # schedule and one selection for every chunk
        base = TuneConfig(task_dir=str(task_dir), fold=fold, method=method, epochs=epochs,
                          select_every=1)
        search_out = out / "search" / name / method
        run_search(Search(base, {}, search_out, trials), device, DEFAULT_WORKERS,
                   say=lambda line, m=method: click.echo(f"[{name} / {m}] {line}"))
        target = keep / name / method
        target.mkdir(parents=True, exist_ok=True)
        for file in KEPT_FILES:
            if (search_out / file).is_file():
                shutil.copyfile(search_out / file, target / file)


def done(folder: Path, trials: int) -> bool:
    """Whether a (task, method) search is kept, with this many trials."""
    best = folder / "best.json"
    return best.is_file() and json.loads(best.read_text())["budget"]["trials"] >= trials


def summary(keep: Path, methods: tuple[str, ...]) -> str:
    """The study's table and the defaults it suggests, from every kept best.json."""
    bests = {(p.parent.parent.name, p.parent.name): json.loads(p.read_text())
             for p in sorted(keep.glob("*/*/best.json"))}
    lines = ["# Tuning study (valid splits only)", "",
             "| task | method | best valid | trials (pruned) | epochs trained | minutes | "
             "configuration |", "|---|---|---:|---:|---:|---:|---|"]
    minutes = 0.0
    for (task, method), doc in bests.items():
        b = doc["budget"]
        minutes += b["seconds"] / 60
        params = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in doc["params"].items())
        lines.append(f"| {task} | {method} | {doc['valid_score']:.3f} | {b['trials']} "
                     f"({b['pruned']}) | {b['epochs_trained']} | {b['seconds'] / 60:.1f} | "
                     f"{params} |")
    lines += ["", f"Trial time in all: {minutes / 60:.2f} h.", "",
              "## Suggested defaults (median over tasks of each task's best)", ""]
    for method in methods:
        docs = [d for (_, m), d in bests.items() if m == method]
        if not docs:
            continue
        lines.append(f"- {method} ({len(docs)} tasks): " + ", ".join(
            f"{p.name} {median(p, [d['params'][p.name] for d in docs if p.name in d['params']])}"
            for p in SPACE if any(p.name in d["params"] for d in docs)))
    return "\n".join(lines) + "\n"


def median(param, values: list) -> str:
    """The median of a parameter's per-task best values, on its own scale."""
    if param.choices:
        return str(statistics.mode(values))
    if param.log:
        return f"{math.exp(statistics.median(math.log(v) for v in values)):.3g}"
    return f"{statistics.median(values):.3g}"


@click.command()
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Working folder: tasks and searches (checkpoints: do not commit).")
@click.option("--keep", required=True, type=click.Path(path_type=Path),
              help="Where each finished task's small outputs and summary.md go (commit these).")
@click.option("--tasks", default=",".join(eval_tasks.TASKS), show_default=True)
@click.option("--methods", default=",".join(TUNED_METHODS), show_default=True)
@click.option("--size", default="full", show_default=True, type=click.Choice(["small", "full"]))
@click.option("--epochs", default=DEFAULTS.epochs, show_default=True, type=int)
@click.option("--trials", default=12, show_default=True, type=int)
@click.option("--device", default=None)
def main(out: Path, keep: Path, tasks: str, methods: str, size: str, epochs: int, trials: int,
         device: str | None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    chosen = tuple(m for m in methods.split(",") if m)
    for name in (t for t in tasks.split(",") if t):
        study_task(name, out, keep, size, epochs, trials, chosen, device)
        write_text(keep / "summary.md", summary(keep, chosen))
        click.echo(f"{name}: kept in {keep / name}")
    click.echo((keep / "summary.md").read_text())


if __name__ == "__main__":
    main()

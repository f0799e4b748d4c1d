"""The tuning study, on valid splits only: `contrastune search` for every tuned method on every
task of the eval_tasks suite, with the same budget each, and the defaults it points to.

Each (task, method) gets `--trials` trials of the same search (hear_contrastune.search: seeded
TPE, successive-halving pruning on each epoch's valid score, the same space and seed for every
method). k-fold tasks are searched on one fold's roles (fold00: valid fold01, train the rest).
No test split is read. A task is one chunk: its searches run one after another. After every
trial their small outputs (search.json, study.journal, trials.csv, curves.csv, best.json,
search.png; never the trial folders, which hold checkpoints) are copied to
KEEP/<task>/<method>/ for committing, and a search whose OUT folder is gone (a new machine, a
fresh checkout) starts again from the journal kept there: its finished trials stand, a trial
that was running trains again. After each task KEEP/summary.md is rewritten from every
finished search:

- per task and method: the best valid score, the trials (pruned), the epochs trained, the
  minutes, and the configuration;
- per method, the suggested default of each parameter: the median over tasks of each task's
  best value (the geometric median's stand-in, the median of the logs, for log-scale
  parameters; the most frequent choice for categorical ones). Each task's best configuration is
  a noisy estimate; the median across tasks is what holds up on several at once.

    python benchmarks/tuning_study.py --out runs/tuning-study --keep docs/tuning-study
    python benchmarks/tuning_study.py --out /tmp/ts --keep /tmp/ts-keep --size small \\
        --epochs 2 --trials 3 --tasks gm-program                          # a minute or two

Resumable: the searches live in OUT/search/<task>/<method>/ and resume where they stopped (or
from KEEP's journal, above); a search whose KEEP folder is complete (best.json for this many
trials) is skipped. Two processes running the same command share the searches' trials.
"""

import csv
import json
import logging
import math
import statistics
from pathlib import Path

import click

import eval_tasks
from hear_contrastune.atomic import write_bytes, write_text
from hear_contrastune.data.loading import DEFAULT_WORKERS
from hear_contrastune.data.task import load_task
from hear_contrastune.lock import exclusive
from hear_contrastune.search import (
    ASK_LOCK,
    FINISHED,
    JOURNAL_FILE,
    SEARCH_FILE,
    Search,
    run_search,
)
from hear_contrastune.training.config import DEFAULTS, TUNED_METHODS, TuneConfig
from hear_contrastune.training.search_space import SPACE

# After gm-program (the first chunk), gm-family-mix (begun next), the smaller and the multilabel
# tasks, so the median over tasks that sets the defaults covers every task shape early; the two
# biggest last.
ORDER = ("gm-program", "gm-family-mix", "gm-tags-varlen", "gm-family-5fold", "gm-phrase-5fold",
         "gm-pitch", "espeak-word")
KEPT_FILES = ("search.json", "study.journal", "trials.csv", "curves.csv", "best.json",
              "search.png")


def study_task(name: str, out: Path, keep: Path, size: str, epochs: int, trials: int,
               methods: tuple[str, ...], device: str | None) -> None:
    """One chunk: every method's search on one task, then its small outputs copied to keep."""
    task_dir = eval_tasks.build(name, out / "tasks", size=size)
    for method in methods:
        if done(keep / name / method, trials):
            continue
        base = study_base(task_dir, method, epochs)
        search_out, kept = out / "search" / name / method, keep / name / method
        with exclusive(search_out, name=ASK_LOCK, wait=True):
            start_from_kept(kept, search_out)
        run_search(Search(base, {}, search_out, trials), device, DEFAULT_WORKERS,
                   say=lambda line, m=method: click.echo(f"[{name} / {m}] {line}"),
                   written=lambda src=search_out, dst=kept: copy_kept(src, dst))


def study_base(task_dir: Path, method: str, epochs: int) -> TuneConfig:
    """What every search of the study starts from: the defaults, on one fold's roles for a
    k-fold task (fold00: valid fold01, train the rest), every epoch scored as when the study
    began (before --select-every): one pruner schedule and one selection for every chunk."""
    task = load_task(task_dir)
    fold = sorted(task.splits)[0] if task.kfold else ""
    return TuneConfig(task_dir=str(task_dir), fold=fold, method=method, epochs=epochs,
                      select_every=1)


def copy_kept(search_out: Path, kept: Path) -> None:
    """Copy a search's small outputs to its KEEP folder, each atomically. The journal is cut at
    its last whole line: a running trial may be appending an epoch's score."""
    kept.mkdir(parents=True, exist_ok=True)
    for file in KEPT_FILES:
        if (search_out / file).is_file():
            data = (search_out / file).read_bytes()
            if file == JOURNAL_FILE:
                data = data[:data.rfind(b"\n") + 1]
            write_bytes(kept / file, data)


def start_from_kept(kept: Path, search_out: Path) -> None:
    """Begin a search that has no journal here from the one kept (committed) elsewhere."""
    if (search_out / JOURNAL_FILE).exists() or not (kept / JOURNAL_FILE).is_file():
        return
    for file in (SEARCH_FILE, JOURNAL_FILE):
        write_bytes(search_out / file, (kept / file).read_bytes())
    click.echo(f"{search_out}: resumed from the journal kept in {kept}")


def done(folder: Path, trials: int) -> bool:
    """Whether a (task, method) search is kept, with this many trials."""
    best = folder / "best.json"
    return best.is_file() and complete(json.loads(best.read_text()), trials)


def complete(best: dict, trials: int) -> bool:
    """Whether a kept best.json is of a finished search: this many trials told."""
    return best["budget"]["trials"] >= trials


def finished_bests(keep: Path, trials: int) -> dict[tuple[str, str], dict]:
    """Every finished search's best.json, by (task, method)."""
    found = {(p.parent.parent.name, p.parent.name): json.loads(p.read_text())
             for p in sorted(keep.glob("*/*/best.json"))}
    return {k: d for k, d in found.items() if complete(d, trials)}


def summary(keep: Path, methods: tuple[str, ...], trials: int) -> str:
    """The study's table and the defaults it suggests, from every kept best.json."""
    bests = finished_bests(keep, trials)
    going = [f"{p.parent.parent.name} / {p.parent.name} ({finished(p)} of {trials} trials)"
             for p in sorted(keep.glob("*/*/trials.csv"))
             if (p.parent.parent.name, p.parent.name) not in bests]
    lines = ["# Tuning study (valid splits only)", "",
             "| task | method | best valid | trials (pruned) | epochs trained | wall minutes | "
             "compute minutes | configuration |", "|---|---|---:|---:|---:|---:|---:|---|"]
    minutes = compute = 0.0
    recorded = 0  # searches whose trials recorded their compute seconds
    for (task, method), doc in bests.items():
        b = doc["budget"]
        minutes += b["seconds"] / 60
        compute += b.get("compute_seconds", 0) / 60
        recorded += bool(b.get("compute_seconds"))
        params = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in doc["params"].items())
        trained = f"{b['compute_seconds'] / 60:.1f}" if b.get("compute_seconds") else "n/a"
        lines.append(f"| {task} | {method} | {doc['valid_score']:.3f} | {b['trials']} "
                     f"({b['pruned']}) | {b['epochs_trained']} | {b['seconds'] / 60:.1f} | "
                     f"{trained} | {params} |")
    lines += ["", f"Trial time in all: {minutes / 60:.2f} h of wall time (ask to tell: a paused "
              "machine and killed trials count); compute, the trials' logged epoch and "
              f"selection seconds (recorded since 2026-12-07): {compute / 60:.2f} h over the "
              f"{recorded} of {len(bests)} searches that record it."]
    if going:
        lines += ["", "Still searching (not in the table): " + ", ".join(going) + "."]
    lines += ["",
              "## Suggested defaults (median over tasks of each task's best; for a choice, "
              "the most common value, ties named)", ""]
    for method in methods:
        docs = {t: d for (t, m), d in bests.items() if m == method}
        if not docs:
            continue
        params = [d["params"] for d in docs.values()]
        lines.append(f"- {method} ({len(docs)} tasks): " + ", ".join(
            f"{name} {shown(value)}" for name, value in medians(params).items()))
        lines += [f"  - one configuration is the best on {', '.join(same)} (the seeded sampler "
                  "proposes the same first configurations on every task): the median repeats "
                  "it, which is not the tasks agreeing on each value" for same in same_bests(docs)]
    return "\n".join(lines) + "\n"


def same_bests(docs: dict[str, dict]) -> list[list[str]]:
    """Groups of tasks (two or more) whose best parameters are identical."""
    groups: dict[str, list[str]] = {}
    for task, doc in docs.items():
        groups.setdefault(json.dumps(doc["params"], sort_keys=True), []).append(task)
    return [tasks for tasks in groups.values() if len(tasks) > 1]


def finished(trials_csv: Path) -> int:
    """How many trials of a kept trials.csv finished (complete or pruned)."""
    with trials_csv.open() as f:
        states = {state.name.lower() for state in FINISHED}  # as trials.csv writes them
        return sum(row["state"] in states for row in csv.DictReader(f))


def medians(params: list[dict]) -> dict:
    """Each searched parameter's median over the tasks' best values, on its own scale (the
    median of the logs for a log-scale one); for a choice, its most common values, a list
    (several where they tie)."""
    out: dict = {}
    for p in SPACE:
        values = [d[p.name] for d in params if p.name in d]
        if not values:
            continue
        if p.choices:
            out[p.name] = sorted(statistics.multimode(values))
        elif p.log:
            out[p.name] = math.exp(statistics.median(math.log(v) for v in values))
        else:
            out[p.name] = statistics.median(values)
    return out


def shown(value) -> str:
    """A median as summary.md writes it: 3 digits, or a choice's tied values named."""
    if isinstance(value, list):
        return " or ".join(map(str, value)) + (" (tied)" if len(value) > 1 else "")
    return f"{value:.3g}"


@click.command()
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Working folder: tasks and searches (checkpoints: do not commit).")
@click.option("--keep", required=True, type=click.Path(path_type=Path),
              help="Where each finished task's small outputs and summary.md go (commit these).")
@click.option("--tasks", default=",".join(ORDER), show_default=True)
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
        write_text(keep / "summary.md", summary(keep, chosen, trials))
        click.echo(f"{name}: kept in {keep / name}")
    click.echo((keep / "summary.md").read_text())


if __name__ == "__main__":
    main()

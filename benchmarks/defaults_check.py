"""Do the tuning study's suggested defaults hold up? Each method's suggestion trains on every
study task beside the current defaults, on valid only, with seeds no search used.

A search's best is the highest of 12 noisy trials on one task (optimistic), and the study's
suggestion, the median over tasks of each parameter's best value (benchmarks/tuning_study.py),
can combine a high learning rate with a short warm-up that no task tried together. So before it
becomes a default, each method's suggestion and the current defaults train on every task
(`--seeds`, 1 by default; the searches trained seed 0) from the study's own base (its fold
roles, epochs, every epoch scored, patience), and are ranked on each task and seed by the valid
score of the kept epoch. The suggestion with the better mean rank over them is what the
defaults become; a tie keeps the current ones. A choice whose most common values tie
(m_per_class 4 or 8) takes the one nearest the current default, so a tie changes nothing it
need not.

    python benchmarks/defaults_check.py --study docs/tuning-study --out runs/defaults-check \\
        --keep docs/defaults-check

Cost: tasks x seeds x methods x 2 runs of at most `--epochs` epochs (patience stops most
earlier). Each run is an ordinary `tune` folder in OUT/<task>/<method>/<candidate>-<digest>/,
named by what it runs (seed included), so a changed suggestion is a new run and a killed one
resumes. Two processes running the same command share the runs (one thread each on 2 cores, as
the study ran). After each run its small outputs (config.json, done.json, epochs.csv; never
checkpoints) go to KEEP/<task>/seed<N>/<method>/<candidate>/ and KEEP/check.md is rewritten; a
run kept there for the same configuration and task contents is not trained again (a new
machine, a fresh checkout). Only valid is read.
"""

import hashlib
import json
import logging
import shutil
import statistics
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import click
import optuna
from tuning_study import ORDER, finished_bests, medians, shown, study_base

import eval_tasks
from hear_contrastune.atomic import atomic_dir, read_json_or_none, write_text
from hear_contrastune.data.loading import DEFAULT_WORKERS
from hear_contrastune.data.task import load_task
from hear_contrastune.errors import UserError
from hear_contrastune.lock import exclusive
from hear_contrastune.outputs import check_output_dir
from hear_contrastune.search import (
    SEARCH_FILE,
    Search,
    compute_seconds,
    identity_differs,
    trial_config,
)
from hear_contrastune.training.build import run_differs, run_record, training_clips
from hear_contrastune.training.config import (
    BATCH_SIZE,
    DEFAULTS,
    M_PER_CLASS,
    TUNED_METHODS,
    TuneConfig,
)
from hear_contrastune.training.loop import tune
from hear_contrastune.training.search_space import SPACE

CANDIDATES = ("current", "suggested")
KEPT_FILES = ("config.json", "done.json", "epochs.csv")
# What an unset choice of the search space resolves to today, to break a tie toward it.
CURRENT_CHOICE = {"batch_size": BATCH_SIZE, "m_per_class": M_PER_CLASS, "xbm_batches": 0}
TIE = 5e-4  # valid scores closer than this rank as a tie (the scores' printed precision)


def suggestion(bests: dict[tuple[str, str], dict], method: str, tasks: list[str]) -> dict:
    """The method's suggested parameters over these tasks' searches, each tie broken toward the
    current default (then the smaller value)."""
    chosen = medians([bests[(t, method)]["params"] for t in tasks])
    for p in SPACE:
        if isinstance(chosen.get(p.name), list):
            chosen[p.name] = nearest(chosen[p.name], p.choices, CURRENT_CHOICE[p.name])
    return chosen


def nearest(tied: list, choices: tuple, current) -> object:
    """The tied value fewest steps along the choices from the current one (2 and 8 are as far
    from 4 as 32 and 128 from 64), then the smaller."""
    return min(tied, key=lambda v: (abs(choices.index(v) - choices.index(current)), v))


def candidate_config(base: TuneConfig, params: dict | None) -> TuneConfig:
    """The run a candidate makes on a task: the study's base, or the base with the suggested
    parameters mapped to options exactly as a search trial maps its own (fitted batch
    included)."""
    task, cfg = load_task(base.task_dir), base
    if params is not None:
        cfg = trial_config(Search(base, {}, Path(), 1), optuna.trial.FixedTrial(params),
                           training_clips(base, task).targets)
    return training_clips(cfg, task).cfg.resolved()  # batch fitted: as config.json records it


def check_study_base(study: Path, name: str, method: str, base: TuneConfig,
                     task_key: str) -> None:
    """Refuse to check from another base than the study searched from (another --epochs or
    --size, or a study made by other code): the candidates would not be what it compared."""
    held = read_json_or_none(study / name / method / SEARCH_FILE) or {}
    differ = identity_differs(held, Search(base, {}, Path(), 1).identity(task_key))
    if "task_key" in differ and not str(held.get("task_key", "")).startswith("sha256:"):
        differ.remove("task_key")  # gm-program's searches, made before ea738df
        click.echo(f"note: {name} / {method} was searched when a task's key was not yet its "
                   "audio's bytes: its task contents cannot be checked against today's")
    if differ:
        raise UserError(f"--study {study}: {name} / {method} was searched on another base "
                        f"(differs in {', '.join(differ)}); give the study's --size and "
                        "--epochs")


def digest(cfg: TuneConfig, task_key: str) -> str:
    """A short name for what a run runs: its options and its task's contents (not paths)."""
    record = {k: v for k, v in run_record(cfg, task_key).items() if k != "task_dir"}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:8]


def claimed_run(cfg: TuneConfig, out: Path, kept: Path, device: str | None,
                wait: bool) -> dict | None:
    """check_run under a claim on the run, so that two processes running the check share its
    runs: None (without `wait`) if another process holds it. With `wait`, its result once that
    process lets go: kept by it, or, if it died, resumed here."""
    with ExitStack() as claim:
        try:
            claim.enter_context(exclusive(out.parent, name=f".{out.name}.claim", wait=wait))
        except UserError:
            return None
        return check_run(cfg, out, kept, device)


def check_run(cfg: TuneConfig, out: Path, kept: Path, device: str | None) -> dict:
    """The run's done.json with its compute seconds: the kept run where it is this run on
    these task contents, else trained (or resumed) in out and its small outputs kept, the
    folder replaced whole (a kill never leaves one run's config beside another's result)."""
    task_key = load_task(cfg.task_dir).content_key()
    held = read_json_or_none(kept / "config.json")
    if not ((kept / "done.json").is_file() and held and not run_differs(held, cfg, task_key)):
        tune(cfg, out, device, DEFAULT_WORKERS)
        with atomic_dir(kept) as tmp:
            for file in KEPT_FILES:
                shutil.copyfile(out / file, tmp / file)
    # the epochs' logged seconds: done.json's wall time counts only a resumed run's last process
    return {**json.loads((kept / "done.json").read_text()),
            "compute_seconds": compute_seconds(kept)}


def ranks(scores: dict[str, float]) -> dict[str, float]:
    """Each candidate's rank on one task (1 = best); scores within TIE share their ranks."""
    return {c: 1 + sum(other - s > TIE for other in scores.values())
            + 0.5 * sum(abs(other - s) <= TIE for o, other in scores.items() if o != c)
            for c, s in scores.items()}


def report(results: dict, bests: dict, suggestions: dict, tasks: int, seeds: int,
           command: str) -> str:
    """check.md: per task, seed and method the two candidates' valid scores, kept and last
    epochs and minutes beside the search's best (a kept epoch 0 is a run that never beat the
    untuned encoder); per method the mean rank over (task, seed) pairs, once all
    `expected` pairs are in, and what the defaults become."""
    lines = ["# Do the suggested defaults hold up? (valid splits only)", "",
             f"    {command}", "",
             "| task | seed | method | current | suggested | difference | search's best (seed 0,"
             " max of its trials) | kept / last epoch, current; suggested | minutes (epochs and "
             "selection logged) current / suggested |",
             "|---|---:|---|---:|---:|---:|---:|---|---|"]
    pairs = {key: d for key, d in results.items() if set(d) == set(CANDIDATES)}
    expected = tasks * seeds
    for (task, seed, method), done in pairs.items():
        cur, sug = done["current"], done["suggested"]
        lines.append(
            f"| {task} | {seed} | {method} | {cur['select_score']:.3f} | "
            f"{sug['select_score']:.3f} | {sug['select_score'] - cur['select_score']:+.3f} | "
            f"{bests[(task, method)]['valid_score']:.3f} | {cur['best_epoch']} / "
            f"{cur['last_epoch']}; {sug['best_epoch']} / {sug['last_epoch']} | "
            f"{cur['compute_seconds'] / 60:.1f} / {sug['compute_seconds'] / 60:.1f} |")
    lines += ["", "## Per method", ""]
    for method, params in suggestions.items():
        done = [d for (_, _, m), d in pairs.items() if m == method]
        lines.append(f"- {method}: suggested " + ", ".join(
            f"{k} {shown(v)}" for k, v in params.items()) + ".")
        if len(done) < expected:
            lines.append(f"  - {len(done)} of {expected} task and seed pairs in: no verdict yet")
            continue
        per_pair = [ranks({c: d[c]["select_score"] for c in CANDIDATES}) for d in done]
        mean = {c: statistics.mean(r[c] for r in per_pair) for c in CANDIDATES}
        diffs = [d["suggested"]["select_score"] - d["current"]["select_score"] for d in done]
        better = sum(r["suggested"] < r["current"] for r in per_pair)
        worse = sum(r["suggested"] > r["current"] for r in per_pair)
        lines.append(f"  - mean rank current {mean['current']:.2f}, suggested "
                     f"{mean['suggested']:.2f}: suggested better on {better}, worse on {worse} of "
                     f"{len(done)} task and seed pairs, mean difference "
                     f"{statistics.mean(diffs):+.3f} (from {min(diffs):+.3f} to "
                     f"{max(diffs):+.3f}): " + verdict(done, better, worse, mean, seeds))
    return "\n".join(lines) + "\n"


def verdict(done: list[dict], better: int, worse: int, mean: dict, seeds: int) -> str:
    """What a method's defaults become, by the rule fixed before the check ran (README): on one
    seed, a close call (wins and losses within one) or a collapse (the suggestion keeps the
    untuned epoch 0 where the current defaults beat it) asks for more seeds first."""
    collapsed = sum(d["suggested"]["best_epoch"] == 0 < d["current"]["best_epoch"]
                    for d in done)
    if seeds == 1 and (abs(better - worse) <= 1 or collapsed):
        why = f"{collapsed} collapsed" if collapsed else "a close call"
        return f"one seed is not enough here ({why}): run --seeds 1,2,3 before deciding"
    if mean["suggested"] < mean["current"]:
        return "adopt the suggestion"
    return "keep the current defaults"


def listed(value: str, option: str) -> list[str]:
    """A comma-separated option's items: at least one, none twice (a repeated seed would
    leave its pairs short of the count a verdict waits for)."""
    items = [v for v in value.split(",") if v]
    if not items or len(set(items)) < len(items):
        raise click.BadParameter(f"{value!r}: give one or more, comma-separated, none twice",
                                 param_hint=option)
    return items


@click.command()
@click.option("--study", required=True, type=click.Path(path_type=Path),
              help="The tuning study's kept folder (tuning_study.py --keep).")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Working folder: tasks and runs (checkpoints: do not commit).")
@click.option("--keep", required=True, type=click.Path(path_type=Path),
              help="Where each run's small outputs and check.md go (commit these).")
@click.option("--tasks", default=",".join(ORDER), show_default=True)
@click.option("--methods", default=",".join(TUNED_METHODS), show_default=True)
@click.option("--size", default="full", show_default=True, type=click.Choice(["small", "full"]))
@click.option("--epochs", default=DEFAULTS.epochs, show_default=True, type=int,
              help="As the study's searches ran (checked against its search.json).")
@click.option("--trials", default=12, show_default=True, type=int,
              help="The study's trials per search: a search with fewer is not finished.")
@click.option("--seeds", default="1", show_default=True,
              help="Seeds of every run, comma-separated (the searches trained seed 0).")
@click.option("--device", default=None)
def main(study: Path, out: Path, keep: Path, tasks: str, methods: str, size: str, epochs: int,
         trials: int, seeds: str, device: str | None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names, chosen = listed(tasks, "--tasks"), listed(methods, "--methods")
    try:
        drawn = [int(s) for s in listed(seeds, "--seeds")]
    except ValueError:
        raise click.BadParameter(f"{seeds!r}: seeds are integers, comma-separated",
                                 param_hint="--seeds") from None
    try:  # the study is read: no output may write into it, nor the two into each other
        check_output_dir(out, "--out", [study])
        check_output_dir(keep, "--keep", [study, out])
    except UserError as e:
        raise click.ClickException(str(e)) from None
    bests = finished_bests(study, trials)
    missing = [f"{t} / {m}" for t in names for m in chosen if (t, m) not in bests]
    if missing:
        raise click.ClickException(f"--study {study}: no finished search ({trials} trials) for "
                                   f"{', '.join(missing)}; the suggestion needs every task's")
    bests = {(t, m): bests[(t, m)] for t in names for m in chosen}
    suggestions = {m: suggestion(bests, m, names) for m in chosen}
    command = (f"python benchmarks/defaults_check.py --study {study} --out {out} --keep {keep}"
               f" --tasks {','.join(names)} --methods {','.join(chosen)} --size {size} "
               f"--epochs {epochs} --trials {trials} --seeds {','.join(map(str, drawn))}")

    def record(key: tuple, candidate: str, done: dict) -> None:
        results.setdefault(key, {})[candidate] = done
        write_text(keep / "check.md",
                   report(results, bests, suggestions, len(names), len(drawn), command))

    results: dict = {}
    try:
        for key, candidate, done in check_runs(study, names, drawn, suggestions, out, keep,
                                               size, epochs, device):
            record(key, candidate, done)
    except UserError as e:
        raise click.ClickException(str(e)) from None
    click.echo((keep / "check.md").read_text())


def check_runs(study: Path, names: list[str], seeds: list[int], suggestions: dict, out: Path,
               keep: Path, size: str, epochs: int, device: str | None) -> Iterator[tuple]:
    """Each run of the check, as ((task, seed, method), candidate, done.json) once it is in:
    a task is one chunk; runs another process holds are waited for after the rest."""
    total = len(names) * len(seeds) * len(suggestions) * len(CANDIDATES)
    count, later = 0, []
    for name in names:
        task_dir = eval_tasks.build(name, out / "tasks", size=size)
        task_key = load_task(task_dir).content_key()
        for method in suggestions:
            check_study_base(study, name, method, study_base(task_dir, method, epochs), task_key)
        for seed in seeds:
            for method, params in suggestions.items():
                base = replace(study_base(task_dir, method, epochs), seed=seed)
                for candidate, chosen in (("current", None), ("suggested", params)):
                    cfg = candidate_config(base, chosen)
                    count += 1
                    named = f"{candidate}-{digest(cfg, task_key)}"
                    click.echo(f"run {count} of {total}: [{name} / seed {seed} / {method}] "
                               f"{named}")
                    job = (cfg, out / name / method / named,
                           keep / name / f"seed{seed}" / method / candidate)
                    done = claimed_run(*job, device, wait=False)
                    if done is None:
                        click.echo("  another process is training it: taken up at the end")
                        later.append(((name, seed, method), candidate, job))
                    else:
                        yield (name, seed, method), candidate, done
    for key, candidate, job in later:
        yield key, candidate, claimed_run(*job, device, wait=True)

if __name__ == "__main__":
    main()

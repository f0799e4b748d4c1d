"""Do the tuning study's suggested defaults hold up? Each method's suggestion trains on every
study task beside the current defaults, on valid only, with seeds no search used.

A search's best is the highest of 12 noisy trials on one task (optimistic), and the study's
suggestion, the median over tasks of each parameter's best value (benchmarks/tuning_study.py),
can combine a high learning rate with a short warm-up that no task tried together. So before it
becomes a default, three candidates train on every task (`--seeds`, 1 by default; the searches
trained seed 0) from the study's own base (its fold roles, epochs, every epoch scored,
patience): the current defaults, the suggestion, and the suggestion at `--shorter` epochs (the
cheaper default, if it does as well). They are ranked on each task and seed by the valid score
of the kept epoch; the best mean rank is what the defaults become, a tie going to the current
ones, then to fewer epochs. A choice whose most common values tie (m_per_class 4 or 8) takes
the one nearest the current default, so a tie changes nothing it need not.

    python benchmarks/defaults_check.py --study docs/tuning-study --out runs/defaults-check \\
        --keep docs/defaults-check

Cost: tasks x seeds x methods x 3 runs of at most `--epochs` (or `--shorter`) epochs (patience
stops most earlier). Each run is an ordinary `tune` folder in
OUT/<task>/<method>/<candidate>-<digest>/, named by what it runs (options, seed and task
contents), so a changed suggestion is a new run and a killed one resumes. Two processes running
the same command share the runs (one thread each on 2 cores, as the study ran). After each run
its small outputs (config.json, done.json, epochs.csv; never checkpoints) replace
KEEP/<task>/seed<N>/<method>/<candidate>/ whole and KEEP/check.md is rewritten; a run kept
there for the same configuration and task contents is not trained again (a new machine, a
fresh checkout). Only valid is read.
"""

import hashlib
import json
import logging
import shutil
import statistics
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import click
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
    with_params,
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
        cfg = with_params(base, params, training_clips(base, task).targets)
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


def claimed_run(cfg: TuneConfig, task_key: str, out: Path, kept: Path, device: str | None,
                wait: bool) -> dict | None:
    """check_run under a claim on the run, so that two processes running the check share its
    runs: None (without `wait`) if another process holds it. With `wait`, its result once that
    process lets go: kept by it, or, if it died, resumed here."""
    with ExitStack() as claim:
        try:
            claim.enter_context(exclusive(out.parent, name=f".{out.name}.claim", wait=wait))
        except UserError:
            return None
        return check_run(cfg, task_key, out, kept, device)


def check_run(cfg: TuneConfig, task_key: str, out: Path, kept: Path,
              device: str | None) -> dict:
    """The run's done.json with its compute seconds: the kept run where it is this run on
    these task contents (`task_key`, read once per task by check_runs), else trained (or
    resumed) in out and its small outputs kept, the folder replaced whole (a kill never leaves
    one run's config beside another's result)."""
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


@dataclass(frozen=True)
class Candidate:
    """One configuration the check trains on every task: the current defaults (params None),
    or the suggestion, at the study's epochs or fewer."""

    name: str
    params: dict | None
    epochs: int


def lineup(suggested: dict, epochs: int, shorter: int) -> list[Candidate]:
    """The candidates for one method; `shorter` > 0 adds the suggestion at that many epochs
    (its warm-up the same fraction of them), the cheaper default if it ranks as well."""
    out = [Candidate("current", None, epochs), Candidate("suggested", suggested, epochs)]
    if shorter:
        out.append(Candidate(f"suggested-{shorter}ep", suggested, shorter))
    return out


def report(results: dict, bests: dict, lineups: dict[str, list[Candidate]], tasks: int,
           seeds: int, command: str) -> str:
    """check.md: per task, seed and method each candidate's valid score, rank, kept and last
    epochs and minutes beside the search's best (a kept epoch 0 is a run that never beat the
    untuned encoder); per method, once all task and seed pairs are in, the mean ranks and
    what the defaults become."""
    lines = ["# Do the suggested defaults hold up? (valid splits only)", "",
             f"    {command}", "",
             "| task | seed | method | candidate | valid | rank | kept / last epoch | minutes "
             "(epochs and selection logged) | search's best (seed 0, max of its trials) |",
             "|---|---:|---|---|---:|---:|---|---:|---:|"]
    pairs = {key: d for key, d in results.items()
             if set(d) == {c.name for c in lineups[key[2]]}}
    for (task, seed, method), done in pairs.items():
        rank = ranks({c: d["select_score"] for c, d in done.items()})
        lines += [f"| {task} | {seed} | {method} | {c.name} | {done[c.name]['select_score']:.3f} "
                  f"| {rank[c.name]:g} | {done[c.name]['best_epoch']} / "
                  f"{done[c.name]['last_epoch']} | {done[c.name]['compute_seconds'] / 60:.1f} | "
                  f"{bests[(task, method)]['valid_score']:.3f} |" for c in lineups[method]]
    lines += ["", "## Per method", ""]
    for method, candidates in lineups.items():
        done = [d for (_, _, m), d in pairs.items() if m == method]
        lines.append(f"- {method}: suggested " + ", ".join(
            f"{k} {shown(v)}" for k, v in candidates[1].params.items()) + ".")
        if len(done) < tasks * seeds:
            lines.append(f"  - {len(done)} of {tasks * seeds} task and seed pairs in: no "
                         "verdict yet")
            continue
        for c in candidates:
            scores = [d[c.name]["select_score"] - d["current"]["select_score"] for d in done]
            minutes = statistics.mean(d[c.name]["compute_seconds"] for d in done) / 60
            lines.append(f"  - {c.name}: mean rank {mean_rank(done, candidates, c):.2f}, "
                         f"valid {statistics.mean(scores):+.3f} on average against current "
                         f"(from {min(scores):+.3f} to {max(scores):+.3f}), {minutes:.1f} "
                         "minutes a run on average")
        lines.append(f"  - {verdict(done, candidates, seeds)}")
    return "\n".join(lines) + "\n"


def mean_rank(done: list[dict], candidates: list[Candidate], c: Candidate) -> float:
    """A candidate's rank among `candidates`, averaged over the task and seed pairs."""
    return statistics.mean(ranks({o.name: d[o.name]["select_score"] for o in candidates})[c.name]
                           for d in done)


def verdict(done: list[dict], candidates: list[Candidate], seeds: int) -> str:
    """What a method's defaults become, by the rule fixed before the check ran (README): the
    best mean rank, a tie going to the current defaults, then to fewer epochs (the suggestion
    at fewer epochs is taken if it ranks as well). On one seed, a close call between the
    current defaults and the suggestion (the first of them ahead of the best of the other on
    at most one pair more than it is behind) or a collapse of the first (it keeps the untuned
    epoch 0 where the current defaults beat it) asks for more seeds first."""
    order = sorted(candidates, key=lambda c: (mean_rank(done, candidates, c),
                                              c.params is not None, c.epochs))
    first = order[0]
    rival = next(c for c in order if (c.params is None) != (first.params is None))
    rank = [ranks({c.name: d[c.name]["select_score"] for c in candidates}) for d in done]
    ahead = sum(r[first.name] < r[rival.name] for r in rank)
    behind = sum(r[first.name] > r[rival.name] for r in rank)
    collapsed = 0 if first.params is None else sum(
        d[first.name]["best_epoch"] == 0 < d["current"]["best_epoch"] for d in done)
    told = (f"{first.name} first, ahead of {rival.name} on {ahead} pairs and behind on "
            f"{behind}")
    if seeds == 1 and (abs(ahead - behind) <= 1 or collapsed):
        why = f"{collapsed} collapsed" if collapsed else "a close call"
        return f"{told}: one seed is not enough here ({why}); run --seeds 1,2,3 before deciding"
    if first.params is None:
        return f"{told}: keep the current defaults"
    return f"{told}: adopt the suggestion" + (
        f" at {first.epochs} epochs" if first.epochs != candidates[0].epochs else "")


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
@click.option("--shorter", default=15, show_default=True, type=int,
              help="Also train the suggestion for this many epochs (0: not).")
@click.option("--device", default=None)
def main(study: Path, out: Path, keep: Path, tasks: str, methods: str, size: str, epochs: int,
         trials: int, seeds: str, shorter: int, device: str | None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names, chosen = listed(tasks, "--tasks"), listed(methods, "--methods")
    try:
        drawn = [int(s) for s in listed(seeds, "--seeds")]
    except ValueError:
        raise click.BadParameter(f"{seeds!r}: seeds are integers, comma-separated",
                                 param_hint="--seeds") from None
    if not 0 <= shorter < epochs:
        raise click.BadParameter(f"{shorter}: fewer epochs than --epochs {epochs}, or 0",
                                 param_hint="--shorter")
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
    lineups = {m: lineup(suggestion(bests, m, names), epochs, shorter) for m in chosen}
    command = (f"python benchmarks/defaults_check.py --study {study} --out {out} --keep {keep}"
               f" --tasks {','.join(names)} --methods {','.join(chosen)} --size {size} "
               f"--epochs {epochs} --trials {trials} --seeds {','.join(map(str, drawn))} "
               f"--shorter {shorter}")

    def record(key: tuple, candidate: str, done: dict) -> None:
        results.setdefault(key, {})[candidate] = done
        write_text(keep / "check.md",
                   report(results, bests, lineups, len(names), len(drawn), command))

    results: dict = {}
    try:
        for key, candidate, done in check_runs(study, names, drawn, lineups, out, keep, size,
                                               epochs, device):
            record(key, candidate, done)
    except UserError as e:
        raise click.ClickException(str(e)) from None
    click.echo((keep / "check.md").read_text())


def check_runs(study: Path, names: list[str], seeds: list[int],
               lineups: dict[str, list[Candidate]], out: Path, keep: Path, size: str,
               epochs: int, device: str | None) -> Iterator[tuple]:
    """Each run of the check, as ((task, seed, method), candidate name, done.json) once it is
    in: a task is one chunk; runs another process holds are waited for after the rest."""
    total = len(names) * len(seeds) * sum(map(len, lineups.values()))
    count, later = 0, []
    for name in names:
        task_dir = eval_tasks.build(name, out / "tasks", size=size)
        task_key = load_task(task_dir).content_key()
        for method in lineups:
            check_study_base(study, name, method, study_base(task_dir, method, epochs), task_key)
        for seed in seeds:
            for method, candidates in lineups.items():
                for candidate in candidates:
                    base = replace(study_base(task_dir, method, epochs), seed=seed,
                                   epochs=candidate.epochs)
                    cfg = candidate_config(base, candidate.params)
                    count += 1
                    named = f"{candidate.name}-{digest(cfg, task_key)}"
                    click.echo(f"run {count} of {total}: [{name} / seed {seed} / {method}] "
                               f"{named}")
                    job = (cfg, task_key, out / name / method / named,
                           keep / name / f"seed{seed}" / method / candidate.name)
                    done = claimed_run(*job, device, wait=False)
                    if done is None:
                        click.echo("  another process is training it: taken up at the end")
                        later.append(((name, seed, method), candidate.name, job))
                    else:
                        yield (name, seed, method), candidate.name, done
    for key, candidate, job in later:
        yield key, candidate, claimed_run(*job, device, wait=True)


if __name__ == "__main__":
    main()

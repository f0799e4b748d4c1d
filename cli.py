"""`contrastune`: the command line of hear-contrastune.

Each command is a thin wrapper over one module of the package; user mistakes surface as one
line (`error: ...`, exit 2), never a traceback.
"""

import errno
import logging
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import click
from tqdm import tqdm

import eval_tasks
from eval_tasks import importer
from hear_contrastune.cli_options import (
    CONFIG,
    CONTRASTIVE,
    DEVICE,
    GRID,
    RUN,
    SHOTS,
    WORKERS,
    Shots,
    tuning_options,
    with_options,
)
from hear_contrastune.comparison import quickstart as quickstart_preset
from hear_contrastune.comparison.options import SELECTION, CompareConfig
from hear_contrastune.comparison.run_layout import COMPARED_METHODS, DEFAULT_PROBES, PROBES
from hear_contrastune.errors import UserError
from hear_contrastune.estimators.knn_search import DEFAULT_TEMPERATURE, METRICS, VOTE_WEIGHTINGS
from hear_contrastune.probes.hear_mlp import DEFAULT_GRID, GRIDS
from hear_contrastune.training.config import DEFAULTS as D
from hear_contrastune.training.config import (
    TUNED_METHODS,
    TuneConfig,
)
from hear_contrastune.training.search_space import space_help

# A write that failed for want of room (a full disk, a quota, `ulimit -f`): the user's to fix.
OUT_OF_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def stop_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM ends the command as Ctrl-C does: by an exception, so subprocess.run kills the
    heareval runner it is waiting for and DataLoader workers shut down, instead of being left
    running."""
    raise SystemExit(128 + signum)


class Group(click.Group):
    """A click group that turns UserError into one line on stderr and exit status 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except OSError as e:
            if e.errno not in OUT_OF_SPACE:
                raise
            click.echo(f"error: {e.filename or 'output'}: {e.strerror}; free some space and "
                       "run the same command again: it resumes from its last complete output",
                       err=True)
            sys.exit(2)


@click.group(cls=Group)
def main() -> None:
    """Contrastively tune pre-trained audio encoders and judge them with HEAR, linear and kNN
    probes."""
    import torch

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the run notes, on stderr
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    # Decaying notes reach float32's denormal range, where CPU LSTMs and convolutions crawl.
    torch.set_flush_denormal(True)


@main.group()
def tasks() -> None:
    """Build offline HEAR tasks (eval_tasks) and check task folders."""


@tasks.command("list")
def tasks_list() -> None:
    """List the tasks `tasks build` can make."""
    for name, description in eval_tasks.list_tasks():
        click.echo(f"{name:18s} {description}")


@tasks.command("build")
@click.argument("names", nargs=-1)
@click.option("--all", "build_all", is_flag=True, help="Build every task.")
@click.option("--out", default="tasks", show_default=True, type=click.Path(path_type=Path))
@click.option("--size", default=eval_tasks.DEFAULT_SIZE, show_default=True,
              type=click.Choice(eval_tasks.gm.SIZES))
@click.option("--seed", default=0, show_default=True, type=int)
def tasks_build(names: tuple[str, ...], build_all: bool, out: Path, size: str, seed: int) -> None:
    """Build tasks NAMES (or --all) into OUT/<name>; complete ones are kept."""
    if build_all:
        names = tuple(eval_tasks.TASKS)
    if not names:
        raise UserError("tasks build: name a task (see `contrastune tasks list`) or pass --all")
    for name in names:
        click.echo(str(eval_tasks.build(name, out, size=size, seed=seed)))


@main.command()
def backbones() -> None:
    """List the backbones available here."""
    from hear_contrastune.backbones import BACKBONES, PREFIXES
    from hear_contrastune.backbones.hf import FAMILIES

    for name, (_, description) in BACKBONES.items():
        click.echo(f"{name:26s} {description}")
    for prefix, (_, usage, description) in PREFIXES.items():
        click.echo(f"{usage:26s} {description}")
        if prefix == "hf:":
            for family, rate, needs in FAMILIES:
                click.echo(f"  {family:25s} {rate}; {needs}")


def run_training(method: str, task_dir: Path, out: Path, device: str | None, workers: int,
                 **options) -> None:
    from hear_contrastune.training.loop import tune

    searched_for, config_file = click.get_current_context().meta.get("config_method",
                                                                      (None, None))
    if searched_for not in (None, method):
        raise UserError(f"--config {config_file}: a configuration for {searched_for}, not "
                        f"{method}")
    cfg = TuneConfig(task_dir=str(task_dir), method=method, **options)
    best = tune(cfg, out, device, workers)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line, not one per process
        click.echo(f"best checkpoint: {best}")


@main.command()
@with_options(CONFIG, *RUN, SHOTS, *tuning_options(D), *CONTRASTIVE, WORKERS, DEVICE)
def tune(**options) -> None:
    """Contrastively tune a backbone on a task; keeps the best epoch as OUT/best.pt."""
    run_training("contrastive", **options)


@main.command()
@with_options(CONFIG, *RUN, SHOTS, *tuning_options(D), WORKERS, DEVICE)
@click.option("--lp-ft", is_flag=True,
              help="LP-FT (Kumar et al. 2022): fit the classifier as a linear probe on the "
                   "frozen encoder first, then fine-tune everything from it (head at 1x --lr).")
def finetune(lp_ft: bool, **options) -> None:
    """Vanilla fine-tuning baseline: backbone + linear classifier, cross-entropy (BCE for
    multilabel), with tune's data, views, optimiser and model selection."""
    run_training("lpft" if lp_ft else "finetune", **options)


@main.command(epilog="Searched, unless given: " + space_help() + ".")
@with_options(*RUN, SHOTS, *tuning_options(D), *CONTRASTIVE, WORKERS, DEVICE)
@click.option("--method", default="contrastive", show_default=True,
              type=click.Choice(TUNED_METHODS))
@click.option("--trials", default=20, show_default=True, type=click.IntRange(min=1),
              help="Trials to finish (completed or pruned), counted over every process that "
                   "joins the study; a later command with more continues it.")
@click.pass_context
def search(ctx: click.Context, method: str, trials: int, out: Path, workers: int,
           device: str | None, **options) -> None:
    """Search tuning hyperparameters on valid (Optuna: seeded TPE, successive-halving pruning
    on each epoch's valid score). Options given here are fixed; the rest of the space is
    searched. Run the same command in more processes to share the work; rerun it after a kill
    to resume. OUT gets trials/NNNN/ (run folders), trials.csv, curves.csv (every trial's valid
    score per epoch), best.json (for `tune --config`) and search.png."""
    from hear_contrastune.search import Search, run_search

    fixed = {k: v for k, v in options.items()
             if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE
             and k not in ("task_dir", "fold", "seed", "shots")}
    base = TuneConfig(method=method, **{k: v for k, v in options.items()})
    best = run_search(Search(replace(base, task_dir=str(options["task_dir"])), fixed, out,
                             trials), device, workers, say=tqdm.write)
    if best:
        click.echo(f"best: trial {best['trial']}, valid {best['valid_score']:.4f}: "
                   + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in best["params"].items()))
        click.echo(f"tune with it: contrastune {'tune' if method == 'contrastive' else 'finetune'}"
                   f" --config {out / 'best.json'} ...")


@main.command()
@click.option("--model", required=True,
              help="A checkpoint (runs/<name>/best.pt) or a backbone name for the untuned encoder.")
@click.option("--tasks-dir", required=True, type=click.Path(path_type=Path),
              help="A folder of HEAR tasks, or one task folder.")
@click.option("--out", default="embeddings", show_default=True, type=click.Path(path_type=Path))
@click.option("--name", default=None, help="Model folder name under OUT (default: from --model).")
@WORKERS
@click.option("--device", default=None)
def embed(model: str, tasks_dir: Path, out: Path, name: str | None, workers: int,
          device: str | None) -> None:
    """Write heareval's embeddings layout (OUT/<name>/<task>) for every task."""
    from hear_contrastune.embed import embed_tasks

    for d in embed_tasks(model, tasks_dir, out, name, device, workers):
        click.echo(str(d))


class Duration(click.ParamType):
    """Seconds > 0, or 'none' (importer.KEEP_LENGTH): every clip keeps its own length."""

    name = "SECONDS|none"

    def convert(self, value, param, ctx):
        if isinstance(value, float) or value == importer.KEEP_LENGTH:
            return value
        if str(value).strip().lower() == importer.KEEP_LENGTH:
            return importer.KEEP_LENGTH
        try:
            seconds = float(value)
        except ValueError:
            self.fail(f"{value!r}: expected seconds > 0 or 'none'", param, ctx)
        if not seconds > 0:
            self.fail(f"{value!r}: expected seconds > 0 or 'none'", param, ctx)
        return seconds


@tasks.command("import")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--out", default="tasks", show_default=True, type=click.Path(path_type=Path),
              help="Tasks folder; the task goes to OUT/<name>.")
@click.option("--name", default=None, help="Task name (default: from SOURCE).")
@click.option("--duration", default=None, type=Duration(),
              help="Clip length in seconds (default: the median length, to 0.1 s); 'none' "
                   "keeps each clip's own length (sample_duration null, as FSD50K).")
@click.option("--split", default=importer.SPLIT_MODES[0], show_default=True,
              type=click.Choice(importer.SPLIT_MODES))
@click.option("--folds", default=importer.DEFAULT_FOLDS, show_default=True,
              type=click.IntRange(min=3))
@click.option("--valid-fraction", default=importer.DEFAULT_VALID_FRACTION, show_default=True,
              type=float)
@click.option("--test-fraction", default=importer.DEFAULT_TEST_FRACTION, show_default=True,
              type=float)
@click.option("--seed", default=0, show_default=True, type=int)
def tasks_import(source: Path, out: Path, **options) -> None:
    """Make a HEAR task from your own audio: SOURCE is a folder with one subfolder per class,
    or a CSV of `path,labels` (labels separated by ';'; several on a row -> multilabel)."""
    click.echo(str(importer.import_task(source, out, **options)))


@tasks.command("check")
@click.argument("task_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
def tasks_check(task_dirs: tuple[Path, ...]) -> None:
    """Check HEAR task folders (any hearpreprocess output too): files, rate, length, labels."""
    from eval_tasks.check import check_task

    bad = 0
    for task_dir in task_dirs:
        problems = check_task(task_dir)
        bad += bool(problems)
        click.echo(f"{task_dir}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
        for problem in problems:
            click.echo(f"  {problem}")
    if bad:
        raise UserError(f"{bad} of {len(task_dirs)} task folder(s) failed the check")


@main.command("knn-probe")
@click.argument("emb_task_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--k", "k_grid", multiple=True, type=int,
              help="k values to choose from on valid (repeatable; default 1 3 5 10 20 50 100).")
@click.option("--metric", default=METRICS[0], show_default=True, type=click.Choice(METRICS))
@click.option("--weighting", default=VOTE_WEIGHTINGS[0], show_default=True,
              type=click.Choice(VOTE_WEIGHTINGS),
              help="similarity: votes weighted by exp(similarity / temperature).")
@click.option("--temperature", default=DEFAULT_TEMPERATURE, show_default=True, type=float)
@click.option("--device", default=None, help="cpu or cuda (default: cuda if present).")
@click.option("--force", is_flag=True, help="Probe again tasks that already have results.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def knn_probe(emb_task_dirs: tuple[Path, ...], k_grid: tuple[int, ...], as_json: bool,
              **options) -> None:
    """kNN probe of heareval embeddings folders; writes test.knn-predicted-scores.json."""
    import json

    from hear_contrastune.probes.knn import DEFAULT_K_GRID, format_table, run_knn_probe

    results = run_knn_probe(list(emb_task_dirs), k_grid or DEFAULT_K_GRID, **options)
    click.echo(json.dumps(results, indent=2) if as_json else format_table(results))


@main.command("logistic-probe")
@click.argument("emb_task_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--c", "c_grid", multiple=True, type=float,
              help="L2 strengths C to choose from on valid (repeatable; default 0.001 0.01 0.1 "
                   "1 10 100 1000).")
@click.option("--force", is_flag=True, help="Probe again tasks that already have results.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def logistic_probe(emb_task_dirs: tuple[Path, ...], c_grid: tuple[float, ...], force: bool,
                   as_json: bool) -> None:
    """Converged linear probe: logistic regression on standardised embeddings, solved with
    L-BFGS, C chosen on valid; writes test.logistic-predicted-scores.json."""
    import json

    from hear_contrastune.probes.logistic import DEFAULT_C_GRID, format_table, run_logistic_probe

    results = run_logistic_probe(list(emb_task_dirs), c_grid or DEFAULT_C_GRID, force=force)
    click.echo(json.dumps(results, indent=2) if as_json else format_table(results))


@main.command("linear-probe")
@click.argument("emb_task_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--grid", default=DEFAULT_GRID, show_default=True, type=click.Choice(GRIDS),
              help="heareval's learning-rate grid (with hidden_layers fixed at 0).")
@click.option("--force", is_flag=True, help="Probe again tasks that already have results.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def linear_probe(emb_task_dirs: tuple[Path, ...], grid: str, force: bool, as_json: bool) -> None:
    """Strictly linear probe with heareval's own predictor; writes
    test.linear-predicted-scores.json."""
    import json

    from hear_contrastune.probes.hear_mlp import test_score
    from hear_contrastune.probes.linear import run_linear_probe

    results = run_linear_probe(list(emb_task_dirs), grid=grid, force=force)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    for r in results if not as_json else []:
        note = " (skipped: output exists)" if r["skipped"] else ""
        click.echo(f"{r['task']:20s} {test_score(r['result']):.4f}  {r['output']}{note}")


def subset(option: str, value: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated subset of `allowed`, or a one-line error naming the option."""
    chosen = tuple(v.strip() for v in value.split(",") if v.strip())
    if not chosen or set(chosen) - set(allowed):
        raise UserError(f"--{option} {value!r}: choose from {', '.join(allowed)}")
    return chosen


def shots_setting(value: str) -> tuple[int, ...]:
    """--shots 4,8,16,all as (4, 8, 16, 0), in that order, each once; a one-line error else."""
    parsed = []
    for part in (p.strip() for p in value.split(",")):
        try:
            parsed.append(Shots().convert(part, None, None))
        except click.BadParameter:
            raise UserError(f"--shots {value!r}: expected comma-separated whole numbers >= 1 "
                            "or 'all'") from None
    return tuple(dict.fromkeys(parsed))


@main.command()
@click.option("--tasks-dir", required=True, type=click.Path(path_type=Path),
              help="A folder of HEAR tasks (or one task folder).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder.")
@click.option("--seeds", default=CompareConfig.seeds, show_default=True,
              type=click.IntRange(min=1))
@click.option("--shots", "shots_list", default="all", show_default=True,
              help="Comma-separated few-shot settings, train clips per class, e.g. 4,8,16,all: "
                   "every method runs at each (the same clips for every method of a seed) and "
                   "the report draws score vs shots.")
@with_options(*tuning_options(D), *CONTRASTIVE, GRID)
@click.option("--probes", default=",".join(DEFAULT_PROBES), show_default=True,
              help=f"Comma-separated subset of {', '.join(PROBES)}.")
@click.option("--methods", default=",".join(COMPARED_METHODS), show_default=True,
              help=f"Comma-separated subset of {', '.join(COMPARED_METHODS)}.")
@click.option("--folds", default="",
              help="k-fold tasks: comma-separated test folds to run (names like fold00, or "
                   "indices) for a quick run; default all. The report marks a subset.")
@click.option("--search", "search_trials", default=0, show_default=True,
              type=click.IntRange(min=0),
              help="Give every tuned method N trials of `contrastune search` on each task (on "
                   "valid; k-fold: the first fold's roles) and train its seeds with what it "
                   "found; tuning options given here stay fixed. 0: no search.")
@WORKERS
@DEVICE
@click.pass_context
def compare(ctx: click.Context, tasks_dir: Path, out: Path, seeds: int, shots_list: str,
            grid: str, probes: str, methods: str, folds: str, search_trials: int, workers: int,
            device: str | None, **tuning) -> None:
    """Frozen vs fine-tuning (vanilla and LP-FT) vs contrastive tuning under every probe, with a
    report that opens with a verdict (paired intervals over seeds and test clips). A rerun
    resumes: a step whose records OUT/results.json holds for the same options and task
    contents is reused (its predictions files suffice: models and embeddings may be gone)."""
    from hear_contrastune.comparison.compare import compare as run_compare
    from hear_contrastune.comparison.report.tables import summary_table

    cfg = CompareConfig(tasks_dir=tasks_dir, tuning=TuneConfig(**tuning), seeds=seeds, grid=grid,
                        probes=subset("probes", probes, PROBES),
                        methods=subset("methods", methods, COMPARED_METHODS),
                        folds=tuple(f.strip() for f in folds.split(",") if f.strip()),
                        shots=shots_setting(shots_list), search=search_trials,
                        search_fixed=tuple(
                            k for k in tuning if ctx.get_parameter_source(k)
                            == click.core.ParameterSource.COMMANDLINE))
    records = run_compare(cfg, out, device, workers, say=click.echo)
    click.echo(summary_table(records))


@main.command(epilog="May differ between the runs (they choose which records exist): "
               + ", ".join(f"--{o.replace('_', '-')}" for o in SELECTION if o != "tasks_dir")
               + ", and the tasks. Must match (they change the scores): every other compare "
               "option, the tuning's (--backbone, --epochs, --lr, ...), --grid and --search "
               "(and, with --search, which tuning options were given); a task in several "
               "runs must have the same contents.")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Report folder: gets report.md, index.html, plots/ and paired/ (a cache). "
                   "It may hold the runs in subfolders, not be inside one.")
def report(runs: tuple[Path, ...], out: Path) -> None:
    """One comparison report, verdict first, from several finished `compare` runs (RUNS):
    their results.json and per-clip predictions, e.g. one run per task. Runs whose options
    differ in one that changes results are refused, naming it."""
    from hear_contrastune.comparison.report import write_merged_report

    md, page = write_merged_report(list(runs), out)
    click.echo(f"report: {md}  {page}")


@main.command()
@click.option("--out", default="runs/quickstart", show_default=True,
              type=click.Path(path_type=Path))
@click.option("--task", default=quickstart_preset.TASK, show_default=True)
@click.option("--size", default=eval_tasks.DEFAULT_SIZE, show_default=True,
              type=click.Choice(eval_tasks.gm.SIZES))
@with_options(*tuning_options(quickstart_preset.TUNING))
@click.option("--grid", default=quickstart_preset.GRID, show_default=True,
              type=click.Choice(GRIDS),
              help="heareval's hyperparameter grid for the HEAR MLP and linear probes.")
@WORKERS
@DEVICE
def quickstart(out: Path, task: str, size: str, grid: str, workers: int, device: str | None,
               **tuning) -> None:
    """The main job: build a task, probe the untuned encoder, tune it, probe it again (a preset
    of `compare`: frozen and contrastive, one task, one seed)."""
    from hear_contrastune.comparison.quickstart import quickstart as run_quickstart

    click.echo(f"building task {task} ({size}) ...")
    task_dir = eval_tasks.build(task, out / "tasks", size=size)
    click.echo(run_quickstart(out, task_dir, TuneConfig(**tuning), grid, device, workers,
                              say=click.echo))


@main.command()
@click.option("--model", default=D.backbone, show_default=True)
@click.option("--device", default="cpu", show_default=True)
def validate(model: str, device: str) -> None:
    """Run the official HEAR validator on hear_contrastune with MODEL."""
    from hear_contrastune.validate import validate as run_validator

    result = run_validator(model, device)
    click.echo(result.stdout.rstrip())
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["validator failed"])[-1]
        raise UserError(f"HEAR validator rejected {model}: {last}")


if __name__ == "__main__":
    main()

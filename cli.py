"""`contrastune`: the command line of hear-contrastune.

Each command is a thin wrapper over one module of the package; user mistakes surface as one
line (`error: ...`, exit 2), never a traceback.
"""

import os
import sys
from pathlib import Path

import click

from hear_contrastune.errors import UserError


class Group(click.Group):
    """A click group that turns UserError into one line on stderr and exit status 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)


@click.group(cls=Group)
def main() -> None:
    """Contrastively tune pre-trained audio encoders and judge them with HEAR, linear and kNN
    probes."""
    import torch

    # Decaying notes reach float32's denormal range, where CPU LSTMs and convolutions crawl.
    torch.set_flush_denormal(True)


@main.group()
def tasks() -> None:
    """Build offline HEAR tasks (eval_tasks) and check task folders."""


@tasks.command("list")
def tasks_list() -> None:
    """List the tasks `tasks build` can make."""
    import eval_tasks

    for name, description in eval_tasks.list_tasks():
        click.echo(f"{name:18s} {description}")


@tasks.command("build")
@click.argument("names", nargs=-1)
@click.option("--all", "build_all", is_flag=True, help="Build every task.")
@click.option("--out", default="tasks", show_default=True, type=click.Path(path_type=Path))
@click.option("--size", default="full", show_default=True, type=click.Choice(["small", "full"]))
@click.option("--seed", default=0, show_default=True, type=int)
def tasks_build(names: tuple[str, ...], build_all: bool, out: Path, size: str, seed: int) -> None:
    """Build tasks NAMES (or --all) into OUT/<name>; complete ones are kept."""
    import eval_tasks

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

    for name, (_, description) in BACKBONES.items():
        click.echo(f"{name:26s} {description}")
    for _, usage, description in PREFIXES.values():
        click.echo(f"{usage:26s} {description}")


def training_options(fn):
    """Options shared by `tune` and `finetune`: the two differ only in head and loss."""
    options = [
        click.option("--task-dir", required=True, type=click.Path(path_type=Path),
                     help="A HEAR task folder (task_metadata.json, <split>.json, 16000/...)."),
        click.option("--out", required=True, type=click.Path(path_type=Path),
                     help="Run folder."),
        click.option("--backbone", default="resemblyzer", show_default=True),
        click.option("--epochs", default=30, show_default=True, type=click.IntRange(min=1)),
        click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=2)),
        click.option("--m-per-class", default=4, show_default=True, type=click.IntRange(min=2),
                     help="Clips per class (per label for multilabel) in each batch."),
        click.option("--lr", default=1e-4, show_default=True,
                     type=click.FloatRange(min=0, min_open=True)),
        click.option("--weight-decay", default=1e-4, show_default=True,
                     type=click.FloatRange(min=0)),
        click.option("--backbone-lr-scale", default=0.3, show_default=True,
                     type=click.FloatRange(min=0),
                     help="Learning-rate multiplier for the pretrained backbone weights "
                          "(new layers inside the backbone get --lr)."),
        click.option("--head-lr-scale", default=None, type=click.FloatRange(min=0, min_open=True),
                     help="Learning-rate multiplier for the head (default: 1 for tune's "
                          "projection, 100 for finetune's classifier)."),
        click.option("--grad-clip", default=1.0, show_default=True,
                     type=click.FloatRange(min=0),
                     help="Max gradient norm of the backbone (0: no clipping)."),
        click.option("--seed", default=0, show_default=True, type=int),
        click.option("--accumulate", default=1, show_default=True, type=click.IntRange(min=1),
                     help="Batches per optimiser step (a larger effective batch on one device; "
                          "each batch keeps its own negatives)."),
        click.option("--precision", default="fp32", show_default=True,
                     type=click.Choice(["fp32", "bf16", "fp16"]),
                     help="Mixed-precision autocast (CUDA only)."),
        click.option("--compile", is_flag=True, help="torch.compile the backbone and head."),
        click.option("--device", default=None,
                     help="cpu, cuda, cuda:1 ... (default: cuda if present; under torchrun, "
                          "each process's local GPU)"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def run_training(method: str, task_dir: Path, out: Path, device: str | None, **options) -> None:
    from hear_contrastune.tune import TuneConfig, tune

    cfg = TuneConfig(task_dir=str(task_dir), method=method, **options)
    best = tune(cfg, out, device)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line, not one per process
        click.echo(f"best checkpoint: {best}")


@main.command()
@training_options
@click.option("--temperature", default=0.1, show_default=True,
              type=click.FloatRange(min=0, min_open=True))
@click.option("--loss", default="auto", show_default=True,
              type=click.Choice(["auto", "supcon", "jaccard-supcon", "any-shared-supcon"]),
              help="auto: supcon for multiclass tasks, jaccard-supcon for multilabel ones; "
                   "any-shared-supcon: any shared label makes a positive.")
def tune(**options) -> None:
    """Contrastively tune a backbone on a task; keeps the best epoch as OUT/best.pt."""
    run_training("contrastive", **options)


@main.command()
@training_options
def finetune(**options) -> None:
    """Vanilla fine-tuning baseline: backbone + linear classifier, cross-entropy (BCE for
    multilabel), with tune's data, views, optimiser and model selection."""
    run_training("finetune", **options)


@main.command()
@click.option("--model", required=True,
              help="A checkpoint (runs/<name>/best.pt) or a backbone name for the untuned encoder.")
@click.option("--tasks-dir", required=True, type=click.Path(path_type=Path),
              help="A folder of HEAR tasks, or one task folder.")
@click.option("--out", default="embeddings", show_default=True, type=click.Path(path_type=Path))
@click.option("--name", default=None, help="Model folder name under OUT (default: from --model).")
@click.option("--device", default=None)
def embed(model: str, tasks_dir: Path, out: Path, name: str | None, device: str | None) -> None:
    """Write heareval's embeddings layout (OUT/<name>/<task>) for every task."""
    from hear_contrastune.embed import embed_tasks

    for d in embed_tasks(model, tasks_dir, out, name, device):
        click.echo(str(d))


@tasks.command("import")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--out", default="tasks", show_default=True, type=click.Path(path_type=Path),
              help="Tasks folder; the task goes to OUT/<name>.")
@click.option("--name", default=None, help="Task name (default: from SOURCE).")
@click.option("--duration", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Clip length in seconds (default: the median length, to 0.1 s).")
@click.option("--split", default="trainvaltest", show_default=True,
              type=click.Choice(["trainvaltest", "kfold"]))
@click.option("--folds", default=5, show_default=True, type=click.IntRange(min=3))
@click.option("--valid-fraction", default=0.15, show_default=True, type=float)
@click.option("--test-fraction", default=0.15, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
def tasks_import(source: Path, out: Path, **options) -> None:
    """Make a HEAR task from your own audio: SOURCE is a folder with one subfolder per class,
    or a CSV of `path,labels` (labels separated by ';'; several on a row -> multilabel)."""
    from eval_tasks.importer import import_task

    click.echo(str(import_task(source, out, **options)))


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
@click.option("--metric", default="cosine", show_default=True,
              type=click.Choice(["cosine", "euclidean"]))
@click.option("--weighting", default="uniform", show_default=True,
              type=click.Choice(["uniform", "similarity"]),
              help="similarity: votes weighted by exp(similarity / temperature).")
@click.option("--temperature", default=0.07, show_default=True, type=float)
@click.option("--device", default=None, help="cpu or cuda (default: cuda if present).")
@click.option("--force", is_flag=True, help="Probe again tasks that already have results.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def knn_probe(emb_task_dirs: tuple[Path, ...], k_grid: tuple[int, ...], as_json: bool,
              **options) -> None:
    """kNN probe of heareval embeddings folders; writes test.knn-predicted-scores.json."""
    import json

    from hear_contrastune.knn_probe import DEFAULT_K_GRID, format_table, run_knn_probe

    results = run_knn_probe(list(emb_task_dirs), k_grid or DEFAULT_K_GRID, **options)
    click.echo(json.dumps(results, indent=2) if as_json else format_table(results))


@main.command("linear-probe")
@click.argument("emb_task_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--grid", default="default", show_default=True,
              type=click.Choice(["default", "fast", "faster"]),
              help="heareval's learning-rate grid (with hidden_layers fixed at 0).")
@click.option("--force", is_flag=True, help="Probe again tasks that already have results.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def linear_probe(emb_task_dirs: tuple[Path, ...], grid: str, force: bool, as_json: bool) -> None:
    """Strictly linear probe with heareval's own predictor; writes
    test.linear-predicted-scores.json."""
    import json

    from hear_contrastune.hear_eval import test_score
    from hear_contrastune.linear_probe import run_linear_probe

    results = run_linear_probe(list(emb_task_dirs), grid=grid, force=force)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    for r in results if not as_json else []:
        note = " (skipped: output exists)" if r["skipped"] else ""
        click.echo(f"{r['task']:20s} {test_score(r['result']):.4f}  {r['output']}{note}")


@main.command()
@click.option("--tasks-dir", required=True, type=click.Path(path_type=Path),
              help="A folder of HEAR tasks (or one task folder).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder.")
@click.option("--backbone", default="resemblyzer", show_default=True)
@click.option("--seeds", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--epochs", default=30, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=2))
@click.option("--lr", default=1e-4, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--grid", default="default", show_default=True,
              type=click.Choice(["default", "fast", "faster"]),
              help="heareval's hyperparameter grid for the HEAR and linear probes.")
@click.option("--probes", default="hear,linear,knn", show_default=True,
              help="Comma-separated subset of hear, linear, knn.")
@click.option("--methods", default="frozen,finetune,contrastive", show_default=True,
              help="Comma-separated subset of frozen, finetune, contrastive.")
@click.option("--device", default=None)
def compare(tasks_dir: Path, out: Path, probes: str, methods: str, device: str | None,
            **options) -> None:
    """Frozen vs vanilla fine-tuning vs contrastive tuning under every probe, with a report."""
    from hear_contrastune.compare import METHODS, PROBES, CompareConfig, summary_table
    from hear_contrastune.compare import compare as run_compare

    def subset(option: str, value: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
        chosen = tuple(v.strip() for v in value.split(",") if v.strip())
        if not chosen or set(chosen) - set(allowed):
            raise UserError(f"--{option} {value!r}: choose from {', '.join(allowed)}")
        return chosen

    cfg = CompareConfig(tasks_dir=tasks_dir, probes=subset("probes", probes, PROBES),
                        methods=subset("methods", methods, METHODS), **options)
    records = run_compare(cfg, out, device)
    click.echo(summary_table(records))


@main.command()
@click.option("--out", default="runs/quickstart", show_default=True,
              type=click.Path(path_type=Path))
@click.option("--task", default="gm-program", show_default=True)
@click.option("--size", default="full", show_default=True, type=click.Choice(["small", "full"]))
@click.option("--backbone", default="resemblyzer", show_default=True)
@click.option("--epochs", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=2))
@click.option("--m-per-class", default=4, show_default=True, type=click.IntRange(min=2))
@click.option("--grid", default="fast", show_default=True,
              type=click.Choice(["default", "fast", "faster"]),
              help="heareval's hyperparameter grid for its MLP probe.")
def quickstart(out: Path, **options) -> None:
    """The main job: build a task, probe the untuned encoder, tune it, probe it again."""
    from hear_contrastune.quickstart import quickstart as run_quickstart

    click.echo(run_quickstart(out, **options))


@main.command()
@click.option("--model", default="resemblyzer", show_default=True)
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

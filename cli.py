"""`contrastune`: the command line of hear-contrastune.

Each command is a thin wrapper over one module of the package; user mistakes surface as one
line (`error: ...`, exit 2), never a traceback.
"""

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
    from hear_contrastune.backbones import BACKBONES

    for name, (_, description) in BACKBONES.items():
        click.echo(f"{name:14s} {description}")


@main.command()
@click.option("--task-dir", required=True, type=click.Path(path_type=Path),
              help="A HEAR task folder (task_metadata.json, <split>.json, 16000/<split>/*.wav).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder.")
@click.option("--backbone", default="resemblyzer", show_default=True)
@click.option("--epochs", default=30, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=2))
@click.option("--m-per-class", default=4, show_default=True, type=click.IntRange(min=2),
              help="Clips per class (per label for multilabel) in each batch.")
@click.option("--lr", default=1e-4, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--weight-decay", default=1e-4, show_default=True, type=click.FloatRange(min=0))
@click.option("--temperature", default=0.1, show_default=True,
              type=click.FloatRange(min=0, min_open=True))
@click.option("--loss", default="auto", show_default=True,
              type=click.Choice(["auto", "supcon", "jaccard-supcon", "any-shared-supcon"]),
              help="auto: supcon for multiclass tasks, jaccard-supcon for multilabel ones.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
def tune(task_dir: Path, out: Path, device: str | None, **options) -> None:
    """Contrastively tune a backbone on a task; keeps the best epoch as OUT/best.pt."""
    from hear_contrastune.tune import TuneConfig
    from hear_contrastune.tune import tune as run_tune

    best = run_tune(TuneConfig(task_dir=str(task_dir), **options), out, device)
    click.echo(f"best checkpoint: {best}")


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


@main.command()
@click.option("--out", default="runs/quickstart", show_default=True,
              type=click.Path(path_type=Path))
@click.option("--task", default="gm-program", show_default=True)
@click.option("--size", default="full", show_default=True, type=click.Choice(["small", "full"]))
@click.option("--backbone", default="resemblyzer", show_default=True)
@click.option("--epochs", default=30, show_default=True, type=click.IntRange(min=1))
@click.option("--grid", default="default", show_default=True,
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

"""The command line's shared options, declared once with their defaults read from the
configuration dataclasses (training.config.TuneConfig, the probes' constants),
so `contrastune`'s commands and the library cannot disagree on a default."""

import json
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path

import click

from hear_contrastune.data.hear_format import read_json
from hear_contrastune.data.loading import DEFAULT_WORKERS
from hear_contrastune.data.shots import ALL_SHOTS
from hear_contrastune.errors import UserError
from hear_contrastune.probes.hear_mlp import DEFAULT_GRID, GRIDS
from hear_contrastune.training.config import (
    BATCH_SIZE,
    CONTRASTIVE_LOSSES,
    HEAD_LR_SCALE,
    M_PER_CLASS,
    PRECISIONS,
    SELECT_RULES,
    VARIABLE_CLIP_SECONDS,
    TuneConfig,
)
from hear_contrastune.training.config import DEFAULTS as D


def with_options(*options: Callable) -> Callable:
    """Apply click options in the order they are listed (as they show in --help)."""
    def apply(fn: Callable) -> Callable:
        for option in reversed(options):
            fn = option(fn)
        return fn
    return apply


WORKERS = click.option("--workers", default=DEFAULT_WORKERS, show_default=True,
                       type=click.IntRange(min=0),
                       help="DataLoader processes decoding audio (0: in the main process).")
DEVICE = click.option("--device", default=None,
                      help="cpu, cuda, cuda:1 ... (default: cuda if present; under torchrun, "
                           "each process's local GPU)")
GRID = click.option("--grid", default=DEFAULT_GRID, show_default=True, type=click.Choice(GRIDS),
                    help="heareval's hyperparameter grid for the HEAR MLP and linear probes.")
def tuning_options(d: TuneConfig) -> tuple[Callable, ...]:
    """Options of every tuned run (`tune`, `finetune`, `compare`, `quickstart`), defaulting to
    `d`'s values: TuneConfig is their one source."""
    return (
        click.option("--backbone", default=d.backbone, show_default=True),
        click.option("--epochs", default=d.epochs, show_default=True, type=click.IntRange(min=1)),
        click.option("--batch-size", default=d.batch_size, type=click.IntRange(min=2),
                     help=f"Clips per batch (default: fitted to the task: {BATCH_SIZE}, or "
                          "every class in each batch when the task has fewer classes than "
                          "that holds, and never more than its train clips; the log says "
                          "what was chosen)."),
        click.option("--m-per-class", default=d.m_per_class, type=click.IntRange(min=2),
                     help=f"Clips per class (per label for multilabel) in each batch "
                          f"(default: {M_PER_CLASS}, raised so that every class fits when the "
                          "task has few; a class with fewer clips repeats them in new views)."),
        click.option("--lr", default=d.lr, show_default=True,
                     type=click.FloatRange(min=0, min_open=True)),
        click.option("--weight-decay", default=d.weight_decay, show_default=True,
                     type=click.FloatRange(min=0)),
        click.option("--backbone-lr-scale", default=d.backbone_lr_scale, show_default=True,
                     type=click.FloatRange(min=0),
                     help="Learning-rate multiplier for the pretrained backbone weights "
                          "(new layers inside the backbone get --lr)."),
        click.option("--head-lr-scale", default=d.head_lr_scale,
                     type=click.FloatRange(min=0, min_open=True),
                     help="Learning-rate multiplier for the head (default: "
                          + ", ".join(f"{v:g} for {k}" for k, v in HEAD_LR_SCALE.items()) + ")."),
        click.option("--grad-clip", default=d.grad_clip, show_default=True,
                     type=click.FloatRange(min=0),
                     help="Max gradient norm of the backbone (0: no clipping)."),
        click.option("--warmup-epochs", default=d.warmup_epochs, show_default=True,
                     type=click.FloatRange(min=0),
                     help="Epochs (fractions too) of linear learning-rate warm-up before the "
                          "cosine decay (0: none)."),
        click.option("--accumulate", default=d.accumulate, show_default=True,
                     type=click.IntRange(min=1),
                     help="Batches per optimiser step (a larger effective batch on one device; "
                          "each batch keeps its own negatives)."),
        click.option("--precision", default=d.precision, show_default=True,
                     type=click.Choice(PRECISIONS),
                     help="Autocast of the training forward pass: bf16 runs on the CPU too "
                          "(Resemblyzer 1.8x faster, slightly lower valid kNN); fp16 needs "
                          "CUDA."),
        click.option("--compile", is_flag=True, help="torch.compile the backbone and head."),
        click.option("--clip-seconds", default=d.clip_seconds,
                     type=click.FloatRange(min=0, min_open=True),
                     help="Training crop length: shorter clips are zero-padded, longer ones "
                          "randomly cropped (default: the task's clip length, or "
                          f"{VARIABLE_CLIP_SECONDS:g} s when clips vary in length)."),
        click.option("--select-max-clips", default=d.select_max_clips, show_default=True,
                     type=click.IntRange(min=2),
                     help="Model selection's valid kNN uses at most this many train and valid "
                          "clips each (a seeded sample, the same every epoch)."),
        click.option("--select", default=d.select, show_default=True,
                     type=click.Choice(SELECT_RULES),
                     help="Which epoch becomes best.pt: the best valid kNN (epoch 0, the "
                          "untuned encoder, included), the last, or the best of the valid curve "
                          "smoothed by a centred 3-epoch mean (less swayed by a lucky epoch on a "
                          "small valid split)."),
        click.option("--patience", default=d.patience, show_default=True,
                     type=click.IntRange(min=0),
                     help="Stop once the --select score has not improved for this many epochs "
                          "(done.json says so; 0: run every epoch)."),
        click.option("--select-every", default=d.select_every, show_default=True,
                     type=click.IntRange(min=1),
                     help="Score valid after every this many epochs (epoch 0 and the last "
                          "always): scoring costs ~a quarter of an epoch, and skipping every "
                          "other one changed no kept score on the valid curves we have."),
    )


# Options of contrastive tuning only.
CONTRASTIVE = (
    click.option("--temperature", default=D.temperature, show_default=True,
                 type=click.FloatRange(min=0, min_open=True)),
    click.option("--loss", default=D.loss, show_default=True,
                 type=click.Choice(["auto", *CONTRASTIVE_LOSSES]),
                 help="auto: supcon for multiclass tasks, jaccard-supcon for multilabel ones; "
                      "any-shared-supcon: any shared label makes a positive."),
    click.option("--xbm-size", default=D.xbm_size, show_default=True,
                 type=click.IntRange(min=0),
                 help="Cross-batch memory: the loss also contrasts each clip with this many "
                      "recent embeddings (2 per clip; under torchrun, of the global batch), for "
                      "more negatives than a small device's batch holds. Emptied at each "
                      "epoch's start; must exceed 2 x --batch-size (0: off)."),
)
class Shots(click.ParamType):
    """Train clips per class: a whole number >= 1, or 'all' (0, every train clip)."""

    name = "N|all"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text == "all":
            return ALL_SHOTS
        if not text.isdigit() or int(text) < 1:
            self.fail(f"{value!r}: expected a whole number >= 1 or 'all'", param, ctx)
        return int(text)


SHOTS = click.option("--shots", default="all", show_default=True, type=Shots(),
                     help="Few-shot: train on N clips per class (for multilabel tasks, at least "
                          "N per label), drawn by --seed the same for every method; valid and "
                          "test stay whole.")
RUN = (
    click.option("--task-dir", required=True, type=click.Path(path_type=Path),
                 help="A HEAR task folder (task_metadata.json, <split>.json, 16000/...)."),
    click.option("--fold", default=D.fold,
                 help="k-fold tasks: the test fold (e.g. fold00); trains on the others but the "
                      "next one, which validates, as heareval assigns them."),
    click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder."),
    click.option("--seed", default=D.seed, show_default=True, type=int),
)


def load_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    """--config FILE: a search's best.json (or any JSON of TuneConfig fields) becomes the
    defaults of this command's options; options given on the command line still win."""
    if value is None:
        return
    doc = read_json(Path(value))
    config = doc.get("config", doc) if isinstance(doc, dict) else None
    if not isinstance(config, dict):
        raise UserError(f"--config {value}: expected a JSON object of tuning options")
    method = doc.get("method")
    commands = {"contrastive": "tune", "finetune": "finetune", "lpft": "finetune"}
    if method in commands and commands[method] != ctx.info_name:
        raise UserError(f"--config {value}: a configuration for {method}; use `contrastune "
                        f"{commands[method]}`")
    known = {f.name for f in fields(TuneConfig)}
    options = {p.name for p in ctx.command.params}
    defaults = json.loads(json.dumps(asdict(D)))  # as a JSON file holds them
    for key, setting in config.items():
        if key not in known:
            raise UserError(f"--config {value}: {key!r} is not a tuning option")
        if key not in options and setting != defaults[key]:
            raise UserError(f"--config {value}: sets {key} = {setting!r}, which this command "
                            "has no option for")
    ctx.default_map = {**(ctx.default_map or {}),
                       **{k: v for k, v in config.items() if k in options}}
    ctx.meta["config_method"] = (method, value)


CONFIG = click.option("--config", type=click.Path(path_type=Path), is_eager=True,
                      expose_value=False, callback=load_config,
                      help="A JSON file of tuning options, e.g. a search's best.json: its "
                           "values become the defaults; options given here still win.")

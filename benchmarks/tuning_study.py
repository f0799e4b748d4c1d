"""Tuning study on valid splits only: contrastive tuning and fine-tuning, each with the same
search budget, on every task of the eval_tasks suite.

Each method gets the same configurations: its defaults (TuneConfig, HEAD_LR_SCALE) and one
factor changed at a time (backbone learning rate /3 or x3, i.e. 1e-5 or 9e-5 around 3e-5; head
learning rate /10 or x10 around the method's own; backbone gradient clipping off; a linear
warm-up over 10% of the epochs; temperature 0.05 or 0.2 around 0.1; half the epochs), each run
for the same epochs and seeds. One factor at a time shows each factor's effect around defaults
that are known to work, not their interactions. The selection rule (best, last, smoothed) is
applied to every run's valid curve afterwards with `choose_epoch`, the function `tune` selects
with: a rule changes which epoch is kept, never the training, so one run serves all three.

k-fold tasks use one fold's roles (fold00: train on folds 02-04, valid fold01); the table says
so. Test splits are never read: `tune` trains on train and scores valid. A rule's score is the
valid kNN of the epoch it kept, on the valid split it kept it by: "best" takes the maximum of a
noisy curve and so is optimistic by construction, most of all on small valid splits; read the
rules' columns with that in mind (the seed spread and the chosen epochs say more).

    python benchmarks/tuning_study.py --out runs/tuning-study            # hours: every task
    python benchmarks/tuning_study.py --out /tmp/ts --size small --epochs 1 --seeds 1 \\
        --tasks gm-program,gm-phrase-5fold --configs defaults,warmup       # a minute

Resumable: every run lives in OUT/runs/<task>/<method>/<config>-seed<k>, and `tune` skips a
finished run and resumes a killed one. OUT/runs.csv has one row per (task, method,
configuration, rule, seed); OUT/summary.csv and OUT/table.md the mean ± std over seeds.
"""

import csv
import io
import logging
import math
from dataclasses import replace
from pathlib import Path

import click
import numpy as np
import torch

import eval_tasks
from hear_contrastune.atomic import write_text
from hear_contrastune.data.hear_format import fold_roles
from hear_contrastune.data.task import load_task
from hear_contrastune.embed import DEFAULT_WORKERS
from hear_contrastune.training.config import (
    DEFAULTS,
    METHODS,
    SELECT_RULES,
    TuneConfig,
)
from hear_contrastune.training.loop import tune
from hear_contrastune.training.run_log import read_csv
from hear_contrastune.training.selection import choose_epoch

WARMUP_FRACTION = 0.1  # of the run's epochs
# The small builds hold 12-36 training clips, fewer than one default batch.
SIZE_OPTIONS = {"small": {"batch_size": 8, "m_per_class": 2}, "full": {}}
HYPERPARAMETERS = ("backbone_lr", "head_lr", "grad_clip", "warmup_epochs", "temperature",
                   "epochs")


def configurations(base: TuneConfig) -> dict[str, TuneConfig]:
    """One factor at a time around `base` (a resolved config of one method); the same names,
    factors and steps for every method, so both get the same search budget. A change that gives
    `base` again (half of 1 epoch) is left out, for every method alike."""
    changes = {
        "defaults": {},
        "backbone-lr-div3": {"backbone_lr_scale": base.backbone_lr_scale / 3},
        "backbone-lr-x3": {"backbone_lr_scale": base.backbone_lr_scale * 3},
        "head-lr-div10": {"head_lr_scale": base.head_lr_scale / 10},
        "head-lr-x10": {"head_lr_scale": base.head_lr_scale * 10},
        "no-clip": {"grad_clip": 0.0},
        "warmup": {"warmup_epochs": WARMUP_FRACTION * base.epochs},
        "temperature-0.05": {"temperature": 0.05},
        "temperature-0.2": {"temperature": 0.2},
        "half-epochs": {"epochs": max(1, base.epochs // 2)},
    }
    configs: dict[str, TuneConfig] = {}
    for name, change in changes.items():
        cfg = replace(base, **change)
        if name == "defaults" or cfg != base:
            configs[name] = cfg
    return configs


def hyperparameters(cfg: TuneConfig) -> dict[str, float]:
    return {"backbone_lr": cfg.lr * cfg.backbone_lr_scale, "head_lr": cfg.lr * cfg.head_lr_scale,
            "grad_clip": cfg.grad_clip, "warmup_epochs": cfg.warmup_epochs,
            "temperature": cfg.temperature, "epochs": cfg.epochs}


def study_fold(task_dir: Path) -> tuple[str, str]:
    """The fold a task is tuned on ("" for train/valid/test tasks) and a note saying which."""
    task = load_task(task_dir)
    if not task.kfold:
        return "", ""
    roles = fold_roles(task)[0]
    return roles["test"][0], (f"{task.name}: k-fold, {roles['test'][0]}'s roles only (train "
                              f"{'+'.join(roles['train'])}, valid {roles['valid'][0]})")


def rule_rows(run: Path) -> list[dict]:
    """What each selection rule keeps of a finished run's valid curve."""
    log = read_csv(run / "epochs.csv")
    scores, head = log["valid_knn"].tolist(), log.get("valid_head")
    rows = []
    for rule in SELECT_RULES:
        epoch, _ = choose_epoch(rule, scores, finished=True)
        rows.append({"select": rule, "epoch": epoch, "valid_knn": scores[epoch],
                     "valid_head": "" if head is None else head[epoch]})
    return rows


def csv_text(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def summarise(rows: list[dict]) -> list[dict]:
    """Mean ± std over seeds of every (task, method, configuration, rule)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["method"], row["config"], row["select"]),
                          []).append(row)
    summary = []
    for (task, method, config, rule), runs in groups.items():
        values = np.array([r["valid_knn"] for r in runs])
        summary.append({"task": task, "fold": runs[0]["fold"], "method": method,
                        "config": config, **{h: runs[0][h] for h in HYPERPARAMETERS},
                        "select": rule, "seeds": len(runs), "valid_knn_mean": values.mean(),
                        "valid_knn_std": values.std(ddof=1) if len(runs) > 1 else math.nan,
                        "epochs_chosen": " ".join(str(r["epoch"]) for r in runs)})
    return summary


def table(summary: list[dict]) -> str:
    """One row per (task, method, configuration); the rules side by side."""
    cells: dict[tuple, dict] = {}
    for s in summary:
        key = (s["task"], s["method"], s["config"])
        cells.setdefault(key, {"s": s})[s["select"]] = (
            f"{s['valid_knn_mean']:.3f}" + ("" if math.isnan(s["valid_knn_std"])
                                            else f" ± {s['valid_knn_std']:.3f}")
            + f" @{s['epochs_chosen'].replace(' ', ',')}")
    lines = ["| task | method | configuration | backbone lr | head lr | clip | warm-up | τ | "
             "epochs | " + " | ".join(SELECT_RULES) + " |",
             "|---|---|---|---:|---:|---|---:|---:|---:|" + "---|" * len(SELECT_RULES)]
    for (task, method, config), row in cells.items():
        s = row["s"]
        lines.append(f"| {task} | {method} | {config} | {s['backbone_lr']:.0e} | "
                     f"{s['head_lr']:.0e} | {'on' if s['grad_clip'] else 'off'} | "
                     f"{s['warmup_epochs']:g} | {s['temperature']:g} | {s['epochs']} | "
                     + " | ".join(row.get(rule, "–") for rule in SELECT_RULES) + " |")
    return "\n".join(lines)


@click.command()
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--tasks", "task_names", default=",".join(eval_tasks.TASKS), show_default=True,
              help="Comma-separated eval_tasks names.")
@click.option("--seeds", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--size", default="full", show_default=True, type=click.Choice(eval_tasks.gm.SIZES),
              help="Task size; small (with batches of 8) is for a smoke test.")
@click.option("--epochs", default=DEFAULTS.epochs, show_default=True, type=click.IntRange(min=1))
@click.option("--configs", "config_names", default="",
              help="Comma-separated configuration names to run, for both methods (default: all; "
                   "'defaults,warmup' for a quick look).")
@click.option("--backbone", default=DEFAULTS.backbone, show_default=True)
@click.option("--device", default=None)
@click.option("--workers", default=DEFAULT_WORKERS, show_default=True, type=click.IntRange(min=0))
def main(out: Path, task_names: str, seeds: int, size: str, epochs: int, config_names: str,
         backbone: str, device: str | None, workers: int) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_flush_denormal(True)  # as the CLI does
    names = [n.strip() for n in task_names.split(",") if n.strip()]
    wanted = {n.strip() for n in config_names.split(",") if n.strip()}
    task_dirs = {name: eval_tasks.build(name, out / f"tasks-{size}", size=size) for name in names}
    folds = {name: study_fold(task_dir) for name, task_dir in task_dirs.items()}
    plan = []
    for seed in range(seeds):  # a killed study has every task's first seed before any second
        for name, task_dir in task_dirs.items():
            for method in METHODS:
                base = TuneConfig(task_dir=str(task_dir), fold=folds[name][0], backbone=backbone,
                                  method=method, epochs=epochs, seed=seed,
                                  # whole curves: each rule (and patience) is replayed on them
                                  patience=0, **SIZE_OPTIONS[size]).resolved()
                configs = configurations(base)
                unknown = wanted - set(configs) - {"half-epochs"}  # dropped when epochs is 1
                if unknown:
                    raise click.BadParameter(f"{', '.join(sorted(unknown))}: choose from "
                                             f"{', '.join(configs)}", param_hint="--configs")
                plan += [(name, method, config, cfg) for config, cfg in configs.items()
                         if not wanted or config in wanted]
    per_method = {m: sum(p[1] == m for p in plan) for m in METHODS}
    click.echo(f"search budget per method: {per_method} runs ({len(names)} tasks x {seeds} "
               f"seeds x configurations), {epochs} epochs each (half-epochs: {epochs // 2 or 1})")
    rows = []
    for i, (name, method, config, cfg) in enumerate(plan, 1):
        run = out / "runs" / name / method / f"{config}-seed{cfg.seed}"
        tune(cfg, run, device, workers)
        for rule in rule_rows(run):
            rows.append({"task": name, "fold": cfg.fold, "method": method, "config": config,
                         **hyperparameters(cfg), "seed": cfg.seed, **rule, "run": str(run)})
        best = next(r for r in rows[-len(SELECT_RULES):] if r["select"] == "best")
        click.echo(f"[{i}/{len(plan)}] {name} {method} {config} seed {cfg.seed}: best valid kNN "
                   f"{best['valid_knn']:.4f} (epoch {best['epoch']})")
    summary = summarise(rows)
    write_text(out / "runs.csv", csv_text(rows))
    write_text(out / "summary.csv", csv_text(summary))
    notes = [note for _, note in folds.values() if note]
    base = plan[0][3]
    header = [f"Valid splits only ({size} tasks, {backbone}, {seeds} seed(s), {epochs} epochs, "
              f"batch {base.batch_size}, {base.m_per_class} clips per class): valid kNN of the "
              "epoch each rule keeps, mean ± std over seeds @ the epochs chosen. 'best' is "
              "optimistic by construction (the maximum of a noisy curve).", *notes, ""]
    text = "\n".join(header) + "\n" + table(summary) + "\n"
    write_text(out / "table.md", text)
    click.echo(text)
    click.echo(f"wrote {out / 'table.md'}, {out / 'summary.csv'}, {out / 'runs.csv'}")


if __name__ == "__main__":
    main()

"""How each tuning method's learning rates behave on a task, judged on the valid split only.

A fair comparison gives the baseline its own hyperparameters. This runs `tune` for a grid of
(method, lr, backbone-lr-scale, head-lr-scale) on one task and prints, for each run, the best
valid kNN score (what `tune` selects epochs by), the epoch it came at, the fine-tuned
classifier's best valid score, and the last training loss. Test splits are never read. Run by hand:

    python benchmarks/finetune_study.py --out runs/study [--task gm-program] [--epochs 30]

Runs are cached under OUT/<name> (rerun to resume); the table goes to OUT/table.md.
"""

from pathlib import Path

import click
import numpy as np

import eval_tasks
from hear_contrastune.atomic import write_text
from hear_contrastune.training.config import DEFAULTS, TuneConfig
from hear_contrastune.training.loop import tune
from hear_contrastune.training.run_log import read_csv

# name -> (method, lr, backbone_lr_scale, head_lr_scale): the head's scale is what is studied,
# at tune's own learning rates
LR, SCALE = DEFAULTS.lr, DEFAULTS.backbone_lr_scale
GRID = {
    "finetune-head1x": ("finetune", LR, SCALE, 1.0),
    "finetune-head10x": ("finetune", LR, SCALE, 10.0),
    "finetune-head100x": ("finetune", LR, SCALE, 100.0),
    "contrastive-head1x": ("contrastive", LR, SCALE, 1.0),
}


def best_row(epochs_csv: Path) -> dict[str, str]:
    """The summary of one run's epochs.csv: its best valid kNN epoch, best head score, last loss."""
    log = read_csv(epochs_csv)
    best = int(np.nanargmax(log["valid_knn"]))
    head = log.get("valid_head")
    return {"valid_knn": f"{log['valid_knn'][best]:.4f} (epoch {int(log['epoch'][best])})",
            "epoch0": f"{log['valid_knn'][0]:.4f}",
            "valid_head": f"{np.nanmax(head):.4f}" if head is not None else "-",
            "last_loss": f"{log['loss'][-1]:.3f}"}


@click.command()
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--task", default="gm-program", type=click.Choice(
    [n for n, _ in eval_tasks.list_tasks() if n != "gm-family-5fold"]))
@click.option("--backbone", default=DEFAULTS.backbone)
@click.option("--epochs", default=DEFAULTS.epochs, type=int)
@click.option("--only", multiple=True, help="Run only these grid entries (repeatable).")
def main(out: Path, task: str, backbone: str, epochs: int, only: tuple[str, ...]) -> None:
    task_dir = eval_tasks.build(task, out / "tasks", size="full")
    lines = [f"{task} (full), valid split only, {backbone}, {epochs} epochs", "",
             "| run | lr | backbone lr | head lr | best valid kNN | untuned | best valid head |"
             " last loss |", "|---|---:|---:|---:|---|---:|---:|---:|"]
    for name, (method, lr, backbone_scale, head_scale) in GRID.items():
        if only and name not in only:
            continue
        cfg = TuneConfig(task_dir=str(task_dir), backbone=backbone, method=method, lr=lr,
                         backbone_lr_scale=backbone_scale, head_lr_scale=head_scale,
                         epochs=epochs)
        tune(cfg, out / name)
        row = best_row(out / name / "epochs.csv")
        lines.append(f"| {name} | {lr:g} | {lr * backbone_scale:g} | {lr * head_scale:g} | "
                     f"{row['valid_knn']} | {row['epoch0']} | {row['valid_head']} | "
                     f"{row['last_loss']} |")
        click.echo(lines[-1])
    table = "\n".join(lines)
    write_text(out / "table.md", table + "\n")
    click.echo(table)


if __name__ == "__main__":
    main()

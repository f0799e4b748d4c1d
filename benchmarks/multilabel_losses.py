"""Multi-label tuning objectives side by side, under the HEAR, linear and kNN probes.

On the gm-family-mix task (mixtures of 1-3 General-MIDI notes, labels = instrument families
present): the frozen encoder, Jaccard-weighted SupCon, SupCon with "any shared label =
positive", and vanilla BCE fine-tuning, each with the same data, views, optimiser, budget and
model selection. Run by hand:

    python benchmarks/multilabel_losses.py --out runs/multilabel [--size full] [--epochs 20]

Every stage is cached under OUT (rerun to resume); the table is printed and written to
OUT/table.md.
"""

from pathlib import Path

import click

import eval_tasks
from hear_contrastune.atomic import write_text
from hear_contrastune.comparison.compare import run_probes
from hear_contrastune.comparison.run_layout import DEFAULT_PROBES as PROBES
from hear_contrastune.embed import embed_tasks
from hear_contrastune.training.config import TuneConfig
from hear_contrastune.training.loop import tune

VARIANTS = {  # name -> (method, loss); None = the frozen encoder
    "frozen": None,
    "jaccard-supcon": ("contrastive", "jaccard-supcon"),
    "any-shared-supcon": ("contrastive", "any-shared-supcon"),
    "finetune-bce": ("finetune", "bce"),
}


@click.command()
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--size", default="full", type=click.Choice(["small", "full"]))
@click.option("--backbone", default="resemblyzer")
@click.option("--epochs", default=20, type=int)
@click.option("--batch-size", default=64, type=int)
@click.option("--grid", default="fast", type=click.Choice(["default", "fast", "faster"]))
def main(out: Path, size: str, backbone: str, epochs: int, batch_size: int, grid: str) -> None:
    task_dir = eval_tasks.build("gm-family-mix", out / "tasks", size=size)
    rows = {}
    for name, variant in VARIANTS.items():
        model = backbone
        if variant:
            method, loss = variant
            cfg = TuneConfig(task_dir=str(task_dir), backbone=backbone, method=method,
                             loss=loss, epochs=epochs, batch_size=batch_size)
            model = str(tune(cfg, out / "models" / name))
        emb_dir = embed_tasks(model, task_dir, out / "embeddings", name)[0]
        rows[name] = run_probes(emb_dir, PROBES, grid)
        click.echo(f"{name}: " + "  ".join(f"{p} {s:.4f}" for p, s in rows[name].items()))
    lines = [f"gm-family-mix ({size}), test mAP, {backbone}, {epochs} epochs", "",
             "| objective | HEAR MLP | linear | kNN |", "|---|---:|---:|---:|"]
    lines += [f"| {n} | " + " | ".join(f"{s[p]:.4f}" for p in PROBES) + " |"
              for n, s in rows.items()]
    table = "\n".join(lines)
    write_text(out / "table.md", table + "\n")
    click.echo(table)


if __name__ == "__main__":
    main()

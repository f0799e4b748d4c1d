"""The main job: build a task, score the untuned encoder, tune it, score the tuned one.

Every stage writes complete outputs or none and is skipped when its output exists, so a killed
run resumes where it stopped. Layout under OUT:

    tasks/<task>/                     the HEAR task (eval_tasks)
    embeddings/<model>/<task>/        heareval's layout, with each probe's scores beside it
    runs/<backbone>-supcon/           the tuning run (best.pt, epochs.csv, steps.csv)
    results.json, results.md          the table printed at the end
"""

import json
import time
from pathlib import Path

import click

import eval_tasks
from hear_contrastune.atomic import write_json, write_text
from hear_contrastune.backbones import DEFAULT_BACKBONE
from hear_contrastune.compare import PROBES, probe
from hear_contrastune.embed import embed_tasks
from hear_contrastune.tune import TuneConfig, tune


def quickstart(out: Path, task: str = "gm-program", size: str = "full",
               backbone: str = DEFAULT_BACKBONE, epochs: int = 20, batch_size: int = 64,
               m_per_class: int = 4, grid: str = "fast") -> str:
    """Run every stage and return the results table (also written to OUT/results.md)."""
    t0 = time.time()
    click.echo(f"[1/4] building task {task} ({size}) ...")
    task_dir = eval_tasks.build(task, out / "tasks", size=size)
    click.echo(f"[2/4] untuned {backbone}: embedding and probing ...")
    untuned = embed_tasks(backbone, task_dir, out / "embeddings", name=f"{backbone}-untuned")[0]
    click.echo("  probing: HEAR MLP (heareval.predictions.runner), linear, kNN ...")
    rows = {f"{backbone} (untuned)": probe(untuned, PROBES, grid)}
    click.echo(f"[3/4] contrastive tuning ({epochs} epochs) ...")
    cfg = TuneConfig(task_dir=str(task_dir), backbone=backbone, epochs=epochs,
                     batch_size=batch_size, m_per_class=m_per_class)
    best = tune(cfg, out / "runs" / f"{backbone}-supcon")
    click.echo("[4/4] tuned encoder: embedding and probing ...")
    tuned = embed_tasks(str(best), task_dir, out / "embeddings", name=f"{backbone}-supcon")[0]
    click.echo("  probing: HEAR MLP (heareval.predictions.runner), linear, kNN ...")
    rows[f"{backbone} + SupCon tuning"] = probe(tuned, PROBES, grid)

    metric = json.loads((task_dir / "task_metadata.json").read_text())["evaluation"][0]
    table = format_table(task, metric, rows)
    write_json(out / "results.json", {"task": task, "metric": metric, "rows": rows,
                                      "seconds": time.time() - t0})
    write_text(out / "results.md", table + "\n")
    return table


def format_table(task: str, metric: str, rows: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per model, one column per probe."""
    names = {"hear": "HEAR MLP probe", "linear": "linear probe", "knn": "kNN probe"}
    probes = [p for p in PROBES if any(p in r for r in rows.values())]
    lines = [f"Task {task}, test split, {metric}:", "",
             "| model | " + " | ".join(names[p] for p in probes) + " |",
             "|---|" + "---:|" * len(probes)]
    for model, scores in rows.items():
        lines.append(f"| {model} | " + " | ".join(f"{scores[p]:.3f}" for p in probes) + " |")
    return "\n".join(lines)

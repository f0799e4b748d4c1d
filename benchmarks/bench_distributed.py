"""Tuning throughput: 1 process vs N data-parallel processes (torchrun), same task and batch.

Runs `contrastune tune` for a few epochs once as one process and once under torchrun with N
processes (gloo on CPU, NCCL on GPUs), on the same task, global batch and seed, and prints the
median step time and clips/s of each (from the runs' steps.csv) and their ratio. Run by hand:

    python benchmarks/bench_distributed.py --out /tmp/bench-ddp [--nproc 2] [--epochs 2]
"""

import csv
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import click

import eval_tasks


def clips_per_s(cmd: list[str], out: Path) -> float:
    """Median clips/s of a tune run's steps (the very first step, a warm-up, dropped)."""
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run(cmd + ["--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    with open(out / "steps.csv") as f:
        rows = list(csv.DictReader(f))[1:]
    return statistics.median(float(r["clips_per_s"]) for r in rows)


@click.command()
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--nproc", default=2, type=int)
@click.option("--task", default="gm-program")
@click.option("--size", default="full", type=click.Choice(["small", "full"]))
@click.option("--backbone", default="resemblyzer")
@click.option("--epochs", default=2, type=int)
@click.option("--batch-size", default=64, type=int)
def main(out: Path, nproc: int, task: str, size: str, backbone: str, epochs: int,
         batch_size: int) -> None:
    task_dir = eval_tasks.build(task, out / "tasks", size=size)
    tune = ["-m", "cli", "tune", "--task-dir", str(task_dir), "--backbone", backbone,
            "--epochs", str(epochs), "--batch-size", str(batch_size)]
    rates = {}
    rates[1] = clips_per_s([sys.executable, *tune], out / "one")
    rates[nproc] = clips_per_s([sys.executable, "-m", "torch.distributed.run",
                                "--nproc-per-node", str(nproc), *tune], out / f"ddp{nproc}")
    for n, rate in rates.items():
        click.echo(f"{n} process(es): {rate:8.1f} clips/s  {2 * batch_size / rate:6.3f} s/step "
                   f"(global batch {batch_size} clips x 2 views)")
    click.echo(f"speed-up {nproc} vs 1: {rates[nproc] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()

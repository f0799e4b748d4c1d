"""Metrics a researcher can plot: CSV files that survive a resume, and TensorBoard if installed.

A resumed run first drops the rows after the epoch it resumes from, so every row in the file
belongs to the run's one history. `read_csv` reads them back as columns (for the report and the
studies in benchmarks/).
"""

import csv
import math
import os
from pathlib import Path
from typing import Any

import numpy as np


class CsvLog:
    """Append-only CSV with a fixed header; `truncate_after(epoch)` forgets a killed epoch."""

    def __init__(self, path: Path, fields: list[str]) -> None:
        self.path, self.fields = path, fields
        if not path.exists():
            with open(path, "w", newline="") as f:
                csv.writer(f).writerow(fields)

    def truncate_after(self, epoch: int) -> None:
        with open(self.path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= epoch]
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, self.fields)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow(row)


class RunLog:
    """Per-step and per-epoch metrics in `steps.csv` / `epochs.csv` (+ TensorBoard when present)."""

    def __init__(self, run_dir: Path, step_fields: list[str], epoch_fields: list[str]) -> None:
        self.steps = CsvLog(run_dir / "steps.csv", ["epoch", "step", *step_fields])
        self.epochs = CsvLog(run_dir / "epochs.csv", ["epoch", *epoch_fields])
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:  # tensorboard is optional
            self.tb = None

    def resume_after(self, epoch: int) -> None:
        self.steps.truncate_after(epoch)
        self.epochs.truncate_after(epoch)

    def step(self, epoch: int, step: int, **metrics: float) -> None:
        self.steps.write({"epoch": epoch, "step": step, **metrics})
        if self.tb:
            for k, v in metrics.items():
                self.tb.add_scalar(f"step/{k}", v, step)

    def epoch(self, epoch: int, **metrics: float) -> None:
        self.epochs.write({"epoch": epoch, **metrics})
        if self.tb:
            for k, v in metrics.items():
                self.tb.add_scalar(f"epoch/{k}", v, epoch)
            self.tb.flush()


def read_csv(path: Path) -> dict[str, np.ndarray]:
    """A metrics CSV as float columns; empty cells (epoch 0's loss) become NaN."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = list(rows[0]) if rows else []

    def number(text: str | None) -> float:
        try:
            return float(text) if text else math.nan
        except ValueError:
            return math.nan

    return {c: np.array([number(r.get(c)) for r in rows], dtype=np.float64) for c in columns}

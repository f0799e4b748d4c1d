"""The main job, a preset of `compare`: on one task, the frozen encoder and contrastive tuning
under every probe, with compare's layout, results.json, report and table.

    OUT/tasks/<task>/       the HEAR task (built by `contrastune quickstart` from eval_tasks,
                            which the package does not import)
    OUT/...                 a compare run (comparison.run_layout)
"""

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from hear_contrastune.comparison.options import CompareConfig
from hear_contrastune.data.loading import DEFAULT_WORKERS
from hear_contrastune.training.config import DEFAULTS, TuneConfig

TASK = "gm-program"
QUICKSTART_METHODS = ("frozen", "contrastive")
# 20 epochs and heareval's fast grid: the whole job in about 5 minutes on a 2-core CPU
TUNING = replace(DEFAULTS, epochs=20)
GRID = "fast"


def quickstart(out: Path, task_dir: Path, tuning: TuneConfig = TUNING, grid: str = GRID,
               device: str | None = None, workers: int = DEFAULT_WORKERS,
               say: Callable[[str], None] = lambda _: None) -> str:
    """Run every stage on the built task (each resumes) and return the results table."""
    # Here, not at the top: compare and the report import scikit-learn and matplotlib (about
    # 2 s), which `contrastune` would otherwise pay on every command for the constants above.
    from hear_contrastune.comparison.compare import compare
    from hear_contrastune.comparison.report.tables import summary_table

    cfg = CompareConfig(tasks_dir=task_dir, tuning=tuning, seeds=1, grid=grid,
                        methods=QUICKSTART_METHODS)
    return summary_table(compare(cfg, Path(out), device, workers, say))

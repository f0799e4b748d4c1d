"""HEAR's official evaluator, run unmodified as the user would run it.

heareval's runner (`python -m heareval.predictions.runner EMB_TASK_DIR`) trains heareval's MLP
probe (its grid of 1-2 hidden layers) and writes `test.predicted-scores.json` and a pickle of
each fold's test predictions. It runs in a child process, `python -m
hear_contrastune.probes.hear_mlp EMB_TASK_DIR --grid G`, which calls the runner unmodified and
then, in the same process that wrote them, converts its pickles into our
`test.hear-predictions.npz` (heareval's files are left as they are): no process of ours ever
unpickles a file it did not just write. The child needs TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 on
torch >= 2.6 (heareval torch.loads its own Lightning checkpoints); this sets it for the child
process only.
"""

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from hear_contrastune.atomic import read_json_or_none, write_json
from hear_contrastune.data.embeddings import content_key, open_embedded_task
from hear_contrastune.errors import UserError

SCORES_FILE = "test.predicted-scores.json"
PREDICTIONS_NAME = "test.hear-predictions.npz"  # per-clip test scores (probes.predictions)
KEY_FILE = "hear-probe-key.json"  # what the runner's results beside it were computed from
GRIDS = ("default", "fast", "faster")  # heareval's hyperparameter grids, largest first
DEFAULT_GRID = "default"


def hear_probe(emb_task_dir: Path, grid: str = DEFAULT_GRID) -> dict:
    """Run heareval's predictions runner on one embeddings folder; return its test scores."""
    emb_task_dir = Path(emb_task_dir)
    key = {"embeddings": content_key(open_embedded_task(emb_task_dir)), "grid": grid}
    done_file = emb_task_dir / "prediction-done.json"
    if (read_json_or_none(emb_task_dir / KEY_FILE) != key  # other embeddings or grid
            or not (emb_task_dir / PREDICTIONS_NAME).is_file()):  # or no per-clip predictions
        done_file.unlink(missing_ok=True)
    if not done_file.exists():
        env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
        # an absolute path: heareval logs to Path("logs") / path, which is inside the folder
        # for an absolute path but a stray logs/ in the working directory for a relative one
        cmd = [sys.executable, "-m", "hear_contrastune.probes.hear_mlp",
               str(emb_task_dir.resolve()), "--grid", grid]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise UserError(f"heareval predictions runner failed on {emb_task_dir}: {tail[0]}")
        write_json(emb_task_dir / KEY_FILE, key)
    return {**json.loads((emb_task_dir / SCORES_FILE).read_text()),
            "predictions": PREDICTIONS_NAME}


def test_score(scores: dict) -> float:
    """The primary test score of a `test*.predicted-scores.json` (mean over folds if k-fold)."""
    if "aggregated_scores" in scores:
        return float(scores["aggregated_scores"]["test_score_mean"])
    return float(scores["test"]["test_score"])


def valid_score(scores: dict) -> float:
    """The primary validation score of a probe's result (mean over folds if k-fold; NaN where
    the result has none)."""
    values = [float(v["validation_score"]) for v in scores.values()
              if isinstance(v, dict) and "validation_score" in v]
    return math.fsum(values) / len(values) if values else math.nan


def run_and_convert(emb_task_dir: Path, grid: str) -> None:
    """The child's job: heareval's runner, then its fresh pickles converted to our npz."""
    from heareval.predictions.runner import runner

    from hear_contrastune.data.hear_format import fold_roles
    from hear_contrastune.probes.predictions import heareval_predictions, write_predictions

    runner.main(args=[str(emb_task_dir), "--grid", grid], standalone_mode=False)
    task = open_embedded_task(emb_task_dir)
    write_predictions(emb_task_dir / PREDICTIONS_NAME,
                      heareval_predictions(emb_task_dir, task, fold_roles(task)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="heareval's runner on one embeddings folder, "
                                     "its test predictions saved as " + PREDICTIONS_NAME)
    parser.add_argument("emb_task_dir", type=Path)
    parser.add_argument("--grid", default=DEFAULT_GRID, choices=GRIDS)
    args = parser.parse_args()
    run_and_convert(args.emb_task_dir, args.grid)

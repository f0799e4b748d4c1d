"""HEAR's official evaluator, run unmodified as the user would run it.

`python -m heareval.predictions.runner EMB_TASK_DIR` trains heareval's MLP probe (its grid of
1-2 hidden layers) and writes `test.predicted-scores.json`. It needs
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 on torch >= 2.6 (it torch.loads its own Lightning
checkpoints); this sets it for the child process only.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from hear_contrastune.atomic import read_json_or_none, write_json
from hear_contrastune.data.embeddings import content_key, open_embedded_task
from hear_contrastune.errors import UserError

SCORES_FILE = "test.predicted-scores.json"
KEY_FILE = "hear-probe-key.json"  # what the runner's results beside it were computed from
GRIDS = ("default", "fast", "faster")  # heareval's hyperparameter grids, largest first
DEFAULT_GRID = "default"


def hear_probe(emb_task_dir: Path, grid: str = DEFAULT_GRID) -> dict:
    """Run heareval's predictions runner on one embeddings folder; return its test scores."""
    emb_task_dir = Path(emb_task_dir)
    key = {"embeddings": content_key(open_embedded_task(emb_task_dir)), "grid": grid}
    done_file = emb_task_dir / "prediction-done.json"
    if read_json_or_none(emb_task_dir / KEY_FILE) != key:  # other embeddings or grid: run again
        done_file.unlink(missing_ok=True)
    if not done_file.exists():
        env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
        # an absolute path: heareval logs to Path("logs") / path, which is inside the folder
        # for an absolute path but a stray logs/ in the working directory for a relative one
        cmd = [sys.executable, "-m", "heareval.predictions.runner",
               str(emb_task_dir.resolve()), "--grid", grid]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise UserError(f"heareval predictions runner failed on {emb_task_dir}: {tail[0]}")
        write_json(emb_task_dir / KEY_FILE, key)
    return json.loads((emb_task_dir / SCORES_FILE).read_text())


def test_score(scores: dict) -> float:
    """The primary test score of a `test*.predicted-scores.json` (mean over folds if k-fold)."""
    if "aggregated_scores" in scores:
        return float(scores["aggregated_scores"]["test_score_mean"])
    return float(scores["test"]["test_score"])

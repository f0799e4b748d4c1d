"""contrastune linear-probe: heareval's own predictor, trainer and scores, with no hidden layer.

The probe is heareval.predictions.task_predictions itself, run with `hidden_layers: 0` (its
FullyConnectedPrediction is then one Linear layer) and the rest of its grid, learning rates
included, untouched: what heareval's own trainer makes of a linear model. Its Adam epochs stop
short of the linear optimum; probes/logistic.py (contrastune logistic-probe) solves the same
model to convergence. Two things keep the official runner's results and behaviour intact:

* heareval writes fixed names into the folder it is given (test.predicted-scores.json,
  <fold>.predictions.pkl and, for an absolute path, lightning_logs/), so it is given a scratch
  folder of symlinks inside the task folder; the results are then renamed to
  test.linear-predicted-scores.json and <fold>.linear-predictions.pkl, and the scratch folder is
  deleted whatever happens.
* its grids are swapped for linear ones only while the probe runs, and restored after, as are
  TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD (heareval's torch.load of its own checkpoints needs it since
  torch 2.6) and torch's deterministic-algorithms switch (heareval's Trainer sets it).
"""

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from hear_contrastune.atomic import atomic_path, read_json_or_none, write_json
from hear_contrastune.data.embeddings import EmbeddedTask, content_key, open_embedded_task
from hear_contrastune.errors import UserError
from hear_contrastune.probes.hear_mlp import DEFAULT_GRID
from hear_contrastune.probes.predictions import heareval_predictions, write_predictions
from hear_contrastune.probes.protocol import Roles, check_task, split_names

OUTPUT_NAME = "test.linear-predicted-scores.json"
PREDICTIONS_SUFFIX = ".linear-predictions.pkl"
PREDICTIONS_NAME = "test.linear-predictions.npz"  # per-clip test scores (probes.predictions)
# heareval.predictions.task_predictions' attribute for each grid name
GRID_ATTRS = {"default": "PARAM_GRID", "fast": "FAST_PARAM_GRID", "faster": "FASTER_PARAM_GRID"}
# Grid entries that only shape hidden layers: without any, one value each keeps the grid from
# holding identical linear models under different names.
HIDDEN_ONLY = ("hidden_dim", "dropout", "hidden_norm", "norm_after_activation")
WEIGHTS_ONLY_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
SPLIT_FILES = (".embeddings.npy", ".embedding-dimensions.json", ".target-labels.pkl", ".json")


def linear_grid(grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """heareval's grid with no hidden layer; every other entry (learning rates...) kept."""
    linear = dict(grid)
    linear["hidden_layers"] = [0]
    for key in HIDDEN_ONLY:
        if key in linear:
            linear[key] = list(linear[key][:1])
    return linear


@contextmanager
def linear_heareval() -> Iterator[ModuleType]:
    """heareval's task_predictions module with linear grids, restored on exit."""
    import heareval.predictions.task_predictions as tp  # heavy: lightning, pandas, sklearn

    saved_grids = {name: getattr(tp, name) for name in GRID_ATTRS.values()}
    saved_env = os.environ.get(WEIGHTS_ONLY_ENV)
    saved_det = (torch.are_deterministic_algorithms_enabled(),
                 torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        for name, grid in saved_grids.items():
            setattr(tp, name, linear_grid(grid))
        os.environ[WEIGHTS_ONLY_ENV] = "1"
        yield tp
    finally:
        for name, grid in saved_grids.items():
            setattr(tp, name, grid)
        if saved_env is None:
            os.environ.pop(WEIGHTS_ONLY_ENV, None)
        else:
            os.environ[WEIGHTS_ONLY_ENV] = saved_env
        torch.use_deterministic_algorithms(saved_det[0], warn_only=saved_det[1])


@contextmanager
def scratch_view(task: EmbeddedTask, roles: list[Roles]) -> Iterator[Path]:
    """A hidden folder inside the task folder holding symlinks to its inputs, deleted on exit.

    The metadata is a copy, with a task-specific `hidden_layers` (if any) forced to 0 too.
    """
    scratch = Path(tempfile.mkdtemp(prefix=".linear-probe.", dir=task.path)).resolve()
    try:
        names = ["labelvocabulary.csv"] + [
            f"{split}{suffix}" for split in split_names(roles) for suffix in SPLIT_FILES
        ]
        for name in names:
            if (task.path / name).exists():
                (scratch / name).symlink_to((task.path / name).resolve())
        metadata = json.loads(json.dumps(task.metadata))
        task_grid = metadata.get("evaluation_params", {}).get("task_specific_param_grid")
        if isinstance(task_grid, dict) and "hidden_layers" in task_grid:
            task_grid["hidden_layers"] = [0]
        (scratch / "task_metadata.json").write_text(json.dumps(metadata, indent=4))
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_linear_probe(
    task_dirs: Sequence[str | Path],
    grid: str = DEFAULT_GRID,
    force: bool = False,
    grid_points: int = 8,
) -> list[dict[str, Any]]:
    """Run heareval's predictor with no hidden layer on every task folder.

    One summary per task: {"task", "task_dir", "output", "skipped", "result"}, "result" being
    heareval's test-scores document as written to test.linear-predicted-scores.json. A task
    whose output exists is skipped unless `force`. Every folder is opened and checked (splits
    readable, finite, same width, one label per multiclass clip) before any training.
    """
    if grid not in GRID_ATTRS:
        raise UserError(f"--grid {grid!r}: expected one of {', '.join(GRID_ATTRS)}")
    if isinstance(grid_points, bool) or not isinstance(grid_points, int) or grid_points < 1:
        raise UserError(f"--grid-points {grid_points}: expected a whole number >= 1")
    tasks = [open_embedded_task(d) for d in task_dirs]
    keys = {t.path: {"embeddings": content_key(t), "grid": grid, "grid_points": grid_points}
            for t in tasks}
    held = {t.path: read_json_or_none(t.path / OUTPUT_NAME) for t in tasks}
    todo = {t.path: check_task(t) for t in tasks  # no result, one of other inputs, or no npz
            if force or probe_key(held[t.path]) != keys[t.path]
            or not (t.path / PREDICTIONS_NAME).is_file()}
    summaries = []
    for task in tasks:
        out = task.path / OUTPUT_NAME
        if task.path in todo:
            roles, dim = todo[task.path]
            result = _probe_task(task, roles, dim, grid, grid_points, keys[task.path])
        else:
            result = held[task.path]
        summaries.append({"task": task.name, "task_dir": str(task.path), "output": str(out),
                          "skipped": task.path not in todo, "result": result})
    return summaries


def probe_key(result: Any) -> Any:
    """The key a linear-probe result was computed for (None for anything else)."""
    probe = result.get("probe") if isinstance(result, dict) else None
    return probe.get("key") if isinstance(probe, dict) else None


def _probe_task(
    task: EmbeddedTask, roles: list[Roles], dim: int, grid: str, grid_points: int,
    key: dict[str, Any],
) -> dict[str, Any]:
    """heareval's task_predictions on a scratch view; its outputs renamed into the task folder."""
    start = time.perf_counter()
    with linear_heareval() as tp, scratch_view(task, roles) as scratch:
        tp.task_predictions(
            embedding_path=scratch,
            embedding_size=dim,
            grid_points=grid_points,
            gpus=[0] if torch.cuda.is_available() else None,  # heareval runner's default
            in_memory=True,
            deterministic=True,
            grid=grid,
            logger=logging.getLogger(f"hear_contrastune.linear_probe.{task.name}"),
        )
        result = json.loads((scratch / "test.predicted-scores.json").read_text())
        # heareval's pickles are converted here, in the process that has just written them
        write_predictions(task.path / PREDICTIONS_NAME,
                          heareval_predictions(scratch, task, roles))
        for role in roles:
            fold = "|".join(role["test"])
            with atomic_path(task.path / f"{fold}{PREDICTIONS_SUFFIX}") as tmp:
                os.replace(scratch / f"{fold}.predictions.pkl", tmp)
    result["embedding_path"] = str(task.path)
    result["predictions"] = PREDICTIONS_NAME
    result["probe"] = {"kind": "linear", "grid": grid, "grid_points": grid_points,
                       "time_s": time.perf_counter() - start, "key": key}
    write_json(task.path / OUTPUT_NAME, result)
    return result

"""The linear probe: heareval's own predictor with no hidden layer, kept off heareval's files."""

import json
import os
from pathlib import Path

import heareval.predictions.task_predictions as tp
import numpy as np
import pytest
from probe_fixtures import multiclass_task, write_task

from hear_contrastune.data.embeddings import write_split
from hear_contrastune.errors import UserError
from hear_contrastune.probes.linear import OUTPUT_NAME, linear_grid, run_linear_probe
from hear_contrastune.probes.predictions import read_predictions
from hear_contrastune.probes.protocol import primary_score, score_function

# heareval / lightning 1.9 on torch 2.x warn a few hundred times per run (implicit softmax dim,
# pin_memory without accelerator, pkg_resources...): theirs, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def _separable(out_dir: Path, sizes: dict[str, int], split_mode: str = "trainvaltest") -> Path:
    """Three classes far apart along their own axes: a linear model reaches accuracy 1."""
    return multiclass_task(out_dir, sizes, seed=3, dim=6, noise=0.05, split_mode=split_mode)


def test_linear_grid_keeps_heareval_learning_rates() -> None:
    for grid in (tp.PARAM_GRID, tp.FAST_PARAM_GRID, tp.FASTER_PARAM_GRID):
        linear = linear_grid(grid)
        assert linear["hidden_layers"] == [0] and linear["lr"] == grid["lr"]
        assert all(len(linear[k]) == 1 for k in ("hidden_dim", "dropout", "hidden_norm"))
    assert tp.PARAM_GRID["hidden_layers"] == [1, 2]  # untouched


def test_separable_task_scores_one_without_touching_heareval_files(tmp_path: Path) -> None:
    task_dir = _separable(tmp_path / "sep", {"train": 60, "valid": 30, "test": 30})
    official = {"test.predicted-scores.json": '{"official": true}', "prediction-done.json": "{}",
                "test.predictions.pkl": "official"}
    for name, text in official.items():
        (task_dir / name).write_text(text)
    grids = (tp.PARAM_GRID, tp.FAST_PARAM_GRID, tp.FASTER_PARAM_GRID)
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)

    [summary] = run_linear_probe([task_dir], grid="default", grid_points=2)

    doc = json.loads((task_dir / OUTPUT_NAME).read_text())
    assert summary["result"] == doc and not summary["skipped"]
    assert doc["test"]["test_score"] == doc["test"]["test_top1_acc"] >= 0.99
    assert doc["hparams"]["hidden_layers"] == 0 and doc["hparams"]["lr"] in tp.PARAM_GRID["lr"]
    assert doc["embedding_path"] == str(task_dir) and doc["probe"]["kind"] == "linear"
    assert (task_dir / "test.linear-predictions.pkl").is_file()
    # the per-clip predictions, converted in this process, recompute heareval's test score
    pred = read_predictions(task_dir / doc["predictions"])
    assert pred.folds == ["test"] and pred.scores[0].shape == (30, 3)
    scorer = [score_function(pred.primary, pred.vocabulary, task_dir)]
    recomputed = primary_score(scorer, pred.scores[0], pred.targets[0])
    assert np.float32(recomputed) == np.float32(doc["test"]["test_score"])  # Lightning's float32
    for name, text in official.items():
        assert (task_dir / name).read_text() == text
    leftovers = [p.name for p in task_dir.iterdir() if p.name.startswith(".")
                 or p.name in ("lightning_logs", "logs")]
    assert leftovers == []
    assert (tp.PARAM_GRID, tp.FAST_PARAM_GRID, tp.FASTER_PARAM_GRID) == grids
    assert all(a is b for a, b in zip(grids, (tp.PARAM_GRID, tp.FAST_PARAM_GRID,
                                                tp.FASTER_PARAM_GRID), strict=True))
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ

    # kept for the same embeddings and options; probed again when the grid changes
    (task_dir / OUTPUT_NAME).write_text(json.dumps({**doc, "marker": 1}))
    [again] = run_linear_probe([task_dir], grid="default", grid_points=2)
    assert again["skipped"] and again["result"]["marker"] == 1
    [other_grid] = run_linear_probe([task_dir], grid="faster", grid_points=1)
    assert not other_grid["skipped"] and "marker" not in other_grid["result"]
    assert other_grid["result"]["probe"]["key"]["grid"] == "faster"


def test_kfold_outputs_per_fold_and_aggregate(tmp_path: Path) -> None:
    folds = {f"fold0{i}": 20 for i in range(3)}
    task_dir = _separable(tmp_path / "k3", folds, split_mode="presplit_kfold")
    doc = run_linear_probe([task_dir], grid="faster", grid_points=1)[0]["result"]
    assert set(folds) <= set(doc) and "aggregated_scores" in doc
    assert "test_score_mean" in doc["aggregated_scores"]
    for fold in folds:
        assert (task_dir / f"{fold}.linear-predictions.pkl").is_file()
        assert not (task_dir / f"{fold}.predictions.pkl").exists()
    assert not (task_dir / "test.predicted-scores.json").exists()


def test_errors_come_before_training(tmp_path: Path) -> None:
    task_dir = _separable(tmp_path / "bad", {"train": 10, "valid": 5, "test": 5})
    with pytest.raises(UserError, match="not an embeddings directory"):
        run_linear_probe([tmp_path])
    with pytest.raises(UserError, match="--grid"):
        run_linear_probe([task_dir], grid="huge")
    with pytest.raises(UserError, match="--grid-points"):
        run_linear_probe([task_dir], grid_points=0)
    labels = [["c0"], [], ["c1"], ["c1"], ["c0"]]
    write_split(task_dir, "test", np.zeros((5, 6), np.float32), labels)
    with pytest.raises(UserError, match=r"test\.target-labels\.pkl: 1 of 5 clips"):
        run_linear_probe([task_dir])
    other = write_task(tmp_path / "dims", {
        "train": (np.zeros((4, 3), np.float32), [["a"]] * 4),
        "valid": (np.zeros((4, 3), np.float32), [["a"]] * 4),
        "test": (np.zeros((4, 5), np.float32), [["a"]] * 4)}, ["a"])
    with pytest.raises(UserError, match="5 dimensions"):
        run_linear_probe([other])
    assert not list(tmp_path.glob(f"*/{OUTPUT_NAME}"))
    assert not list(tmp_path.glob("*/.linear-probe*"))

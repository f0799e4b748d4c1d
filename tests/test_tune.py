"""Contrastive tuning end to end on a tiny real task: checkpoints, logs, resume, refusals."""

import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch
from kill import kill_once_written

import eval_tasks
import hear_contrastune
from hear_contrastune.errors import UserError
from hear_contrastune.training.config import TuneConfig
from hear_contrastune.training.loop import tune


@pytest.fixture(scope="module")
def program_task(tmp_path_factory):
    return eval_tasks.build("gm-program", tmp_path_factory.mktemp("tasks"), size="small")


def epochs_logged(run):
    with open(run / "epochs.csv") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def small_config(task_dir, **kw):
    return TuneConfig(**{"epochs": 2, "batch_size": 8, "m_per_class": 2, **kw},
                      task_dir=str(task_dir))


def test_tune_writes_a_hear_checkpoint_and_logs(program_task, tmp_path):
    run = tmp_path / "run"
    best = tune(small_config(program_task), run, device="cpu")
    assert epochs_logged(run) == [0, 1, 2]
    done = json.loads((run / "done.json").read_text())
    assert 0 <= done["best_epoch"] <= 2 and 0.0 <= done["best_valid_knn"] <= 1.0
    assert done["selected_by"] == "best" and done["select_score"] == done["best_valid_knn"]
    with open(run / "steps.csv") as f:
        steps = list(csv.DictReader(f))
    assert steps and all(float(s["loss"]) > 0 for s in steps)
    model = hear_contrastune.load_model(str(best))
    assert model.meta["config"]["epochs"] == 2
    emb = hear_contrastune.get_scene_embeddings(torch.rand(2, 16000) - 0.5, model)
    assert emb.shape == (2, 256) and torch.isfinite(emb).all()
    # a finished run is recognised and returns at once
    t0 = time.time()
    assert tune(small_config(program_task), run, device="cpu") == best
    assert time.time() - t0 < 30
    # so is one begun before an option existed: it ran with that option's default
    config = json.loads((run / "config.json").read_text())
    for added in ("select", "warmup_epochs", "xbm_size"):
        del config[added]
    (run / "config.json").write_text(json.dumps(config))
    assert tune(small_config(program_task), run, device="cpu") == best
    with pytest.raises(UserError, match="differs in select"):
        tune(small_config(program_task, select="last"), run, device="cpu")
    # or with the value it had before the option, where that is not the default: a run from
    # before --patience ran every epoch (training.config.BEFORE_OPTION)
    del config["patience"]
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="differs in patience"):
        tune(small_config(program_task), run, device="cpu")
    assert tune(small_config(program_task, patience=0), run, device="cpu") == best


def test_tune_refuses_a_folder_holding_another_run(program_task, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"task_dir": "elsewhere"}))
    with pytest.raises(UserError, match="already holds a different run"):
        tune(small_config(program_task), run, device="cpu")
    other = tmp_path / "notes"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a tuning run folder"):
        tune(small_config(program_task), other, device="cpu")


def test_killed_run_resumes_from_its_last_epoch(program_task, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "cli", "tune", "--task-dir", str(program_task), "--out",
           str(run), "--epochs", "3", "--batch-size", "8", "--m-per-class", "2",
           "--device", "cpu"]
    kill_once_written(cmd, os.path.dirname(os.path.dirname(__file__)), run / "state.pt")
    assert (run / "state.pt").exists() and not (run / "done.json").exists()
    resumed_from = torch.load(run / "state.pt", weights_only=False)["epoch"]
    assert resumed_from >= 1
    done = subprocess.run(cmd, cwd=os.path.dirname(os.path.dirname(__file__)),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert epochs_logged(run) == [0, 1, 2, 3]
    with open(run / "steps.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == sorted(set(steps))  # no step logged twice across the kill


def flat_run(task_dir, out):
    """A run whose valid curve is flat from the start: the backbone learns at rate 0 (valid kNN
    scores the backbone alone) while the projection head trains, so the optimiser state and the
    views still have to resume exactly."""
    return [sys.executable, "-m", "cli", "tune", "--task-dir", str(task_dir), "--out", str(out),
            "--epochs", "6", "--batch-size", "8", "--m-per-class", "2",
            "--backbone-lr-scale", "0", "--patience", "2", "--device", "cpu"]


def rows(path, drop=("seconds", "clips_per_s", "select_seconds")):
    """A metrics CSV without its timings: what a resumed run must reproduce exactly."""
    with open(path) as f:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]


def test_patience_stops_a_flat_run_and_a_killed_one_resumes_to_the_same_end(program_task,
                                                                            tmp_path):
    root = os.path.dirname(os.path.dirname(__file__))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = subprocess.run(flat_run(program_task, whole), cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert epochs_logged(whole) == [0, 1, 2]  # no better than epoch 0 for 2 epochs: stopped
    result = json.loads((whole / "done.json").read_text())
    assert result["stopped_early"] and result["last_epoch"] == 2 and result["best_epoch"] == 0
    assert torch.load(whole / "state.pt", weights_only=True)["stopped"]

    kill_once_written(flat_run(program_task, killed), root, killed / "state.pt")
    assert not (killed / "done.json").exists()
    done = subprocess.run(flat_run(program_task, killed), cwd=root, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("epochs.csv", "steps.csv"):
        assert rows(killed / name) == rows(whole / name)
    killed_result = json.loads((killed / "done.json").read_text())
    for key in ("best_epoch", "best_valid_knn", "select_score", "stopped_early", "last_epoch"):
        assert killed_result[key] == result[key]
    states = [torch.load(run / "state.pt", weights_only=True) for run in (whole, killed)]
    for k, v in states[0]["head"].items():  # the head trained: its weights must match exactly
        torch.testing.assert_close(states[1]["head"][k], v, rtol=0, atol=0)

    # killed after state.pt recorded the stop but before done.json: the resumed run trains no
    # further epoch and ends as the uninterrupted one did
    steps = rows(whole / "steps.csv")
    (whole / "done.json").unlink()
    done = subprocess.run(flat_run(program_task, whole), cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert epochs_logged(whole) == [0, 1, 2] and rows(whole / "steps.csv") == steps
    again = json.loads((whole / "done.json").read_text())
    assert {k: v for k, v in again.items() if k != "seconds"} == {
        k: v for k, v in result.items() if k != "seconds"}


def test_finetune_head_learns_at_its_own_rate_and_is_scored_on_valid(program_task, tmp_path):
    run = tmp_path / "run"
    tune(small_config(program_task, method="finetune"), run, device="cpu")
    config = json.loads((run / "config.json").read_text())
    assert config["head_lr_scale"] == 100.0  # HEAD_LR_SCALE["finetune"], resolved and recorded
    groups = torch.load(run / "state.pt", weights_only=True)["optimizer"]["param_groups"]
    initial = {g["name"]: g["initial_lr"] for g in groups}
    assert initial["head"] == pytest.approx(1e-2) and initial["pretrained"] == pytest.approx(3e-5)
    with open(run / "epochs.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    # valid is scored after epochs 0 and 2 (--select-every 2), epoch 1 only trained
    assert [bool(r["valid_knn"]) for r in rows] == [True, False, True]
    assert all(0.0 <= float(r["valid_head"]) <= 1.0 for r in rows if r["valid_knn"])
    assert json.loads((tmp_path / "run" / "done.json").read_text())["best_epoch"] in (0, 2)
    # contrastive tuning keeps lr for its projection head and logs no classifier score
    assert TuneConfig(task_dir=str(program_task)).resolved().head_lr_scale == 1.0
    # left unresolved until a run starts, so a config derived for another method gets its scale
    derived = replace(TuneConfig(task_dir=str(program_task)), method="finetune")
    assert derived.resolved().head_lr_scale == 100.0


def test_cross_batch_memory_on_a_multilabel_task(tmp_path):
    task = eval_tasks.build("gm-family-mix", tmp_path / "tasks", size="small")
    run = tmp_path / "run"
    tune(small_config(task, epochs=1, xbm_size=40), run, device="cpu")
    assert json.loads((run / "config.json").read_text())["xbm_size"] == 40
    with open(run / "steps.csv") as f:
        assert all(float(s["loss"]) > 0 for s in csv.DictReader(f))
    with pytest.raises(UserError, match="more than one global batch"):
        tune(small_config(task, xbm_size=16), tmp_path / "small-memory", device="cpu")
    # a contrastive-only option: fine-tuning runs derived from the same config record it off
    assert replace(small_config(task, xbm_size=40), method="finetune").resolved().xbm_size == 0


def test_bf16_on_the_cpu_tunes_and_its_checkpoint_embeds_in_fp32(program_task, tmp_path,
                                                                 caplog):
    """--precision bf16 on the CPU: the training forward pass runs under bf16 autocast (its loss
    differs from fp32's), the checkpoint holds fp32 weights and embeds in fp32 through the HEAR
    API; a CPU without oneDNN's bf16 kernels is warned of; fp16 stays CUDA-only, refused in one
    line."""
    runs = {p: tmp_path / p for p in ("fp32", "bf16")}
    for precision, run in runs.items():
        best = tune(small_config(program_task, epochs=1, precision=precision), run, device="cpu")
    emulated = not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert caplog.text.count("autocast emulates bf16") == emulated  # once: the bf16 run
    losses = {p: [float(r["loss"]) for r in csv.DictReader(open(run / "steps.csv"))]
              for p, run in runs.items()}
    assert losses["bf16"] != losses["fp32"]  # autocast was on
    model = hear_contrastune.load_model(str(best))
    assert model.meta["config"]["precision"] == "bf16"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    emb = hear_contrastune.get_scene_embeddings(torch.rand(2, 16000) - 0.5, model)
    assert emb.dtype == torch.float32 and emb.shape == (2, 256) and torch.isfinite(emb).all()
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        tune(small_config(program_task, precision="fp16"), tmp_path / "fp16", device="cpu")

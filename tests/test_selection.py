"""Model selection rules on real tiny runs: each keeps the epoch it claims, best.pt holds that
epoch's weights, a killed run resumes to the same choice, and a small valid split is flagged."""

import csv
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kill import kill_once_written

import eval_tasks
from hear_contrastune.backbones.checkpoint import load_backbone, read_checkpoint
from hear_contrastune.data.task import load_task
from hear_contrastune.errors import UserError
from hear_contrastune.training.build import make_evaluator, make_schedule, training_clips
from hear_contrastune.training.config import SELECT_RULES, TuneConfig
from hear_contrastune.training.loop import tune
from hear_contrastune.training.run_log import read_csv
from hear_contrastune.training.selection import (
    choose_epoch,
    every,
    is_scored,
    stalled,
    stop_epoch,
)
from hear_contrastune.training.valid_evaluator import ValidEvaluator, small_valid_warning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A learning rate high enough that the tiny task's valid curve goes up and down, so the three
# rules keep different epochs (where this was written: best 2, last 4, smoothed 1, which it
# chose after epoch 2 from the weights it kept of epoch 1).
UNSTABLE = {"epochs": 4, "batch_size": 8, "m_per_class": 2, "lr": 1e-2, "backbone_lr_scale": 1.0,
            "select_every": 1}


@pytest.fixture(scope="module")
def program_task(tmp_path_factory) -> Path:
    return eval_tasks.build("gm-program", tmp_path_factory.mktemp("tasks"), size="small")


@pytest.fixture(scope="module")
def runs(program_task, tmp_path_factory) -> dict[str, Path]:
    """One run per rule, identical but for the rule."""
    root = tmp_path_factory.mktemp("runs")
    for rule in SELECT_RULES:
        tune(TuneConfig(task_dir=str(program_task), select=rule, **UNSTABLE), root / rule,
             device="cpu")
    # the same training, scored after epochs 0, 2 and 4 only
    tune(TuneConfig(task_dir=str(program_task), select="smoothed",
                    **{**UNSTABLE, "select_every": 2}), root / "every2", device="cpu")
    return {rule: root / rule for rule in (*SELECT_RULES, "every2")}


def evaluator_for(task_dir: Path) -> ValidEvaluator:
    """The evaluator the loop builds for a run on this task at the defaults."""
    cfg, task = TuneConfig(task_dir=str(task_dir)), load_task(task_dir, 16000)
    return make_evaluator(cfg, task, training_clips(cfg, task), workers=0)


def valid_knn_of(checkpoint: Path, task_dir: Path) -> float:
    """The valid kNN score the loop's evaluator gives a checkpoint's backbone."""
    return evaluator_for(task_dir).score(load_backbone(checkpoint)[0])["valid_knn"]


def test_selection_embeds_float32_rows_under_a_callers_bf16_autocast(program_task) -> None:
    """benchmarks/bench_select_precision.py embeds under autocast and scores apart."""
    evaluator, backbone = evaluator_for(program_task), load_backbone("resemblyzer")[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = evaluator.embed(backbone)
    fp32 = evaluator.embed(backbone)
    assert all(e.dtype == torch.float32 for e in (*bf16, *fp32))
    assert not torch.equal(bf16[0], fp32[0])  # the forward really ran in bf16
    assert evaluator.scores_of(*fp32) == evaluator.score(backbone)


def test_choose_epoch_on_a_curve_where_the_rules_differ() -> None:
    curve = [0.5, 0.9, 0.6, 0.8, 0.8, 0.7]  # smoothed: .7 .667 .767 .733 .767 .75
    assert choose_epoch("best", curve, finished=True) == (1, 0.9)
    assert choose_epoch("last", curve, finished=True) == (5, 0.7)
    epoch, score = choose_epoch("smoothed", curve, finished=True)
    assert epoch == 2 and score == pytest.approx(2.3 / 3)  # the earliest of two equal means
    # before the run ends the latest epoch's mean is not final, so it is no candidate yet
    assert choose_epoch("smoothed", [0.5, 0.6, 0.9], finished=False)[0] == 1
    assert choose_epoch("smoothed", [0.5, 0.6, 0.9], finished=True)[0] == 2
    assert choose_epoch("smoothed", [0.5], finished=False) == (0, 0.5)
    with pytest.raises(ValueError, match="selection rule"):
        choose_epoch("median", curve, finished=True)


def test_patience_counts_epochs_since_the_rules_own_best() -> None:
    curve = [0.5, 0.9, 0.6, 0.8, 0.8, 0.7]  # smoothed: .7 .667 .767 .733 .767 .75
    assert stop_epoch("best", curve, 2) == 3  # best at 1, no better at 2 and 3
    assert stop_epoch("last", curve, 2) == 3  # "last" has no best of its own: the raw curve's
    assert stop_epoch("best", curve, 5) == 5 and stop_epoch("best", curve, 0) == 5  # never
    # smoothed, while running: epoch 2's mean needs epoch 3, so after epoch 2 the candidates
    # are epochs 0 (.7) and 1 (.667 over epochs 0-2): the best is 2 epochs old
    assert stop_epoch("smoothed", curve, 2) == 2
    assert stalled("best", [0.5, 0.5, 0.5], 2)  # a tie is no improvement
    assert not stalled("best", [0.5, 0.5, 0.5], 3) and not stalled("best", [0.5, 0.5, 0.5], 0)


def test_rules_on_a_curve_scored_every_other_epoch() -> None:
    nan = math.nan
    curve = [0.5, nan, 0.6, nan, 0.8, nan, 0.7]  # smoothed over scored: .55 .633 .7 .75
    assert every([0.5, 0.9, 0.6, 0.1, 0.8, 0.3, 0.7], 2)[::2] == curve[::2]
    assert all(math.isnan(v) for v in every([0.5, 0.9, 0.6, 0.1, 0.8, 0.3, 0.7], 2)[1::2])
    assert every([0.5, 0.9, 0.6], 2)[2] == 0.6 and every([0.5, 0.9, 0.6, 0.1], 2)[3] == 0.1
    assert choose_epoch("best", curve, finished=True) == (4, 0.8)
    assert choose_epoch("last", curve[:6], finished=False) == (4, 0.8)  # latest scored
    assert choose_epoch("smoothed", curve, finished=True) == (6, pytest.approx(0.75))
    assert choose_epoch("smoothed", curve, finished=False) == (4, pytest.approx(0.7))
    # patience counts epochs, and a run can stop only after a scored one
    assert not stalled("best", [0.9, nan, 0.6, nan], 3)
    assert stalled("best", [0.9, nan, 0.6, nan, 0.5], 3)
    assert stop_epoch("best", [0.9, nan, 0.6, nan, 0.5, nan, 0.4], 3) == 4
    assert is_scored(0, 5, 2) and is_scored(5, 5, 2) and not is_scored(3, 5, 2)


def test_each_rule_keeps_the_epoch_it_claims(runs, program_task) -> None:
    curves = {rule: read_csv(run / "epochs.csv") for rule, run in runs.items()}
    sparse = curves.pop("every2")["valid_knn"]
    # scoring less often changes no training: the scored epochs score as the dense run's
    assert [math.isnan(v) for v in sparse] == [False, True, False, True, False]
    assert sparse[::2].tolist() == curves["best"]["valid_knn"][::2].tolist()
    epoch, score = choose_epoch("smoothed", every(curves["best"]["valid_knn"].tolist(), 2),
                                finished=True)
    done = json.loads((runs["every2"] / "done.json").read_text())
    assert (done["best_epoch"], done["select_score"]) == (epoch, pytest.approx(score))
    assert valid_knn_of(runs["every2"] / "best.pt", program_task) == pytest.approx(sparse[epoch])
    for rule in SELECT_RULES:
        run = runs[rule]
        # the rule changes which epoch is kept, never the training
        assert curves[rule]["valid_knn"].tolist() == curves["best"]["valid_knn"].tolist()
        assert curves[rule]["loss"][1:].tolist() == curves["best"]["loss"][1:].tolist()
        scores = curves[rule]["valid_knn"].tolist()
        epoch, score = choose_epoch(rule, scores, finished=True)
        done = json.loads((run / "done.json").read_text())
        assert done["selected_by"] == rule and done["best_epoch"] == epoch
        assert done["best_valid_knn"] == scores[epoch] and done["select_score"] == score
        meta = read_checkpoint(run / "best.pt")["meta"]
        assert (meta["epoch"], meta["selected_by"], meta["valid_knn"]) == (epoch, rule,
                                                                           scores[epoch])
        # best.pt holds that epoch's weights: they score what epochs.csv logged for it
        assert valid_knn_of(run / "best.pt", program_task) == pytest.approx(scores[epoch])
    assert json.loads((runs["last"] / "done.json").read_text())["best_epoch"] == 4
    state = torch.load(runs["last"] / "state.pt", weights_only=True)["backbone"]
    for k, v in read_checkpoint(runs["last"] / "best.pt")["state_dict"].items():
        torch.testing.assert_close(v, state[k].cpu(), rtol=0, atol=0)


def test_small_valid_split_is_flagged(program_task, tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="hear_contrastune.training.loop"):
        tune(TuneConfig(task_dir=str(program_task), epochs=1, batch_size=8, m_per_class=2),
             tmp_path / "run", device="cpu")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and "valid clips" in r.getMessage()]
    assert len(warnings) == 1  # small gm-program: 16 valid clips of 4 classes
    assert "16 valid clips, 4.0 per class" in warnings[0] and "--select smoothed" in warnings[0]
    # the rule of thumb itself: enough clips and enough per class (label) are both needed
    assert small_valid_warning(torch.arange(60) % 4, 4, multilabel=False) is None
    assert "per class" in small_valid_warning(torch.arange(60) % 20, 20, multilabel=False)
    assert "40 valid clips" in small_valid_warning(torch.arange(40) % 2, 2, multilabel=False)
    tags = torch.nn.functional.one_hot(torch.arange(80) % 10, 10)  # 8 clips per label
    assert small_valid_warning(tags, 10, multilabel=True) is None
    assert "4.0 per label" in small_valid_warning(tags, 20, multilabel=True)

def test_rejects_an_unknown_rule_and_a_warmup_past_the_budget(program_task, tmp_path) -> None:
    with pytest.raises(UserError, match="--select"):
        tune(TuneConfig(task_dir=str(program_task), select="median"), tmp_path / "a")
    with pytest.raises(UserError, match="--warmup-epochs"):
        tune(TuneConfig(task_dir=str(program_task), epochs=2, warmup_epochs=2), tmp_path / "b")


def expected_lr(base: float, step: int, warmup: int, total: int) -> float:
    """The rate optimiser step `step` (from 0) uses: linear warm-up, then cosine to 0."""
    if step < warmup:
        return base * (step + 1) / (warmup + 1)
    return base * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))) / 2


def schedule_for(cfg: TuneConfig, steps: int) -> tuple[torch.optim.Optimizer, object]:
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.AdamW([{"params": params[:1], "lr": 3e-5},
                                   {"params": params[1:], "lr": 1e-4}])
    return optimizer, make_schedule(optimizer, cfg, steps)


def test_warmup_schedule_values_and_resume() -> None:
    cfg = TuneConfig(epochs=3, warmup_epochs=1.5)  # 4 steps an epoch: 6 of warm-up, 12 in all
    optimizer, schedule = schedule_for(cfg, 4)
    rates = []
    for _ in range(12):
        rates.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        schedule.step()
    for step in (0, 1, 5, 6, 7, 11):
        for group, base in enumerate((3e-5, 1e-4)):
            assert rates[step][group] == pytest.approx(expected_lr(base, step, 6, 12), rel=1e-9)
    assert rates[0][1] == pytest.approx(1e-4 / 7) and rates[6][1] == pytest.approx(1e-4)
    # a resumed run (state saved after step k, loaded into fresh objects) goes on exactly
    for k in (3, 6, 9):
        optimizer, schedule = schedule_for(cfg, 4)
        for _ in range(k):
            optimizer.step()
            schedule.step()
        saved = optimizer.state_dict(), schedule.state_dict()
        optimizer, schedule = schedule_for(cfg, 4)
        optimizer.load_state_dict(saved[0])
        schedule.load_state_dict(saved[1])
        for step in range(k, 12):
            assert [g["lr"] for g in optimizer.param_groups] == rates[step]
            optimizer.step()
            schedule.step()
    # without warm-up, the plain cosine of runs made before the option
    _, plain = schedule_for(TuneConfig(epochs=3), 4)
    assert type(plain) is torch.optim.lr_scheduler.CosineAnnealingLR


def cli_tune(task: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "cli", "tune", "--task-dir", str(task), "--out", str(out),
            "--epochs", "3", "--batch-size", "8", "--m-per-class", "2", "--lr", "3e-3",
            "--select", "smoothed", "--warmup-epochs", "1", "--device", "cpu"]


def test_killed_run_resumes_to_the_same_choice_and_schedule(program_task, tmp_path) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = subprocess.run(cli_tune(program_task, whole), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    kill_once_written(cli_tune(program_task, killed), ROOT, killed / "state.pt")
    assert not (killed / "done.json").exists()
    assert torch.load(killed / "state.pt", weights_only=True)["epoch"] < 3
    done = subprocess.run(cli_tune(program_task, killed), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

    for name in ("epochs.csv", "steps.csv"):
        with open(whole / name) as a, open(killed / name) as b:
            rows_a, rows_b = list(csv.DictReader(a)), list(csv.DictReader(b))
        # timings differ; everything else is the same run
        drop = {"seconds", "clips_per_s", "select_seconds"}
        assert ([{k: v for k, v in r.items() if k not in drop} for r in rows_a]
                == [{k: v for k, v in r.items() if k not in drop} for r in rows_b])
    whole_done, killed_done = (json.loads((run / "done.json").read_text())
                               for run in (whole, killed))
    for key in ("best_epoch", "best_valid_knn", "selected_by", "select_score"):
        assert whole_done[key] == killed_done[key]
    a, b = (read_checkpoint(run / "best.pt") for run in (whole, killed))
    assert a["meta"]["epoch"] == b["meta"]["epoch"]
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=0, atol=0)
    # the logged rate (after each optimiser step: the next step's) follows the warm-up schedule
    lrs = read_csv(whole / "steps.csv")["lr"]
    steps = len(lrs) // 3  # steps per epoch; 1 epoch of warm-up
    for step in range(len(lrs) - 1):
        assert lrs[step] == pytest.approx(expected_lr(3e-3 * 0.3, step + 1, steps, len(lrs)))

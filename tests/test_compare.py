"""`contrastune compare` end to end on one tiny task: every method under every probe, the
report drawn from results.json, and resume after an interrupted stage."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

import eval_tasks
from hear_contrastune.comparison.compare import CompareConfig, compare
from hear_contrastune.comparison.results import load_results
from hear_contrastune.comparison.run_layout import COMPARED_METHODS
from hear_contrastune.comparison.run_layout import DEFAULT_PROBES as PROBES
from hear_contrastune.errors import UserError
from hear_contrastune.training.config import CLASSIFIER_METHODS, DEFAULTS


def test_compare_runs_every_stage_reports_and_resumes(tmp_path):
    eval_tasks.build("gm-program", tmp_path / "tasks", size="small")
    cfg = CompareConfig(tasks_dir=tmp_path / "tasks", seeds=1,
                        tuning=replace(DEFAULTS, epochs=1, batch_size=8), grid="faster")
    run = tmp_path / "run"
    records = compare(cfg, run, device="cpu")

    seen = {(r.method, r.probe) for r in records}
    assert seen == ({(m, p) for m in COMPARED_METHODS for p in PROBES}
                    | {(m, "head") for m in CLASSIFIER_METHODS})
    assert all(r.task == "gm-program" and r.metric == "top1_acc" for r in records)
    assert all(0.0 <= r.score <= 1.0 for r in records)
    assert load_results(run / "results.json") == records

    report = (run / "report.md").read_text()
    html = (run / "index.html").read_text()
    for method in COMPARED_METHODS:
        assert method in report and method in html
    pngs = sorted((run / "plots").glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)

    # interrupt the contrastive stage: its run never finished and its embeddings are gone
    (run / "models" / "gm-program" / "contrastive-seed0" / "done.json").unlink()
    shutil.rmtree(run / "embeddings" / "contrastive-seed0")
    frozen_dir = run / "embeddings" / "frozen-seed0" / "gm-program"
    frozen_scores = frozen_dir / "test.predicted-scores.json"
    stamp = frozen_scores.stat().st_mtime_ns
    again = compare(cfg, run, device="cpu")
    assert frozen_scores.stat().st_mtime_ns == stamp  # finished stages are not redone
    assert {(r.method, r.probe) for r in again} == seen
    assert [r for r in again if r.method != "contrastive"] == \
        [r for r in records if r.method != "contrastive"]
    options = json.loads((run / "results.json").read_text())["options"]
    assert options["grid"] == "faster" and options["tuning"]["epochs"] == 1
    assert "tuning.epochs: 1" in (run / "report.md").read_text()

    # a moved run folder resumes: every stage is keyed by content, not by path
    moved = shutil.move(run, tmp_path / "moved")
    frozen_scores = Path(moved) / "embeddings" / "frozen-seed0" / "gm-program" / \
        "test.predicted-scores.json"
    stamp = frozen_scores.stat().st_mtime_ns
    assert compare(cfg, Path(moved), device="cpu") == again
    assert frozen_scores.stat().st_mtime_ns == stamp
    # an edited task is not mixed with the runs made on its old contents
    split = json.loads((tmp_path / "tasks" / "gm-program" / "valid.json").read_text())
    split[next(iter(split))] = ["Violin"] if split[next(iter(split))] != ["Violin"] else ["Flute"]
    (tmp_path / "tasks" / "gm-program" / "valid.json").write_text(json.dumps(split))
    with pytest.raises(UserError, match="other task contents"):
        compare(cfg, Path(moved), device="cpu")


def test_compare_on_a_kfold_and_a_variable_length_task(tmp_path):
    """HEAR's other task shapes: a k-fold task (ESC-50's) gets one model per fold, probed on
    its fold; a multilabel task of clips of varying length (FSD50K's) runs through every stage.
    One fold of five is asked for, and the report says so."""
    tasks = tmp_path / "tasks"
    eval_tasks.build("gm-phrase-5fold", tasks, size="small")
    eval_tasks.build("gm-tags-varlen", tasks, size="small")
    cfg = CompareConfig(tasks_dir=tasks, grid="faster", folds=("1",), seeds=1,
                        tuning=replace(DEFAULTS, epochs=1, batch_size=4, m_per_class=2))
    run = tmp_path / "run"
    records = compare(cfg, run, device="cpu", workers=0)

    cells = {(r.task, r.method, r.probe) for r in records}
    for task in ("gm-phrase-5fold", "gm-tags-varlen"):
        assert {(task, m, p) for m in COMPARED_METHODS for p in PROBES} <= cells
    assert all(0.0 <= r.score <= 1.0 for r in records)
    kfold = [r for r in records if r.task == "gm-phrase-5fold"]
    assert {(r.fold, r.n_folds) for r in kfold} == {("fold01", 5)}
    assert {(r.fold, r.n_folds) for r in records if r.task == "gm-tags-varlen"} == {("", 0)}
    assert load_results(run / "results.json") == records

    model = run / "models" / "gm-phrase-5fold" / "contrastive-seed0-fold01"
    assert json.loads((model / "config.json").read_text())["fold"] == "fold01"
    view = run / "folds" / "contrastive-seed0" / "gm-phrase-5fold" / "fold01"
    meta = json.loads((view / "task_metadata.json").read_text())
    assert (meta["split_mode"], meta["splits"], meta["fold"]) == (
        "trainvaltest", ["train", "valid", "test"], "fold01")
    test_clips = len(json.loads((tasks / "gm-phrase-5fold" / "fold01.json").read_text()))
    assert json.loads((view / "test.embedding-dimensions.json").read_text())[0] == test_clips
    report = (run / "report.md").read_text()
    assert "folds fold01 of 5: a subset, not the task's score" in report
    assert "k-fold tasks, fold by fold" in report

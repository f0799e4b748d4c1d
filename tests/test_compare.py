"""`contrastune compare` end to end on one tiny task: every method under every probe, the
report drawn from results.json, and resume after an interrupted stage."""

import shutil
from dataclasses import replace

import eval_tasks
from hear_contrastune.comparison.compare import CompareConfig, compare
from hear_contrastune.comparison.layout import METHODS, PROBES
from hear_contrastune.comparison.results import load_results
from hear_contrastune.training.config import DEFAULTS


def test_compare_runs_every_stage_reports_and_resumes(tmp_path):
    eval_tasks.build("gm-program", tmp_path / "tasks", size="small")
    cfg = CompareConfig(tasks_dir=tmp_path / "tasks",
                        tuning=replace(DEFAULTS, epochs=1, batch_size=8), grid="faster")
    run = tmp_path / "run"
    records = compare(cfg, run, device="cpu")

    seen = {(r.method, r.probe) for r in records}
    assert seen == {(m, p) for m in METHODS for p in PROBES} | {("finetune", "head")}
    assert all(r.task == "gm-program" and r.metric == "top1_acc" for r in records)
    assert all(0.0 <= r.score <= 1.0 for r in records)
    assert load_results(run / "results.json") == records

    report = (run / "report.md").read_text()
    html = (run / "index.html").read_text()
    for method in METHODS:
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

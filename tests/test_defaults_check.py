"""benchmarks/defaults_check.py: the study's suggestion against the current defaults, on a tiny
study built by eval_tasks; a run kept in KEEP is not trained again on a machine without OUT."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, text=True, capture_output=True,
                          timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})


def run_folders(out: Path) -> list[str]:
    """The check's run folders for gm-program / contrastive (not the claims' lock files)."""
    return sorted(p.name.rsplit("-", 1)[0] for p in (out / "gm-program" / "contrastive").iterdir()
                  if not p.name.startswith("."))


def test_two_processes_share_the_check_and_a_new_machine_reuses_its_kept_runs(tmp_path):
    study, out, keep = tmp_path / "study", tmp_path / "out", tmp_path / "keep"
    tiny = ("--size", "small", "--epochs", "2", "--tasks", "gm-program", "--methods",
            "contrastive")
    made = run("benchmarks/tuning_study.py", "--out", str(tmp_path / "s-out"), "--keep",
               str(study), "--trials", "2", *tiny)
    assert made.returncode == 0, made.stderr[-3000:]
    check = ("benchmarks/defaults_check.py", "--study", str(study), "--out", str(out), "--keep",
             str(keep), *tiny, "--shorter", "1")

    inside = run("benchmarks/defaults_check.py", "--study", str(study), "--out", str(out),
                 "--keep", str(study / "check"), *tiny, "--trials", "2", "--shorter", "1")
    assert inside.returncode == 1 and "--keep" in inside.stderr and "overlaps the input" in \
        inside.stderr and not (study / "check").exists()

    for bad, message in ((("--seeds", "1,1"), "--seeds"), (("--epochs", "3"), "base.epochs")):
        refused = run(*check, "--trials", "2", *bad)  # a later --epochs wins over tiny's
        assert refused.returncode == 2 - (bad[0] == "--epochs"), refused.stderr
        assert message in refused.stderr.strip().splitlines()[-1]

    early = run(*check, "--trials", "3")  # the study ran 2 trials: not finished for 3
    assert early.returncode == 1
    assert early.stderr.strip().splitlines()[-1] == (
        f"Error: --study {study}: no finished search (3 trials) for gm-program / contrastive; "
        "the suggestion needs every task's")

    both = [subprocess.Popen([sys.executable, *check, "--trials", "2"], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**os.environ, "OMP_NUM_THREADS": "1"}) for _ in range(2)]
    logs = []
    for proc in both:
        out_text, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        logs.append(out_text + err)
    # two processes share the runs: each of the three trained once (each epoch logged once)
    assert sum(log.count("epoch 1: loss") for log in logs) == 3
    assert sum(log.count("epoch 2: loss") for log in logs) == 2  # suggested-1ep: 1 epoch
    table = (keep / "check.md").read_text()
    assert "| gm-program | 1 | contrastive |" in table
    assert "one seed is not enough here (a close call)" in table  # one task: always close
    assert run_folders(out) == ["current", "suggested", "suggested-1ep"]
    for candidate in ("current", "suggested", "suggested-1ep"):
        kept = keep / "gm-program" / "seed1" / "contrastive" / candidate
        assert sorted(p.name for p in kept.iterdir()) == ["config.json", "done.json",
                                                          "epochs.csv"]

    (out / "gm-program").rename(tmp_path / "moved")  # a new machine: the runs are gone
    again = run(*check, "--trials", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert run_folders(out) == []  # nothing trained: both runs read from KEEP
    assert (keep / "check.md").read_text() == table

    best = study / "gm-program" / "contrastive" / "best.json"  # the suggestion changes
    doc = json.loads(best.read_text())
    doc["params"]["weight_decay"] = 0.05
    best.write_text(json.dumps(doc))
    changed = run(*check, "--trials", "2")
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert run_folders(out) == ["suggested", "suggested-1ep"]  # only they trained again
    kept = keep / "gm-program" / "seed1" / "contrastive" / "suggested"
    assert json.loads((kept / "config.json").read_text())["weight_decay"] == pytest.approx(0.05)


def test_a_tied_choice_goes_to_the_value_nearest_the_current_default(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from defaults_check import suggestion

    def best(m: int, lr: float) -> dict:
        return {"params": {"backbone_lr": lr, "m_per_class": m}}

    bests = {("a", "finetune"): best(8, 1e-4), ("b", "finetune"): best(4, 1e-3),
             ("c", "finetune"): best(2, 1e-5), ("d", "finetune"): best(8, 1e-4),
             ("e", "finetune"): best(2, 1e-4)}
    two_way = suggestion(bests, "finetune", ["a", "b", "c", "d", "e"])
    assert two_way["m_per_class"] == 2  # 2 and 8 tie, each a step from the current 4: the smaller
    assert abs(two_way["backbone_lr"] - 1e-4) < 1e-12  # the median of the logs
    assert suggestion(bests, "finetune", ["a", "b"])["m_per_class"] == 4  # 4 and 8 tie


def test_the_verdict_follows_the_rule_fixed_before_the_check(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from defaults_check import Candidate, verdict

    lineup = [Candidate("current", None, 30), Candidate("suggested", {"lr": 1}, 30),
              Candidate("suggested-15ep", {"lr": 1}, 15)]

    def pair(*scores: float, kept: tuple = (20, 18, 12)) -> dict:  # scores and kept epochs
        return {c.name: {"select_score": v, "best_epoch": k}
                for c, v, k in zip(lineup, scores, kept, strict=True)}

    def said(done: list[dict], seeds: int = 1) -> str:
        return verdict(done, lineup, seeds).split(": ", 1)[1]

    clear = [pair(0.70, 0.75, 0.72)] * 6 + [pair(0.70, 0.69, 0.68)]
    assert said(clear) == "adopt the suggestion"
    # the suggestion as good in 15 epochs as in 30: the cheaper
    assert said([pair(0.70, 0.75, 0.7502)] * 7) == "adopt the suggestion at 15 epochs"
    assert said([pair(0.75, 0.70, 0.72)] * 6 + [clear[0]]) == "keep the current defaults"
    close = [pair(0.70, 0.75, 0.69)] * 4 + [pair(0.75, 0.70, 0.69)] * 3
    assert "a close call" in said(close)
    assert said(close, seeds=3) == "adopt the suggestion"  # more seeds: the mean rank decides
    collapse = [pair(0.70, 0.65, 0.60, kept=(20, 0, 0))] + clear[1:]
    assert "1 collapsed" in said(collapse)


def test_scores_within_the_tie_share_their_ranks(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from defaults_check import ranks

    assert ranks({"current": 0.70, "suggested": 0.75}) == {"current": 2, "suggested": 1}
    assert ranks({"current": 0.7500, "suggested": 0.7503}) == {"current": 1.5, "suggested": 1.5}

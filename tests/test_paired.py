"""Paired bootstrap verdicts (comparison.paired) on real predictions files scored with
heareval's own scorer; and the per-clip predictions each probe leaves beside its result."""

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from probe_fixtures import multiclass_task

from hear_contrastune.comparison.paired import (
    BEST_FINETUNE,
    PAIRED_DIR,
    Comparison,
    best_finetune,
    comparisons,
    verdict,
)
from hear_contrastune.comparison.results import Record
from hear_contrastune.probes.knn import run_knn_probe
from hear_contrastune.probes.logistic import run_logistic_probe
from hear_contrastune.probes.predictions import Predictions, read_predictions, write_predictions
from hear_contrastune.probes.protocol import primary_score, score_function

VOCAB = ["a", "b", "c"]
N = 120
B = 200


def _targets(rng: np.random.Generator) -> np.ndarray:
    return np.eye(len(VOCAB), dtype=np.float32)[rng.integers(0, len(VOCAB), N)]


def _scores(targets: np.ndarray, right: np.ndarray) -> np.ndarray:
    """A score matrix whose argmax is the true class exactly where `right`."""
    wrong = np.roll(targets, 1, axis=1)
    return np.where(right[:, None], targets, wrong).astype(np.float32) + 0.01


def _record(run: Path, method: str, seed: int, targets: np.ndarray, right: np.ndarray,
            valid: float = math.nan) -> Record:
    name = f"{method}-seed{seed}.npz"
    write_predictions(run / name, Predictions(["test"], VOCAB, "top1_acc",
                                              [_scores(targets, right)], [targets]))
    return Record("t", method, seed, "knn", "top1_acc", float(right.mean()), "", 0, 0, valid,
                  name)


def _find(found: list[Comparison], a: str, b: str) -> Comparison:
    return next(c for c in found if (c.a, c.b) == (a, b))


def test_identical_predictions_tie_with_zero_inside(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = _targets(rng)
    records = []
    for seed in (0, 1, 2):
        right = rng.random(N) < 0.6
        records += [_record(tmp_path, m, seed, y, right) for m in ("finetune", "contrastive")]
    [c] = [c for c in comparisons(records, tmp_path, replicates=B)
           if (c.a, c.b) == ("contrastive", "finetune")]
    assert c.verdict == "tie" and c.diff == 0.0 and c.low <= 0.0 <= c.high
    assert c.seeds == (0, 1, 2)


def test_better_on_every_clip_and_seed_wins_and_is_cached(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    y = _targets(rng)
    frozen = rng.random(N) < 0.4
    records = [_record(tmp_path, "frozen", 0, y, frozen)]
    for seed in (0, 1):
        base = frozen | (rng.random(N) < 0.1)  # right wherever frozen is, and a few more
        better = base | (rng.random(N) < 0.5)
        records += [_record(tmp_path, "finetune", seed, y, base, valid=0.5),
                    _record(tmp_path, "contrastive", seed, y, better, valid=0.6)]
    found = comparisons(records, tmp_path, replicates=B)
    c = _find(found, "contrastive", "finetune")
    assert c.verdict == "win" and 0 < c.low <= c.diff <= c.high
    expected = np.mean([records[2 * s + 2].score - records[2 * s + 1].score for s in (0, 1)])
    assert c.diff == pytest.approx(expected)
    frozen_cmp = _find(found, "finetune", "frozen")  # frozen's one seed pairs with both
    assert frozen_cmp.verdict == "win" and frozen_cmp.seeds == (0, 1)
    best = _find(found, "contrastive", BEST_FINETUNE)
    assert best.chosen == "finetune" and best.text().startswith("win +")
    assert {(x.a, x.b) for x in found} == {("finetune", "frozen"), ("contrastive", "frozen"),
                                           ("contrastive", "finetune"),
                                           ("contrastive", BEST_FINETUNE)}
    cached = sorted((tmp_path / PAIRED_DIR).glob("*.npz"))
    assert len(cached) == 5  # one replicate vector per record
    stamps = [p.stat().st_mtime_ns for p in cached]
    assert comparisons(records, tmp_path, replicates=B) == found
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    # without the frozen records, the same difference (seeded by the cell, not the order)
    flipped = comparisons([r for r in records if r.method != "frozen"], tmp_path, replicates=B)
    assert _find(flipped, "contrastive", "finetune") == c


def test_best_variant_is_chosen_on_valid_not_test(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    y = _targets(rng)
    good = rng.random(N) < 0.8
    poor = good & (rng.random(N) < 0.5)
    records = [
        _record(tmp_path, "finetune", 0, y, good, valid=0.40),  # best on test, worse on valid
        _record(tmp_path, "lpft", 0, y, poor, valid=0.90),
        _record(tmp_path, "contrastive", 0, y, good, valid=0.50),
    ]
    by_method = {r.method: [r] for r in records}
    assert best_finetune(by_method) == "lpft"
    best = _find(comparisons(records, tmp_path, replicates=B), "contrastive", BEST_FINETUNE)
    assert best.chosen == "lpft" and best.verdict == "win"
    no_valid = [Record(**{**r.__dict__, "valid_score": math.nan}) for r in records]
    assert best_finetune({r.method: [r] for r in no_valid}) is None


def test_records_without_predictions_get_a_reason_not_an_error(tmp_path: Path) -> None:
    records = [Record("t", m, 0, "knn", "top1_acc", 0.5) for m in ("frozen", "contrastive")]
    [c] = comparisons(records, tmp_path, replicates=B)
    assert (c.verdict, c.text(), c.decided) == ("no per-clip predictions",
                                                "no per-clip predictions", False)
    assert verdict(-0.01, 0.02, True) == "tie" and verdict(-0.3, -0.1, False) == "win"


@pytest.mark.parametrize("run_probe", [run_knn_probe, run_logistic_probe])
def test_npz_round_trip_recomputes_the_test_score(tmp_path: Path, run_probe) -> None:
    task_dir = multiclass_task(tmp_path / "task", {"fold00": 30, "fold01": 30, "fold02": 30},
                               split_mode="new_split_kfold", noise=2.0)
    [summary] = run_probe([task_dir])
    doc = summary["result"]
    pred = read_predictions(task_dir / doc["predictions"])
    assert pred.folds == ["fold00", "fold01", "fold02"] and pred.vocabulary == ["c0", "c1", "c2"]
    scorer = [score_function(pred.primary, pred.vocabulary, task_dir)]
    for fold, s, t in zip(pred.folds, pred.scores, pred.targets, strict=True):
        assert s.dtype == np.float32 and s.shape == t.shape == (30, 3)
        assert primary_score(scorer, s, t) == doc[fold]["test_score"]
    # a cached result without its predictions file is computed again
    (task_dir / doc["predictions"]).unlink()
    [again] = run_probe([task_dir])
    assert not again["skipped"] and (task_dir / doc["predictions"]).is_file()
    assert run_probe([task_dir])[0]["skipped"]


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_compare_probe_gives_records_their_valid_score_and_predictions(tmp_path: Path) -> None:
    """compare's probe step on a real folder, heareval's MLP runner included (the child
    process converts its own fresh pickles): every probe's npz recomputes its test score."""
    from hear_contrastune.comparison.compare import run_probes, scored_record
    from hear_contrastune.data.embeddings import open_embedded_task

    run = tmp_path / "run"
    task_dir = multiclass_task(run / "embeddings" / "frozen-seed0" / "t",
                               {"train": 45, "valid": 15, "test": 24}, noise=1.5)
    found = run_probes(task_dir, ("hear", "logistic", "knn"), "faster")
    assert set(found) == {"hear", "logistic", "knn"}
    task = open_embedded_task(task_dir)
    for name, s in found.items():
        pred = read_predictions(s.predictions)
        scorer = [score_function(pred.primary, pred.vocabulary, s.predictions)]
        recomputed = primary_score(scorer, pred.scores[0], pred.targets[0])
        # heareval's runner logs its scores through Lightning, as float32: equal to that
        assert recomputed == (pytest.approx(s.test, rel=1e-7) if name == "hear" else s.test)
        assert np.float32(recomputed) == np.float32(s.test), name
        assert 0.0 <= s.valid <= 1.0
        rec = scored_record(task, "frozen", 0, "", 0, name, s, run)
        assert rec.predictions == f"embeddings/frozen-seed0/t/{s.predictions.name}"
        assert (rec.valid_score, rec.score) == (s.valid, s.test)
    assert {p.name for p in task_dir.glob("*.npz")} == {
        "test.hear-predictions.npz", "test.logistic-predictions.npz", "test.knn-predictions.npz"}
    assert (task_dir / "test.predictions.pkl").is_file()  # heareval's own files are left
    head = scored_record(task, "finetune", 0, "", 0, "head", 0.75, run)
    assert head.predictions == "" and math.isnan(head.valid_score)


@pytest.mark.parametrize("name", ["top1_acc", "pitch_acc", "chroma_acc", "mAP", "d_prime"])
def test_resampled_scores_are_heareval_scores_of_each_resample(name):
    """All resamples at once (comparison.resampled) give what heareval's scorer gives called on
    each resample alone: per-clip means, the weighted mAP (ties in the scores, a label no clip
    carries, labels some resamples miss) and the one-call-per-resample fallback (d_prime)."""
    from hear_contrastune.comparison.resampled import resampled_scores

    rng = np.random.default_rng(3)
    size = {"mAP": 7, "d_prime": 3}.get(name, 12)  # d_prime: every label in every resample
    vocab = [str(60 + i) for i in range(size)]  # pitch_acc and chroma_acc read MIDI numbers
    n = 40
    if name == "mAP":
        targets = (rng.random((n, len(vocab))) < 0.2).astype(np.float32)
        targets[:, 3] = 0  # carried by no clip
        targets[:2, 5], targets[2:, 5] = 1, 0  # rare: many resamples miss it
        scores = np.round(rng.random((n, len(vocab))) * 4) / 4  # many tied scores
        scores = (scores + 0.5 * targets).astype(np.float32)
    else:
        targets = np.eye(len(vocab), dtype=np.float32)[rng.integers(0, len(vocab), n)]
        scores = rng.random((n, len(vocab))).astype(np.float32) + targets * rng.random((n, 1))
    scorer = score_function(name, vocab, Path("task_metadata.json"))
    idx = rng.integers(0, n, (60, n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        each = [primary_score([scorer], scores[i], targets[i]) for i in idx]
    np.testing.assert_allclose(resampled_scores(scorer, scores, targets, idx), each,
                               rtol=1e-12, atol=1e-12)
    finite = np.asarray(each)[np.isfinite(each)]  # d_prime is inf where a label separates
    assert np.std(finite) > 0  # the resamples differ, so the comparison says something

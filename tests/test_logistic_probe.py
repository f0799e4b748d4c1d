"""The logistic probe against scikit-learn fitted directly, over real embeddings folders:
heareval's folds, scores and layout, C chosen on valid, the cache, one-line errors."""

import json
from pathlib import Path

import numpy as np
import pytest
from probe_fixtures import multiclass_task, write_task
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler

from hear_contrastune.data.embeddings import open_embedded_task, read_split, write_split
from hear_contrastune.errors import UserError
from hear_contrastune.probes.logistic import (
    DEFAULT_C_GRID,
    OUTPUT_NAME,
    fit_path,
    format_table,
    run_logistic_probe,
)

GRID = (0.01, 1.0, 100.0)
CONVERGED = {"tol": 1e-8, "max_iter": 10_000}  # the reference fits


def _standardised(task_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each split's features standardised with train's statistics, and multi-hot targets."""
    task = open_embedded_task(task_dir)
    raw = {s: read_split(task, s) for s in ("train", "valid", "test")}
    scaler = StandardScaler().fit(raw["train"][0].astype(np.float64))
    return {s: (scaler.transform(x.astype(np.float64)),
                np.array([[v in row for v in task.vocabulary] for row in labels], np.float64))
            for s, (x, labels) in raw.items()}


def _sklearn_multiclass(data: dict, c: float, split: str) -> tuple[float, float]:
    """LogisticRegression fitted directly at C, to convergence: (accuracy, mAP) on a split."""
    (tx, ty), (x, y) = data["train"], data[split]
    proba = LogisticRegression(C=c, **CONVERGED).fit(tx, ty.argmax(1)).predict_proba(x)
    return float((proba.argmax(1) == y.argmax(1)).mean()), average_precision_score(y, proba)


def test_matches_sklearn_fitted_directly(tmp_path: Path) -> None:
    task_dir = multiclass_task(tmp_path / "tvt", {"train": 150, "valid": 60, "test": 80},
                               dim=10, n_classes=4, noise=2.0)
    [summary] = run_logistic_probe([task_dir], c_grid=GRID)
    doc = json.loads((task_dir / OUTPUT_NAME).read_text())
    assert summary["result"] == doc and not summary["skipped"]
    data = _standardised(task_dir)
    c = doc["test"]["C"]
    acc, ap = _sklearn_multiclass(data, c, "test")
    assert 0.4 < acc < 0.95  # neither trivial nor hopeless: the fit matters
    assert doc["test"]["test_score"] == doc["test"]["test_top1_acc"]
    assert doc["test"]["test_top1_acc"] == pytest.approx(acc, abs=0.01)
    assert doc["test"]["test_mAP"] == pytest.approx(ap, abs=0.01)
    for grid_c, score in doc["logistic"]["test"]["validation_scores"].items():
        assert score == pytest.approx(_sklearn_multiclass(data, float(grid_c), "valid")[0],
                                      abs=0.01), grid_c
    assert "aggregated_scores" not in doc
    assert doc["hparams"]["model"] == "multinomial" and doc["hparams"]["c_grid"] == list(GRID)
    assert doc["score_mode"] == "max" and doc["primary_score"] == "top1_acc"
    assert all(doc["logistic"]["test"]["converged"].values())
    assert doc["logistic"]["test"]["n_train"] == 150
    assert set(doc["timing"]) >= {"read_s", "fit_and_score_s", "total_s"}


def test_c_is_chosen_on_valid(tmp_path: Path) -> None:
    """The class shows in x0 - x1 only, under a shared noise 3x larger: a strongly
    regularised model leans on x0 (the class means differ there) and scores ~0.7 at the default
    C = 1; a weakly regularised one finds x0 - x1, and valid says so."""
    rng = np.random.default_rng(0)
    vocab = ["a", "b"]
    splits = {}
    for name, n in (("train", 20), ("valid", 300), ("test", 300)):
        y = rng.integers(0, 2, n)
        z = 3.0 * rng.standard_normal(n)
        x = np.stack([2 * y - 1 + z, z], axis=1) + 0.5 * rng.standard_normal((n, 2))
        splits[name] = (x.astype(np.float32), [[vocab[i]] for i in y])
    task_dir = write_task(tmp_path / "reg", splits, vocab)
    doc = run_logistic_probe([task_dir], c_grid=DEFAULT_C_GRID)[0]["result"]
    data = _standardised(task_dir)
    valid = {c: _sklearn_multiclass(data, c, "valid")[0] for c in DEFAULT_C_GRID}
    assert doc["test"]["C"] >= 10.0 and valid[1.0] < max(valid.values()) - 0.1
    assert doc["test"]["validation_score"] == pytest.approx(max(valid.values()), abs=0.01)
    assert doc["test"]["test_score"] > _sklearn_multiclass(data, 1.0, "test")[0] + 0.1


def test_multilabel_is_one_vs_rest_with_heareval_scores(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    vocab = ["a", "b", "c", "d", "unseen"]
    splits = {}
    for name, n in (("train", 80), ("valid", 30), ("test", 40)):
        y = rng.random((n, 5)) < 0.4
        y[:, 4] = name == "test" and rng.random(n) < 0.3  # never in train or valid
        x = y[:, :4] @ rng.standard_normal((4, 6)) + 0.8 * rng.standard_normal((n, 6))
        splits[name] = (x.astype(np.float32), [[vocab[j] for j in np.flatnonzero(r)] for r in y])
    task_dir = write_task(tmp_path / "ml", splits, vocab, prediction_type="multilabel",
                          evaluation=("mAP", "d_prime"))
    doc = run_logistic_probe([task_dir], c_grid=GRID)[0]["result"]
    assert doc["hparams"]["model"] == "one-vs-rest"
    assert doc["test"]["test_score"] == doc["test"]["test_mAP"]
    assert "test_d_prime" in doc["test"]
    assert doc["logistic"]["test"]["constant_labels"] == ["unseen"]
    data = _standardised(task_dir)
    (tx, ty), (sx, sy) = data["train"], data["test"]
    ovr = OneVsRestClassifier(LogisticRegression(C=doc["test"]["C"], **CONVERGED))
    with pytest.warns(UserWarning, match="Label not 4"):  # its constant column, "unseen"
        ovr.fit(tx, ty)
    assert doc["test"]["test_mAP"] == pytest.approx(
        average_precision_score(sy, ovr.predict_proba(sx), average="macro"), abs=0.01)


def test_constant_columns_and_absent_classes_keep_vocabulary_order() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 3))
    queries = [rng.standard_normal((7, 3))]
    # multiclass: class 1 of 4 never in train; its column stays 0, the rest match scikit-learn
    cls = rng.choice([0, 2, 3], 40)
    fit = fit_path(x, np.eye(4)[cls], queries, (0.5,), multilabel=False)[0.5]
    proba = LogisticRegression(C=0.5, **CONVERGED).fit(x, cls).predict_proba(
        queries[0])
    assert fit.predictions[0][:, 1].tolist() == [0.0] * 7
    np.testing.assert_allclose(fit.predictions[0][:, [0, 2, 3]], proba, atol=1e-4)
    assert fit.converged and fit.iterations > 0
    # one class in train: it gets all the probability, without a fit
    one = fit_path(x, np.eye(3)[[1] * 40], queries, (1.0,), multilabel=False)[1.0]
    assert one.predictions[0].tolist() == [[0.0, 1.0, 0.0]] * 7 and one.iterations == 0
    # multilabel: a label in no train clip predicts 0, one in every clip 1 (the train prior)
    y = np.stack([rng.random(40) < 0.5, np.zeros(40), np.ones(40)], axis=1).astype(np.float32)
    multi = fit_path(x, y, queries, (0.1, 10.0), multilabel=True)
    for c, fit in multi.items():
        assert fit.predictions[0][:, 1:].tolist() == [[0.0, 1.0]] * 7
        ref = LogisticRegression(C=c, **CONVERGED).fit(x, y[:, 0])
        np.testing.assert_allclose(fit.predictions[0][:, 0], ref.predict_proba(queries[0])[:, 1],
                                   atol=1e-4)


def test_kfold_outputs_per_fold_and_aggregate_like_heareval(tmp_path: Path) -> None:
    from heareval.predictions.task_predictions import aggregate_test_results

    sizes = {f"fold0{i}": 30 + i for i in range(4)}
    task_dir = multiclass_task(tmp_path / "k4", sizes, seed=5, noise=1.5,
                               split_mode="new_split_kfold")
    doc = run_logistic_probe([task_dir], c_grid=GRID)[0]["result"]
    folds = sorted(sizes)
    assert set(doc["logistic"]) == set(folds) and set(folds) <= set(doc)
    for i, test in enumerate(folds):
        valid = folds[(i + 1) % 4]
        details = doc["logistic"][test]
        assert (details["test"], details["valid"]) == (test, valid)
        assert details["n_train"] == sum(sizes[f] for f in folds if f not in (test, valid))
        assert doc[test]["C"] in GRID
    expected = aggregate_test_results({f: doc[f] for f in folds})
    assert doc["aggregated_scores"].keys() == expected.keys()
    for key, value in expected.items():
        assert doc["aggregated_scores"][key] == pytest.approx(value, nan_ok=True), key
    table = format_table([{"task": "k4", "skipped": False, "result": doc}])
    assert "± " in table and "multinomial" in table


def test_cached_for_the_same_key_recomputed_otherwise(tmp_path: Path) -> None:
    task_dir = multiclass_task(tmp_path / "cache", {"train": 30, "valid": 10, "test": 10})
    run_logistic_probe([task_dir], c_grid=GRID)
    out = task_dir / OUTPUT_NAME
    out.write_text(out.read_text().replace('"threads"', '"threads_marker"'))
    [again] = run_logistic_probe([task_dir], c_grid=(100.0, 0.01, 1.0, 1.0))  # same grid
    assert again["skipped"] and "threads_marker" in out.read_text()
    table = format_table([again])
    assert "cache" in table and "skipped" in table and "top1_acc" in table
    [forced] = run_logistic_probe([task_dir], c_grid=GRID, force=True)
    assert not forced["skipped"] and "threads_marker" not in out.read_text()
    [other_grid] = run_logistic_probe([task_dir], c_grid=(0.1,))
    assert not other_grid["skipped"] and other_grid["result"]["key"]["c_grid"] == [0.1]
    multiclass_task(tmp_path / "cache", {"train": 30, "valid": 10, "test": 10}, seed=1)
    [other_embeddings] = run_logistic_probe([task_dir], c_grid=(0.1,))
    assert not other_embeddings["skipped"]
    assert other_embeddings["result"]["key"]["embeddings"] != other_grid["result"]["key"][
        "embeddings"]


def test_one_line_errors_before_any_output(tmp_path: Path) -> None:
    def fresh(name: str) -> Path:
        return multiclass_task(tmp_path / name, {"train": 8, "valid": 4, "test": 4})

    task_dir = fresh("options")
    for grid in ([], [0], [-1.0], [float("nan")], [float("inf")], ["1"], [True]):
        with pytest.raises(UserError, match=r"^--c .*expected one or more numbers > 0$"):
            run_logistic_probe([task_dir], c_grid=grid)
    with pytest.raises(UserError, match="not an embeddings directory"):
        run_logistic_probe([tmp_path])
    nan = fresh("nan")
    bad = np.zeros((4, 8), np.float32)
    bad[1, 2] = np.nan
    bad.tofile(nan / "test.embeddings.npy")
    with pytest.raises(UserError, match=r"test\.embeddings\.npy: 1 of 4 .*NaN or inf"):
        run_logistic_probe([nan])
    labels = fresh("labels")
    write_split(labels, "train", np.zeros((8, 8), np.float32), [["c0"], []] * 4)
    with pytest.raises(UserError, match=r"train\.target-labels\.pkl: 4 of 8 clips"):
        run_logistic_probe([labels])
    meta_file = task_dir / "task_metadata.json"
    meta = json.loads(meta_file.read_text())
    for change, match in (({"evaluation": ["nope"]}, "unknown score 'nope'"),
                          ({"prediction_type": "seq"}, "prediction_type 'seq'"),
                          ({"split_mode": "odd"}, "split_mode 'odd'")):
        meta_file.write_text(json.dumps({**meta, **change}))
        with pytest.raises(UserError, match=match) as err:
            run_logistic_probe([task_dir])
        assert "\n" not in str(err.value)
    assert not list(tmp_path.glob(f"*/{OUTPUT_NAME}"))

"""The kNN probe's protocol over real embeddings folders: heareval's folds, scores, layout."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from probe_fixtures import multiclass_task, write_task
from sklearn.metrics import average_precision_score
from sklearn.neighbors import KNeighborsClassifier

from hear_contrastune.data.embeddings import open_embedded_task, read_split
from hear_contrastune.errors import UserError
from hear_contrastune.probes.knn import OUTPUT_NAME, format_table, run_knn_probe
from hear_contrastune.probes.protocol import aggregate_folds, fold_roles

FOLDS = ["fold03", "fold00", "fold04", "fold01", "fold02"]  # unsorted on purpose


def _xy(task_dir: Path, splits: list[str], n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and class indices of the named splits, concatenated (the reference side)."""
    task = open_embedded_task(task_dir)
    parts = [read_split(task, s) for s in splits]
    x = np.concatenate([p[0] for p in parts])
    y = np.array([task.vocabulary.index(row[0]) for p in parts for row in p[1]])
    return x, y


def _sklearn_fold(task_dir: Path, train: list[str], valid: str, test: str,
                  k_grid: tuple[int, ...], n_classes: int) -> tuple[int, float, float]:
    """scikit-learn's KNeighborsClassifier doing the protocol: (k, test accuracy, test mAP)."""
    (tx, ty), (vx, vy), (sx, sy) = (_xy(task_dir, s, n_classes) for s in (train, [valid], [test]))

    def proba(k: int, x: np.ndarray) -> np.ndarray:
        clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute", metric="cosine").fit(tx, ty)
        full = np.zeros((len(x), n_classes))
        full[:, clf.classes_] = clf.predict_proba(x)
        return full

    val_acc = {k: float((proba(k, vx).argmax(1) == vy).mean()) for k in k_grid}
    best = max(val_acc.values())
    k = min(k for k, v in val_acc.items() if v == best)
    p = proba(k, sx)
    return k, float((p.argmax(1) == sy).mean()), average_precision_score(np.eye(n_classes)[sy], p)


def test_trainvaltest_matches_sklearn(tmp_path: Path) -> None:
    task_dir = multiclass_task(tmp_path / "tvt", {"train": 120, "valid": 40, "test": 50},
                               noise=1.5)
    grid = (1, 3, 5, 9)
    [summary] = run_knn_probe([task_dir], k_grid=grid)
    doc = json.loads((task_dir / OUTPUT_NAME).read_text())
    assert summary["result"] == doc and not summary["skipped"]
    k, acc, ap = _sklearn_fold(task_dir, ["train"], "valid", "test", grid, 3)
    assert doc["test"]["k"] == k
    assert doc["test"]["test_score"] == doc["test"]["test_top1_acc"] == pytest.approx(acc)
    assert doc["test"]["test_mAP"] == pytest.approx(ap, abs=1e-6)
    assert "aggregated_scores" not in doc
    assert doc["hparams"] == {"metric": "cosine", "weighting": "uniform", "temperature": None,
                              "k_grid": list(grid)}
    assert doc["score_mode"] == "max" and doc["primary_score"] == "top1_acc"
    assert set(doc["timing"]) >= {"read_s", "search_s", "total_s"}


def test_kfold_roles_scores_and_aggregate_match_heareval(tmp_path: Path) -> None:
    from heareval.predictions.task_predictions import (
        aggregate_test_results,
        get_splits_from_metadata,
    )

    sizes = {f: 20 + int(f[-1]) for f in FOLDS}
    task_dir = multiclass_task(tmp_path / "kfold", sizes, seed=5, noise=1.2,
                               split_mode="new_split_kfold")
    task = open_embedded_task(task_dir)
    assert fold_roles(task) == get_splits_from_metadata(task.metadata)
    grid = (1, 3, 7)
    [summary] = run_knn_probe([task_dir], k_grid=grid)
    doc = summary["result"]
    folds = sorted(sizes)
    for i, test in enumerate(folds):
        valid = folds[(i + 1) % 5]
        train = [f for f in folds if f not in (test, valid)]
        assert doc["knn"][test]["n_train"] == sum(sizes[f] for f in train)
        k, acc, _ = _sklearn_fold(task_dir, train, valid, test, grid, 3)
        assert (doc[test]["k"], doc[test]["test_score"]) == (k, pytest.approx(acc)), test
    per_fold = {f: doc[f] for f in folds}
    expected = aggregate_test_results(per_fold)
    assert doc["aggregated_scores"].keys() == expected.keys()
    for key, value in expected.items():
        assert doc["aggregated_scores"][key] == pytest.approx(value, nan_ok=True), key


def test_aggregate_skips_nan_like_pandas() -> None:
    from heareval.predictions.task_predictions import aggregate_test_results

    folds = {"a": {"x": 1.0, "y": float("nan")}, "b": {"x": 3.0, "y": 2.0}, "c": {"x": 8.0}}
    ours, theirs = aggregate_folds(folds), aggregate_test_results(folds)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key] == pytest.approx(theirs[key], nan_ok=True), key


def test_multilabel_scores_are_vote_fractions(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    vocab = ["a", "b", "c", "d"]
    splits = {}
    for name, n in (("train", 60), ("valid", 20), ("test", 25)):
        y = rng.random((n, 4)) < 0.4
        x = (y @ rng.standard_normal((4, 6)) + 0.3 * rng.standard_normal((n, 6)))
        splits[name] = (x.astype(np.float32), [[vocab[j] for j in np.flatnonzero(r)] for r in y])
    task_dir = write_task(tmp_path / "ml", splits, vocab, prediction_type="multilabel",
                          evaluation=("mAP", "d_prime"))
    [summary] = run_knn_probe([task_dir], k_grid=(5,), metric="euclidean")
    doc = summary["result"]
    ytrain = np.array([[v in r for v in vocab] for r in splits["train"][1]], np.float32)
    ytest = np.array([[v in r for v in vocab] for r in splits["test"][1]], np.float32)
    tx, sx = splits["train"][0], splits["test"][0]
    d = ((sx[:, None, :] - tx[None, :, :]) ** 2).sum(-1)
    nearest = np.argsort(d, axis=1, kind="stable")[:, :5]
    fractions = ytrain[nearest].mean(axis=1)
    assert doc["test"]["test_mAP"] == pytest.approx(
        average_precision_score(ytest, fractions, average="macro"))
    assert doc["test"]["test_score"] == doc["test"]["test_mAP"]
    assert "test_d_prime" in doc["test"]


def test_skip_unless_force_and_format_table(tmp_path: Path) -> None:
    task_dir = multiclass_task(tmp_path / "skip", {"train": 30, "valid": 10, "test": 10})
    run_knn_probe([task_dir], k_grid=(1, 3))
    out = task_dir / OUTPUT_NAME
    out.write_text(out.read_text().replace('"gemm"', '"gemm_marker"'))
    [again] = run_knn_probe([task_dir], k_grid=(1, 3))
    assert again["skipped"] and "gemm_marker" in out.read_text()
    table = format_table([again])
    assert "skip" in table and "skipped" in table and "top1_acc" in table
    [forced] = run_knn_probe([task_dir], k_grid=(1, 3), force=True)
    assert not forced["skipped"] and "gemm_marker" not in out.read_text()
    # the result is keyed by the options and the embeddings: either changed, it probes again
    [other_options] = run_knn_probe([task_dir], k_grid=(1, 3), weighting="similarity")
    assert not other_options["skipped"]
    assert other_options["result"]["hparams"]["temperature"] == 0.07
    multiclass_task(tmp_path / "skip", {"train": 30, "valid": 10, "test": 10}, seed=1)
    [other_embeddings] = run_knn_probe([task_dir], k_grid=(1, 3), weighting="similarity")
    assert not other_embeddings["skipped"]


def test_k_beyond_train_is_clipped_and_recorded(tmp_path: Path) -> None:
    task_dir = multiclass_task(tmp_path / "small", {"train": 6, "valid": 5, "test": 5})
    doc = run_knn_probe([task_dir], k_grid=(1, 5, 100))[0]["result"]
    assert doc["knn"]["test"]["k_grid"] == [1, 5, 6]
    assert doc["knn"]["test"]["k_clipped"] is True
    assert doc["test"]["k"] in (1, 5, 6)


def test_one_example_class_and_identical_embeddings(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    vocab = ["a", "b", "c"]
    x = rng.standard_normal((21, 5)).astype(np.float32)
    labels = [["a"], ["b"]] * 10 + [["c"]]  # one "c"
    splits = {"train": (x, labels), "valid": (x[[20, 0, 1]], [["c"], ["a"], ["b"]]),
              "test": (x[[20, 3]], [["c"], ["b"]])}
    doc = run_knn_probe([write_task(tmp_path / "one", splits, vocab)], k_grid=(1, 3))[0]["result"]
    assert (doc["test"]["k"], doc["test"]["test_score"]) == (1, 1.0)

    same = np.ones((9, 4), np.float32)
    train_labels = [["b"], ["a"], ["b"], ["c"], ["a"], ["a"], ["a"], ["c"], ["c"]]
    splits = {"train": (same, train_labels), "valid": (same[:4], [["b"], ["b"], ["a"], ["b"]]),
              "test": (same[:3], [["b"], ["b"], ["c"]])}
    task_dir = write_task(tmp_path / "same", splits, vocab)
    docs = [run_knn_probe([task_dir], k_grid=(1, 4), force=True)[0]["result"] for _ in range(2)]
    # Ties by train index: k=1 votes "b" (row 0, valid 3/4); k=4 votes a, b, b, c -> "b" too
    # (equal validation score, so the smaller k wins).
    assert docs[0]["knn"]["test"]["validation_scores"] == {"1": 0.75, "4": 0.75}
    assert (docs[0]["test"]["k"], docs[0]["test"]["test_score"]) == (1, pytest.approx(2 / 3))
    assert docs[0]["test"] == docs[1]["test"]


def test_file_and_option_errors(tmp_path: Path) -> None:
    def fresh(name: str) -> Path:
        return multiclass_task(tmp_path / name, {"train": 8, "valid": 4, "test": 4})

    with pytest.raises(UserError, match="not an embeddings directory"):
        run_knn_probe([tmp_path])
    task_dir = fresh("nan")
    bad = np.zeros((4, 8), np.float32)
    bad[2, 3] = np.nan
    bad.tofile(task_dir / "valid.embeddings.npy")
    with pytest.raises(UserError, match=r"valid\.embeddings\.npy: 1 of 4 .*NaN or inf"):
        run_knn_probe([task_dir])
    task_dir = fresh("inf")
    (np.full((4, 8), np.inf, np.float32)).tofile(task_dir / "test.embeddings.npy")
    with pytest.raises(UserError, match=r"test\.embeddings\.npy: 4 of 4"):
        run_knn_probe([task_dir])
    task_dir = fresh("dims")
    from hear_contrastune.data.embeddings import write_split
    write_split(task_dir, "test", np.zeros((4, 9), np.float32), [["c0"]] * 4)
    with pytest.raises(UserError, match=r"test\.embedding-dimensions\.json: 9 dimensions"):
        run_knn_probe([task_dir])
    task_dir = fresh("npsave")
    with open(task_dir / "train.embeddings.npy", "wb") as f:
        np.save(f, np.zeros((8, 8), np.float32))
    with pytest.raises(UserError, match=r"train\.embeddings\.npy: written with np\.save"):
        run_knn_probe([task_dir])
    task_dir = fresh("labels")
    write_split(task_dir, "valid", np.zeros((4, 8), np.float32), [["c0"], ["c0", "c1"], [], ["c1"]])
    with pytest.raises(UserError, match=r"valid\.target-labels\.pkl: 2 of 4 clips"):
        run_knn_probe([task_dir])
    task_dir = fresh("empty")
    write_split(task_dir, "valid", np.zeros((0, 8), np.float32), [])
    with pytest.raises(UserError, match=r"valid\.embedding-dimensions\.json: split has no clips"):
        run_knn_probe([task_dir])
    task_dir = fresh("options")
    meta = json.loads((task_dir / "task_metadata.json").read_text())
    for k_grid, match in (([0], "--k"), ([], "--k"), ([2.5], "--k")):
        with pytest.raises(UserError, match=match):
            run_knn_probe([task_dir], k_grid=k_grid)
    with pytest.raises(UserError, match="--metric"):
        run_knn_probe([task_dir], metric="manhattan")
    with pytest.raises(UserError, match="--weighting"):
        run_knn_probe([task_dir], weighting="distance")
    with pytest.raises(UserError, match="--temperature"):
        run_knn_probe([task_dir], temperature=-1)
    (task_dir / "task_metadata.json").write_text(json.dumps({**meta, "evaluation": ["nope"]}))
    with pytest.raises(UserError, match="unknown score 'nope'"):
        run_knn_probe([task_dir])
    (task_dir / "task_metadata.json").write_text(json.dumps({**meta, "split_mode": "odd"}))
    with pytest.raises(UserError, match="split_mode 'odd'"):
        run_knn_probe([task_dir])
    assert not list(tmp_path.glob(f"*/{OUTPUT_NAME}"))


def test_import_path_is_lean() -> None:
    """Importing the probe must not pull heareval.score's heavy stack (only scoring does)."""
    code = ("import sys, hear_contrastune.probes.knn; "
            "print([m for m in ('heareval', 'sklearn', 'pandas', 'pytorch_lightning', 'scipy') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

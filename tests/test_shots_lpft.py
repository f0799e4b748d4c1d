"""Few-shot draws (the same clips for every method of a seed) and LP-FT's linear-probe head."""

import csv
import json
from contextlib import ExitStack

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import eval_tasks
from hear_contrastune.comparison.compare import CompareConfig, compare
from hear_contrastune.comparison.results import load_results
from hear_contrastune.comparison.run_layout import shots_dir
from hear_contrastune.data.embeddings import open_embedded_task, read_split
from hear_contrastune.data.shots import draw_shots
from hear_contrastune.errors import UserError
from hear_contrastune.probes.logistic import DEFAULT_C_GRID
from hear_contrastune.training.build import build_run
from hear_contrastune.training.config import TuneConfig
from hear_contrastune.training.linear_head import fit_linear_head
from hear_contrastune.training.loop import tune
from hear_contrastune.training.objective import Classifier


def test_multiclass_draw_is_stratified_seeded_and_keeps_small_classes_whole():
    labels = [["a"]] * 10 + [["b"]] * 6 + [["c"]] * 2
    kept = draw_shots(labels, 4, seed=0, multilabel=False)
    counts = {c: sum(labels[i] == [c] for i in kept) for c in "abc"}
    assert counts == {"a": 4, "b": 4, "c": 2}
    assert list(kept) == sorted(kept)
    assert np.array_equal(kept, draw_shots(labels, 4, seed=0, multilabel=False))
    assert not np.array_equal(kept, draw_shots(labels, 4, seed=1, multilabel=False))
    with pytest.raises(UserError, match="--shots 0"):
        draw_shots(labels, 0, seed=0, multilabel=False)


def test_multilabel_draw_puts_every_label_on_at_least_n_clips():
    rng = np.random.default_rng(0)
    vocab = [f"l{i}" for i in range(8)]
    labels = [sorted({vocab[j] for j in rng.choice(8, rng.integers(1, 4), replace=False)})
              for _ in range(200)]
    kept = draw_shots(labels, 5, seed=3, multilabel=True)
    for label in vocab:
        have = sum(label in labels[i] for i in kept)
        assert have >= min(5, sum(label in row for row in labels))
    assert len(kept) < 8 * 5  # clips carrying several labels count for each


def small(task_dir, **kw) -> TuneConfig:
    return TuneConfig(**{"epochs": 1, "batch_size": 8, "m_per_class": 2, **kw},
                      task_dir=str(task_dir))


def test_every_method_of_a_seed_trains_on_the_same_clips_and_probes_see_them(tmp_path):
    tasks = tmp_path / "tasks"
    task = eval_tasks.build("gm-program", tasks, size="small")
    clips = {}
    for method in ("contrastive", "finetune", "lpft"):
        for seed in (0, 1):
            with ExitStack() as held:
                run = build_run(small(task, method=method, seed=seed, shots=2).resolved(),
                                tmp_path / f"{method}{seed}", "cpu", 0, held)
            clips[method, seed] = [(split, name) for split, name, _ in run.train.clips]
            reference = [(s, n) for s, n, _ in run.evaluator.reference.clips]
            assert reference == clips[method, seed]  # model selection's train clips too
    for seed in (0, 1):
        assert clips["contrastive", seed] == clips["finetune", seed] == clips["lpft", seed]
        assert len(clips["contrastive", seed]) == 2 * 4  # 2 per class, 4 classes (small build)
    assert clips["contrastive", 0] != clips["contrastive", 1]

    # compare: each method's probes are trained on exactly that seed's draw
    run = tmp_path / "cmp"
    compare(CompareConfig(tasks_dir=tasks, tuning=small(""), seeds=2, shots=(2,),
                          probes=("knn",), methods=("frozen", "contrastive")), run)
    records = load_results(run / "results.json")
    assert {(r.method, r.seed, r.shots) for r in records} == {
        ("frozen", 0, 2), ("frozen", 1, 2), ("contrastive", 0, 2), ("contrastive", 1, 2)}
    all_train = read_split(open_embedded_task(run / "embeddings/frozen-seed0/gm-program"),
                           "train")[1]
    for method in ("frozen", "contrastive"):
        for seed in (0, 1):
            view = open_embedded_task(shots_dir(run, f"{method}-seed{seed}-2shot", "gm-program"))
            _, labels = read_split(view, "train")
            kept = draw_shots(all_train, 2, seed, multilabel=False)
            assert labels == [all_train[i] for i in kept]
            assert len(read_split(view, "test")[1]) == len(
                read_split(open_embedded_task(run / "embeddings/frozen-seed0/gm-program"),
                           "test")[1])  # test stays whole


def test_lp_head_is_the_logistic_probe_folded_into_the_classifier():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 16)) * 2
    y = np.repeat(np.arange(3), 30)
    emb = torch.from_numpy((centres[y] + rng.standard_normal((90, 16))).astype(np.float32))
    train, valid = np.arange(90) % 3 != 0, np.arange(90) % 3 == 0
    head = Classifier(16, 3, scale=10.0)
    note = fit_linear_head(head, emb[train], torch.from_numpy(y[train]), emb[valid],
                           torch.from_numpy(y[valid]), multilabel=False)
    c = float(note.split("C ")[1].split(" ")[0])
    assert c in DEFAULT_C_GRID
    feats = (torch.nn.functional.normalize(emb, dim=-1) * 10).double().numpy()
    scaler = StandardScaler().fit(feats[train])
    reference = LogisticRegression(C=c, tol=1e-8, max_iter=10_000).fit(
        scaler.transform(feats[train]), y[train])
    with torch.no_grad():
        ours = torch.softmax(head(emb), dim=1).numpy()
    assert np.abs(ours - reference.predict_proba(scaler.transform(feats))).max() < 1e-3


def test_lpft_run_starts_from_the_probe_and_keeps_its_classifier(tmp_path):
    task = eval_tasks.build("gm-program", tmp_path / "tasks", size="small")
    runs = {m: tmp_path / m for m in ("finetune", "lpft")}
    for method, run in runs.items():
        tune(small(task, method=method), run, device="cpu")
    with open(runs["lpft"] / "epochs.csv") as f:
        first = next(csv.DictReader(f))
    # epoch 0 is the untuned encoder: a fitted head scores on valid, not chance (1/4)
    assert float(first["valid_head"]) > 0.5
    config = json.loads((runs["lpft"] / "config.json").read_text())
    assert config["method"] == "lpft" and config["head_lr_scale"] == 1.0
    meta = torch.load(runs["lpft"] / "best.pt", weights_only=True)["meta"]
    assert "head" in meta

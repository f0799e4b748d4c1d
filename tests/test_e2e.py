"""The user's path end to end on a tiny real task: build -> embed -> the official heareval
predictions runner (unmodified, in a subprocess, as the README says to call it) -> kNN probe;
and the main job (`contrastune quickstart`) at its smallest size."""

import json
import os
import subprocess
import sys

import numpy as np

import eval_tasks
from hear_contrastune.comparison.report.tables import summary_table
from hear_contrastune.comparison.results import load_results
from hear_contrastune.comparison.run_layout import DEFAULT_PROBES
from hear_contrastune.data.embeddings import open_embedded_task, read_split
from hear_contrastune.embed import embed_tasks
from hear_contrastune.probes.knn import run_knn_probe


def test_embeddings_run_through_the_official_heareval_runner(tmp_path):
    task_dir = eval_tasks.build("gm-program", tmp_path / "tasks", size="small")
    emb_dir = embed_tasks("resemblyzer", tmp_path / "tasks", tmp_path / "embeddings")[0]
    assert emb_dir == tmp_path / "embeddings" / "resemblyzer" / "gm-program"
    # the layout heareval reads: a raw float32 memmap of [n, d] (no np.save header)
    task = open_embedded_task(emb_dir)
    train, labels = read_split(task, "train")
    memmap = np.memmap(emb_dir / "train.embeddings.npy", dtype=np.float32, mode="r",
                       shape=tuple(json.loads((emb_dir / "train.embedding-dimensions.json")
                                              .read_text())))
    np.testing.assert_array_equal(memmap, train)
    assert len(labels) == len(json.loads((task_dir / "train.json").read_text()))

    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    done = subprocess.run([sys.executable, "-m", "heareval.predictions.runner", str(emb_dir),
                           "--grid", "faster"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    hear = json.loads((emb_dir / "test.predicted-scores.json").read_text())
    knn = run_knn_probe([emb_dir])[0]["result"]
    # 4 instruments: both probes must do far better than chance (0.25) on unseen keys
    assert hear["test"]["test_score"] > 0.5
    assert knn["test"]["test_score"] > 0.5
    assert (emb_dir / "test.knn-predicted-scores.json").exists()


def test_quickstart_small(tmp_path):
    cmd = [sys.executable, "-m", "cli", "quickstart", "--out", str(tmp_path / "qs"), "--size",
           "small", "--epochs", "2", "--batch-size", "8", "--m-per-class", "2",
           "--grid", "faster"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    # a preset of compare: its results.json, its report and its table
    records = load_results(tmp_path / "qs" / "results.json")
    assert {(r.method, r.probe) for r in records} == \
        {(m, p) for m in ("frozen", "contrastive") for p in DEFAULT_PROBES}
    assert all(0.0 <= r.score <= 1.0 for r in records)
    assert (tmp_path / "qs" / "report.md").is_file()
    assert done.stdout.rstrip().endswith(summary_table(records))
    # a finished main job reruns from its outputs in seconds
    again = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.splitlines()[-1] == done.stdout.splitlines()[-1]

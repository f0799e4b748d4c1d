"""The comparison report over a real tiny compare run: real embeddings files, the real kNN probe,
real CSV logs; the tables are checked against results.json and every output file is opened."""

import html
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from probe_fixtures import write_task

from hear_contrastune.comparison.report import write_report
from hear_contrastune.comparison.report.geometry import (
    alignment_uniformity,
    geometry,
    knn_purity,
    project,
    silhouette,
    tsne_map,
)
from hear_contrastune.comparison.run_layout import TITLES as PROBE_TITLES
from hear_contrastune.data.embeddings import fold_view, open_embedded_task
from hear_contrastune.errors import UserError
from hear_contrastune.probes.knn import run_knn_probe
from hear_contrastune.training.run_log import CsvLog

SEEDS = {"frozen": [0], "finetune": [0, 1], "contrastive": [0, 1]}
NOISE = {"frozen": 2.0, "finetune": 1.2, "contrastive": 0.6}  # tighter clusters when tuned
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _labels(rng: np.random.Generator, vocab: list[str], n: int, multilabel: bool) -> np.ndarray:
    """Multi-hot labels: one class each, or 1-2 labels each for multilabel."""
    y = np.eye(len(vocab))[rng.integers(0, len(vocab), n)]
    if multilabel:
        y = np.maximum(y, np.eye(len(vocab))[rng.integers(0, len(vocab), n)]
                       * (rng.random((n, 1)) < 0.5))
    return y


def _write_embeddings(task_dir: Path, rng: np.random.Generator, centers: np.ndarray,
                      vocab: list[str], labels: dict[str, np.ndarray], noise: float) -> None:
    """One method's embeddings of a task: the clips' label centroids plus noise."""
    data = {}
    for split, y in labels.items():
        x = y @ centers / y.sum(axis=1, keepdims=True)
        x += noise * rng.standard_normal(x.shape)
        data[split] = (x.astype(np.float32), [[vocab[i] for i in np.flatnonzero(r)] for r in y])
    multilabel = any(y.sum(axis=1).max() > 1 for y in labels.values())
    write_task(task_dir, data, vocab,
               split_mode="trainvaltest" if "test" in labels else "new_split_kfold",
               prediction_type="multilabel" if multilabel else "multiclass",
               evaluation=("mAP",) if multilabel else ("top1_acc", "mAP"))


def _write_logs(run_dir: Path, method: str, seed: int, epochs: int = 4, steps: int = 3) -> None:
    """What tune logs: finetune also logs its classifier's valid score, after valid_knn."""
    extra = ["valid_head"] if method == "finetune" else []
    run_dir.mkdir(parents=True)
    ep = CsvLog(run_dir / "epochs.csv", ["epoch", "loss", "valid_knn", *extra, "seconds"])
    st = CsvLog(run_dir / "steps.csv", ["epoch", "step", "loss", "lr", "clips_per_s"])
    ep.write({"epoch": 0, "loss": "", "valid_knn": 0.4, **{c: 0.1 for c in extra},
              "seconds": 0.0})
    for e in range(1, epochs + 1):
        for i in range(steps):
            st.write({"epoch": e, "step": (e - 1) * steps + i, "loss": 3 / (e + i / steps) + seed,
                      "lr": 1e-4, "clips_per_s": 100 + 10 * i})
        ep.write({"epoch": e, "loss": 3 / e + seed, "valid_knn": 0.4 + 0.1 * e,
                  **{c: 0.9 for c in extra}, "seconds": 1.5})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A compare run: a multiclass trainvaltest task and a multilabel 3-fold task."""
    run = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(0)
    tasks = {
        "pitch": (["low", "mid", "high"], {"train": 90, "valid": 30, "test": 60}, False),
        "mix": (["a", "b", "c", "d"], {"fold00": 40, "fold01": 40, "fold02": 40}, True),
    }
    records = []
    for task, (vocab, splits, multilabel) in tasks.items():
        centers = 2.0 * rng.standard_normal((len(vocab), 16))
        labels = {s: _labels(rng, vocab, n, multilabel) for s, n in splits.items()}
        kfold = "test" not in splits
        folds = sorted(splits) if kfold else [""]
        for method, seeds in SEEDS.items():
            for seed in seeds:
                for fold in folds:  # compare's layout: a k-fold task has one model per fold
                    label = f"{method}-seed{seed}" + (f"-{fold}" if fold and method != "frozen"
                                                      else "")
                    emb = run / "embeddings" / label / task
                    if not emb.exists():
                        _write_embeddings(emb, np.random.default_rng(seed), centers, vocab,
                                          labels, NOISE[method])
                    probed = emb if not fold else fold_view(
                        open_embedded_task(emb), fold,
                        run / "folds" / f"{method}-seed{seed}" / task / fold)
                    [knn] = run_knn_probe([probed], k_grid=(1, 3, 5, 10, 20))
                    metric = "mAP" if multilabel else "top1_acc"
                    scores = {"knn": knn["result"]["test"]["test_score"], "hear": rng.random(),
                              "linear": rng.random()}
                    if method != "frozen":
                        _write_logs(run / "models" / task / label, method, seed)
                    if method == "finetune":
                        scores["head"] = rng.random()
                    knn_extra = {  # what compare records: the valid score, the predictions
                        "valid_score": knn["result"]["test"]["validation_score"],
                        "predictions": str((probed / knn["result"]["predictions"])
                                           .relative_to(run))}
                    records += [{"task": task, "method": method, "seed": seed, "probe": p,
                                 "metric": metric, "score": float(s), "fold": fold,
                                 "n_folds": len(folds) if fold else 0,
                                 **(knn_extra if p == "knn" else {})}
                                for p, s in scores.items()]
    (run / "results.json").write_text(json.dumps(records))
    write_report(run)
    return run


def _tables(md: str) -> dict[str, tuple[list[str], dict[str, list[str]]]]:
    """Each titled markdown table: title -> (header, {row name: cells})."""
    out = {}
    for title, body in re.findall(r"\*\*([^*\n]+)\*\*\n\n((?:\|.*\|\n)+)", md):
        lines = [[c.strip().strip("*") for c in line.strip("|").split(" | ")]
                 for line in body.strip().splitlines()]
        out[title] = (lines[0], {row[0]: row[1:] for row in lines[2:]})
    return out


def _cell(values: list[float]) -> str:
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {np.std(values, ddof=1):.3f}"


def test_results_tables_match_results_json(run_dir: Path) -> None:
    records = json.loads((run_dir / "results.json").read_text())
    tables = _tables((run_dir / "report.md").read_text())
    for probe in ("hear", "linear", "knn", "head"):
        header, rows = tables[PROBE_TITLES[probe]]
        recs = [r for r in records if r["probe"] == probe]
        methods = sorted({r["method"] for r in recs})
        assert sorted(rows) == methods
        tasks = sorted({r["task"] for r in recs})
        metric = {r["task"]: r["metric"] for r in recs}
        assert header[1:-1] == ["mix (mAP; mean over 3 folds)", "pitch (top1_acc)"]
        assert header[-1] == "mean over 2 tasks"

        def task_score(method: str, task: str, seed: int, recs: list = recs) -> float:
            """A k-fold task's score is the mean over its folds, as heareval's."""
            return np.mean([r["score"] for r in recs
                            if (r["method"], r["task"], r["seed"]) == (method, task, seed)])

        for method in methods:
            for i, task in enumerate(tasks):
                vals = [task_score(method, task, seed) for seed in SEEDS[method]]
                assert rows[method][i] == _cell(vals), (probe, method, task, metric)
            per_seed = [np.mean([task_score(method, t, seed) for t in tasks])
                        for seed in SEEDS[method]]
            assert rows[method][-1] == _cell(per_seed)
    assert set(tables[PROBE_TITLES["head"]][1]) == {"finetune"}


def test_best_of_each_column_is_bold(run_dir: Path) -> None:
    md = (run_dir / "report.md").read_text()
    block = md.split(f"**{PROBE_TITLES['hear']}**")[1].split("\n\n")[1]
    rows = [line.strip("|").split(" | ") for line in block.splitlines()[2:]]
    for col in range(1, len(rows[0])):
        cells = [r[col].strip() for r in rows]
        means = [float(c.strip("*").split()[0]) for c in cells]
        assert [c.startswith("**") for c in cells] == [m == max(means) for m in means]


def test_geometry_and_training_tables(run_dir: Path) -> None:
    tables = _tables((run_dir / "report.md").read_text())
    pitch = next(v for k, v in tables.items() if k.startswith("pitch (multiclass"))
    mix = next(v for k, v in tables.items() if k.startswith("mix (multilabel"))
    for header, rows in (pitch, mix):
        assert header == ["method", "kNN purity", "silhouette", "alignment", "uniformity"]
        assert list(rows) == ["frozen", "finetune", "contrastive"]
        # the tuned stand-ins have tighter clusters: purer neighbourhoods, better aligned
        purity = {m: float(r[0].split()[0]) for m, r in rows.items()}
        align = {m: float(r[2].split()[0]) for m, r in rows.items()}
        assert purity["frozen"] < purity["finetune"] < purity["contrastive"]
        assert align["frozen"] > align["finetune"] > align["contrastive"]
    assert all(r[1] == "–" for r in mix[1].values())  # no silhouette for multilabel
    assert "nan" not in (run_dir / "report.md").read_text().lower()
    assert "2 seeds" not in (run_dir / "report.md").read_text()
    # the training table reports the column that selects the epoch, not the classifier's
    training = re.findall(r"^\| pitch \| (\w+) \| (\w+) \|.*$", (run_dir / "report.md").read_text(),
                          re.M)
    assert sorted(training) == [("contrastive", "valid_knn"), ("finetune", "valid_knn")]


def test_every_png_is_a_real_image(run_dir: Path) -> None:
    pngs = sorted((run_dir / "plots").glob("*.png"))
    names = {p.name for p in pngs}
    for task in ("pitch", "mix"):
        assert {f"projection-{task}.png", f"tsne-{task}.png", f"knn-k-{task}.png",
                f"training-{task}.png"} <= names
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_MAGIC
        with Image.open(png) as im:
            im.load()
            assert im.width >= 300 and im.height >= 200
            assert np.asarray(im.convert("L")).std() > 5  # something is drawn


def test_tsne_plot_beside_pca_shows_the_same_clips_differently(run_dir: Path) -> None:
    md = (run_dir / "report.md").read_text()
    for task in ("pitch", "mix"):
        pca, tsne = (run_dir / "plots" / f"{kind}-{task}.png" for kind in ("projection", "tsne"))
        with Image.open(pca) as a, Image.open(tsne) as b:
            assert a.size == b.size  # same panels, same legend
            assert np.abs(np.asarray(a.convert("L"), float)
                          - np.asarray(b.convert("L"), float)).mean() > 1
        assert md.index(f"plots/projection-{task}.png") < md.index(f"plots/tsne-{task}.png")


def test_tsne_map_is_seeded_and_degenerate_inputs_are_flat() -> None:
    rng = np.random.default_rng(0)
    x = (np.repeat(np.eye(3, 16), 20, axis=0) + 0.2 * rng.standard_normal((60, 16)))
    first, again = tsne_map(x), tsne_map(x)
    assert first.shape == (60, 2) and np.array_equal(first, again)
    assert not np.allclose(np.abs(first), np.abs(project(x)[0]), atol=0.1)
    # three well-separated classes stay apart: each clip's nearest clip shares its class
    d = ((first[:, None] - first[None]) ** 2).sum(-1) + np.diag(np.full(60, np.inf))
    assert (d.argmin(1) // 20 == np.arange(60) // 20).all()
    for xs in (np.ones((1, 4)), np.ones((3, 4)), np.ones((9, 4)), np.zeros((5, 4))):
        assert tsne_map(xs).tolist() == [[0.0, 0.0]] * len(xs)
    assert tsne_map(rng.standard_normal((5, 1))).shape == (5, 2)


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def test_index_html_references_only_existing_files(run_dir: Path) -> None:
    parser = _Refs()
    page = (run_dir / "index.html").read_text()
    parser.feed(page)
    assert "script" not in parser.tags and "link" not in parser.tags  # self-contained
    assert len(parser.refs) == len(list((run_dir / "plots").glob("*.png"))) == 8
    for ref in parser.refs:
        assert not ref.startswith(("/", "http:", "https:", "file:"))
        assert (run_dir / ref).is_file(), ref
    titles = [PROBE_TITLES[p] for p in ("hear", "linear", "knn", "head")]  # the fixture's probes
    for word in ("frozen", "finetune", "contrastive", "pitch", "mix", *titles):
        assert html.escape(word) in page
    assert not [p for p in run_dir.rglob("*.tmp")]  # atomic writes left nothing behind


def test_partial_and_empty_runs(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    md, page = write_report(empty)
    assert "results.json is missing" in md.read_text() and page.is_file()
    (empty / "results.json").write_text(json.dumps([
        {"task": "t1", "method": "frozen", "seed": 0, "probe": "knn", "metric": "mAP",
         "score": 0.5},
        {"task": "t2", "method": "frozen", "seed": 0, "probe": "knn", "metric": "mAP",
         "score": None},
        {"task": "t1", "method": "contrastive", "seed": 0, "probe": "knn", "metric": "mAP",
         "score": 0.7},
    ]))
    text = write_report(empty)[0].read_text()
    assert "| frozen | 0.500 | – | 0.500 |" in text
    assert "| contrastive | **0.700** | – | **0.700** |" in text
    assert "leaves out t2" in text
    # a tuning run that logged nothing yet and an embeddings folder missing its splits
    (empty / "models" / "t1" / "contrastive-seed0").mkdir(parents=True)
    (empty / "models" / "t1" / "contrastive-seed0" / "epochs.csv").write_text("epoch,loss\n")
    broken = empty / "embeddings" / "frozen-seed0" / "t1"
    write_task(broken, {}, ["x", "y"])
    text = write_report(empty)[0].read_text()
    assert "no epochs logged in models/t1/contrastive-seed0" in text
    assert "skipped embeddings/frozen-seed0/t1" in text
    (empty / "results.json").write_text("[{\"task\": 1}]")
    with pytest.raises(UserError, match="record 0"):
        write_report(empty)
    with pytest.raises(UserError, match="not a directory"):
        write_report(tmp_path / "missing")


def test_measures_known_values_and_degenerate_inputs() -> None:
    one_hot = np.eye(2)[[0, 0, 1, 1]]
    x = np.array([[1, 0], [1, 0], [-1, 0], [-1, 0]], dtype=np.float32)
    assert knn_purity(x, one_hot, False, k=1) == 1.0
    assert alignment_uniformity(x, one_hot) == (0.0, pytest.approx(math.log(4 * np.exp(-8) / 6
                                                                              + 2 / 6)))
    assert silhouette(x, one_hot, False) == pytest.approx(1.0)
    # one clip, one class, identical and all-zero embeddings: defined values or None, never NaN
    cases = [
        (np.ones((1, 3)), np.ones((1, 1))),
        (np.ones((5, 3)), np.ones((5, 1))),
        (np.zeros((4, 3)), np.eye(2)[[0, 1, 0, 1]]),
        (np.random.default_rng(0).standard_normal((3, 2)), np.zeros((3, 2))),  # no labels
    ]
    for xs, ys in cases:
        for multilabel in (False, True):
            values = geometry(xs.astype(np.float32), ys, multilabel)
            assert all(v is None or math.isfinite(v) for v in values.values()), values
    assert geometry(np.ones((1, 3), np.float32), np.ones((1, 1)), False) == {
        "purity": None, "silhouette": None, "alignment": None, "uniformity": None}
    # multilabel purity is the Jaccard overlap: {a} vs {a, b} is 1/2
    assert knn_purity(x[:2], np.array([[1, 0], [1, 1]]), True, k=1) == 0.5


VERDICT = re.compile(r"^(win|tie|loss) ([+-]\d\.\d{3}) \[([+-]\d\.\d{3}), ([+-]\d\.\d{3})\]"
                     r" vs finetune$")


def test_report_opens_with_the_verdict(run_dir: Path) -> None:
    md = (run_dir / "report.md").read_text()
    assert re.findall(r"^## (.*)$", md, re.M)[0].startswith("Verdict: contrastive tuning vs")
    header, rows = _tables(md)["contrastive − best fine-tuning variant"]
    assert header == ["task", "HEAR MLP", "heareval linear", "kNN"]
    assert sorted(rows) == ["mix", "pitch"]
    for task, (hear, linear, knn) in rows.items():
        assert hear == linear == "no per-clip predictions"  # the fixture's stand-in scores
        verdict, diff, low, high = VERDICT.match(knn).groups()
        assert float(low) <= float(diff) <= float(high)
        assert verdict == ("win" if float(low) > 0 else "loss" if float(high) < 0 else "tie")
        records = [r for r in json.loads((run_dir / "results.json").read_text())
                   if (r["task"], r["probe"]) == (task, "knn")]
        point = np.mean([np.mean([r["score"] for r in records
                                  if (r["method"], r["seed"]) == (m, seed)]) * sign
                         for seed in (0, 1) for m, sign in (("contrastive", 1), ("finetune", -1))]
                        ) * 2
        assert float(diff) == pytest.approx(point, abs=5e-4)
    assert re.search(r"Over 2 task × probe cells: \d wins?, \d ties?, \d loss(es)?\.", md)
    assert "1000 replicates" in md and "Seeds: 0, 1." in md
    others = _tables(md)["Every other comparison"][1]
    assert set(others) == {"mix", "pitch"}  # first column: task; the comparisons follow
    page = (run_dir / "index.html").read_text()
    assert page.index("contrastive − best fine-tuning variant") < page.index(PROBE_TITLES["knn"])


def test_few_shot_records_stay_out_of_the_main_tables(tmp_path: Path) -> None:
    records = [{"task": "t", "method": m, "seed": s, "probe": "knn", "metric": "mAP",
                "score": 0.1 * (i + 1) + 0.01 * s + (0.5 if shots == 0 else 0.0),
                "shots": shots}
               for i, m in enumerate(("frozen", "finetune", "contrastive"))
               for s in ((0,) if m == "frozen" else (0, 1)) for shots in (0, 2, 8)]
    (tmp_path / "results.json").write_text(json.dumps(records))
    md = write_report(tmp_path)[0].read_text()
    rows = _tables(md)[PROBE_TITLES["knn"]][1]
    assert rows["frozen"][0] == "0.600" and rows["contrastive"][0] == "0.805 ± 0.007"
    best = _tables(md)["contrastive − best fine-tuning variant"][1]
    assert list(best) == ["t (2-shot)", "t (8-shot)", "t"]
    assert all(v == ["no per-clip predictions"] for v in best.values())
    with Image.open(tmp_path / "plots" / "shots-t.png") as im:
        assert im.width >= 300 and np.asarray(im.convert("L")).std() > 5

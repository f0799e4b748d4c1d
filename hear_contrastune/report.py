"""The comparison report of a `contrastune compare` run: which method's embeddings are better,
and how tuning changed them.

`write_report(run_dir)` reads what the run left (possibly only part of it) and writes
RUN/report.md, RUN/index.html (opens from disk: inline CSS, no JavaScript, PNGs by relative
path) and RUN/plots/*.png:

1. probe scores per method, task and probe (mean ± std over seeds), from results.json;
2. the geometry of each method's test embeddings (kNN label purity, silhouette, alignment,
   uniformity), which says what the probes are scoring;
3. plots: a 2-D PCA projection of the test embeddings, the kNN probe's validation score against
   k, and the training curves of the tuned methods.

Whatever is missing or unreadable (a method without embeddings, a task without training logs)
is left out of its section and listed under "Notes": a partial run still gets a report.

The module reads top to bottom: load, measure, tables, plot, write.
"""

import csv
import html
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import normalize

from hear_contrastune.atomic import atomic_dir, write_text
from hear_contrastune.embedding_files import EmbeddedTask, open_embedded_task, read_split
from hear_contrastune.errors import UserError
from hear_contrastune.knn import KnnIndex
from hear_contrastune.knn_probe import OUTPUT_NAME as KNN_OUTPUT
from hear_contrastune.probe_protocol import label_matrix

METHOD_ORDER = ("frozen", "finetune", "contrastive")
PROBE_ORDER = ("hear", "linear", "knn", "head")
PROBE_TITLES = {
    "hear": "HEAR MLP probe (heareval)",
    "linear": "linear probe",
    "knn": "kNN probe",
    "head": "fine-tuned classifier head",
}
METHOD_COLORS = {"frozen": "tab:gray", "finetune": "tab:orange", "contrastive": "tab:blue"}
EXTRA_COLORS = ("tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")
RUN_NAME = re.compile(r"^(?P<method>.+)-seed(?P<seed>\d+)$")  # <method>-seed<seed>
PURITY_K = 10
# The pairwise measures and the scatter plots are O(n^2) / cluttered beyond this many clips; a
# fixed random sample of the test clips (the same clips for every method) stands in for them.
MAX_POINTS = 2000
DECIMALS = 3
DPI = 100


# ---------------------------------------------------------------- load


@dataclass(frozen=True)
class Record:
    """One line of results.json: a probe's primary test score for one (task, method, seed)."""

    task: str
    method: str
    seed: int
    probe: str
    metric: str
    score: float


@dataclass(frozen=True)
class RunFolder:
    """One (task, method, seed) folder: embeddings or a tuning run."""

    task: str
    method: str
    seed: int
    path: Path


@dataclass
class Run:
    """Everything the report reads from a run folder, and what it could not read."""

    path: Path
    records: list[Record]
    embeddings: list[RunFolder]
    models: list[RunFolder]
    notes: list[str] = field(default_factory=list)


def method_key(method: str) -> tuple[int, str]:
    """frozen, finetune, contrastive first, in that order; anything else after, by name."""
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def probe_key(probe: str) -> tuple[int, str]:
    return (PROBE_ORDER.index(probe) if probe in PROBE_ORDER else len(PROBE_ORDER), probe)


def load_results(path: Path) -> list[Record]:
    """results.json's records; a malformed file is a one-line UserError (it is the report's
    main input, and a silent skip would make a wrong table)."""
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, list):
        raise UserError(f"{path}: expected a JSON list of records")
    records, seen = [], set()
    for i, r in enumerate(raw):
        try:
            score = math.nan if r["score"] is None else float(r["score"])
            rec = Record(str(r["task"]), str(r["method"]), int(r["seed"]), str(r["probe"]),
                         str(r["metric"]), score)
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path}: record {i} is not {{task, method, seed, probe, metric, "
                            f"score}} ({type(e).__name__}: {e})") from None
        key = (rec.task, rec.method, rec.seed, rec.probe)
        if key in seen:
            raise UserError(f"{path}: two records for task {rec.task!r}, method {rec.method!r}, "
                            f"seed {rec.seed}, probe {rec.probe!r}")
        seen.add(key)
        records.append(rec)
    return records


def find_embeddings(root: Path) -> list[RunFolder]:
    """embeddings/<method>-seed<seed>/<task>/, keyed by the task's name in its metadata (the
    name results.json uses)."""
    found = []
    for run_dir in sorted(root.iterdir()) if root.is_dir() else []:
        m = RUN_NAME.match(run_dir.name)
        if not (m and run_dir.is_dir()):
            continue
        for task_dir in sorted(run_dir.iterdir()):
            if (task_dir / "task_metadata.json").is_file():
                name = task_dir.name
                try:
                    name = open_embedded_task(task_dir).name
                except UserError:
                    pass  # reported when its embeddings are read
                found.append(RunFolder(name, m["method"], int(m["seed"]), task_dir))
    return found


def find_models(root: Path, task_names: dict[str, str]) -> list[RunFolder]:
    """models/<task folder>/<method>-seed<seed>/ holding an epochs.csv; `task_names` maps a
    task folder's name to its metadata name where the embeddings tell it."""
    found = []
    for task_dir in sorted(root.iterdir()) if root.is_dir() else []:
        for run_dir in sorted(task_dir.iterdir()) if task_dir.is_dir() else []:
            m = RUN_NAME.match(run_dir.name)
            if m and (run_dir / "epochs.csv").is_file():
                name = task_names.get(task_dir.name, task_dir.name)
                found.append(RunFolder(name, m["method"], int(m["seed"]), run_dir))
    return found


def load_run(run_dir: Path) -> Run:
    """Find everything the report can use under `run_dir`."""
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a directory")
    notes = []
    results = run_dir / "results.json"
    records = load_results(results) if results.is_file() else []
    if not records:
        notes.append("results.json is missing or empty: no probe scores to show.")
    embeddings = find_embeddings(run_dir / "embeddings")
    task_names = {e.path.name: e.task for e in embeddings}
    models = find_models(run_dir / "models", task_names)
    return Run(run_dir, records, embeddings, models, notes)


def read_csv(path: Path) -> dict[str, np.ndarray]:
    """A metrics CSV as float columns; empty cells (epoch 0's loss) become NaN."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = list(rows[0]) if rows else []

    def number(text: str | None) -> float:
        try:
            return float(text) if text else math.nan
        except ValueError:
            return math.nan

    return {c: np.array([number(r.get(c)) for r in rows], dtype=np.float64) for c in columns}


def test_points(task: EmbeddedTask) -> tuple[np.ndarray, np.ndarray, int]:
    """The test clips' embeddings [n, d] and multi-hot labels [n, n_labels], at most MAX_POINTS
    of them, and the number of clips there were. A k-fold task's folds are pooled (each clip is
    a test clip in one fold). The sample depends only on the clip count, so every method gets
    the same clips."""
    names = ["test"] if "test" in task.splits else sorted(task.splits)
    if not names:
        raise UserError(f"{task.path / 'task_metadata.json'}: lists no splits")
    parts = [read_split(task, name) for name in names]
    x = np.concatenate([p[0] for p in parts])
    y = label_matrix([row for p in parts for row in p[1]], task.vocabulary)
    n = len(x)
    if n > MAX_POINTS:
        keep = np.sort(np.random.default_rng(0).choice(n, MAX_POINTS, replace=False))
        x, y = x[keep], y[keep]
    return x, y, n


def knn_curve(path: Path) -> tuple[str, dict[int, float]]:
    """The kNN probe's primary score name and its validation score per k, averaged over folds
    (over the k every fold tried: a small fold clips the grid)."""
    doc = json.loads(path.read_text())
    folds = [d["validation_scores"] for d in doc["knn"].values()]
    ks = sorted(set.intersection(*(set(map(int, f)) for f in folds)))
    return str(doc["primary_score"]), {
        k: float(np.mean([f[str(k)] for f in folds])) for k in ks
    }


# ---------------------------------------------------------------- measure


@dataclass(frozen=True)
class Measure:
    key: str
    title: str
    higher_is_better: bool
    meaning: str


MEASURES = (
    Measure("purity", "kNN purity", True,
            f"the fraction of a test clip's {PURITY_K} nearest test clips (cosine) that share its "
            "label (for multilabel tasks, the mean Jaccard overlap of their label sets); higher "
            "is better: it is what a kNN probe relies on."),
    Measure("silhouette", "silhouette", True,
            "scikit-learn's silhouette score with cosine distance, from -1 to 1: how much closer "
            "a clip is to its own class than to the nearest other class; higher is better "
            "(multiclass tasks only)."),
    Measure("alignment", "alignment", False,
            "the mean squared distance between the L2-normalised embeddings of two clips of the "
            "same class (sharing a label, for multilabel tasks), from 0 to 4 (Wang & Isola "
            "2020); lower is better: same-class clips sit together."),
    Measure("uniformity", "uniformity", False,
            "log of the mean of exp(-2 x squared distance) over all pairs of L2-normalised "
            "embeddings (Wang & Isola 2020): 0 when they all coincide, about -4 when they are "
            "spread evenly over a high-dimensional sphere; lower is better (less collapse), "
            "though tight same-class clusters raise it: read it beside alignment."),
)


def knn_purity(x: np.ndarray, y: np.ndarray, multilabel: bool, k: int = PURITY_K) -> float | None:
    """Mean label agreement between each clip and its k nearest other clips (cosine)."""
    n = len(x)
    if n < 2:
        return None
    k = min(k, n - 1)
    nn = KnnIndex(x, "cosine", device="cpu").search(x, k + 1).indices.numpy()
    not_self = nn != np.arange(n)[:, None]
    not_self[not_self.all(axis=1), -1] = False  # the clip fell outside a list of exact copies
    nn = nn[not_self].reshape(n, k)
    if not multilabel:
        cls = y.argmax(axis=1)
        return float((cls[nn] == cls[:, None]).mean())
    own, theirs = y.astype(bool)[:, None, :], y.astype(bool)[nn]
    inter, union = (own & theirs).sum(axis=2), (own | theirs).sum(axis=2)
    return float(np.where(union > 0, inter / np.maximum(union, 1), 1.0).mean())  # {} vs {}: 1


def silhouette(x: np.ndarray, y: np.ndarray, multilabel: bool) -> float | None:
    """Cosine silhouette by class; None where it is undefined (multilabel, < 2 classes)."""
    if multilabel:
        return None
    cls = y.argmax(axis=1)
    if not 2 <= len(np.unique(cls)) <= len(x) - 1:
        return None
    return float(silhouette_score(x, cls, metric="cosine"))


def alignment_uniformity(x: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None]:
    """Wang & Isola's alignment (same-class pairs) and uniformity (all pairs, t = 2) of the
    L2-normalised embeddings; y is multi-hot, so "same class" is "shares a label"."""
    n = len(x)
    if n < 2:
        return None, None
    z = normalize(x.astype(np.float64))  # all-zero rows stay zero
    gram = z @ z.T
    sq = np.diag(gram)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)
    other = ~np.eye(n, dtype=bool)
    same = (y @ y.T > 0) & other
    alignment = float(d2[same].mean()) if same.any() else None
    uniformity = float(np.log(np.exp(-2.0 * d2[other]).mean()))  # d2 <= 4: no underflow
    return alignment, uniformity


def geometry(x: np.ndarray, y: np.ndarray, multilabel: bool) -> dict[str, float | None]:
    """Every measure of one set of embeddings; None where a measure is undefined."""
    alignment, uniformity = alignment_uniformity(x, y)
    return {"purity": knn_purity(x, y, multilabel), "silhouette": silhouette(x, y, multilabel),
            "alignment": alignment, "uniformity": uniformity}


def project(x: np.ndarray) -> tuple[np.ndarray, float]:
    """2-D PCA of the L2-normalised embeddings (the space the measures use) and the share of
    variance it keeps. PCA, not t-SNE: t-SNE took ~40 s per 2000 clips on a 2-core machine."""
    z = normalize(x.astype(np.float64))
    if len(z) < 2 or np.ptp(z, axis=0).max() == 0:  # one clip, or all clips identical
        return np.zeros((len(z), 2)), 0.0
    pca = PCA(n_components=min(2, *z.shape), random_state=0)
    coords = pca.fit_transform(z)
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords, float(pca.explained_variance_ratio_.sum())


@dataclass
class Projection:
    """One method's 2-D test embeddings (its lowest seed), for the scatter plot."""

    seed: int
    coords: np.ndarray
    variance: float
    labels: np.ndarray  # multi-hot, [n, n_labels]


@dataclass
class TaskEmbeddings:
    """What the embeddings of one task say, per method."""

    vocabulary: list[str]
    multilabel: bool
    n_clips: int
    geometry: dict[str, list[dict[str, float | None]]] = field(default_factory=dict)
    projections: dict[str, Projection] = field(default_factory=dict)
    knn_metric: str = ""
    knn_curves: dict[str, list[dict[int, float]]] = field(default_factory=dict)


def measure_embeddings(run: Run) -> dict[str, TaskEmbeddings]:
    """Geometry, projection and kNN curve of every embeddings folder, one at a time (only the
    sample of test clips of one folder is in memory)."""
    tasks: dict[str, TaskEmbeddings] = {}
    for folder in sorted(run.embeddings, key=lambda f: (f.task, method_key(f.method), f.seed)):
        try:
            task = open_embedded_task(folder.path)
            x, y, n = test_points(task)
        except UserError as e:
            run.notes.append(f"skipped {folder.path.relative_to(run.path)}: {e}")
            continue
        summary = tasks.setdefault(folder.task, TaskEmbeddings(task.vocabulary, task.multilabel, n))
        summary.geometry.setdefault(folder.method, []).append(geometry(x, y, task.multilabel))
        if folder.method not in summary.projections:
            coords, variance = project(x)
            summary.projections[folder.method] = Projection(folder.seed, coords, variance, y)
        knn_file = folder.path / KNN_OUTPUT
        if knn_file.is_file():
            try:
                summary.knn_metric, curve = knn_curve(knn_file)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
                run.notes.append(f"unreadable {knn_file.relative_to(run.path)} "
                                 f"({type(e).__name__}: {e})")
            else:
                summary.knn_curves.setdefault(folder.method, []).append(curve)
        else:
            run.notes.append(f"no kNN probe output in {folder.path.relative_to(run.path)}")
    return tasks


@dataclass
class TrainingLog:
    """One tuning run's epochs.csv and steps.csv (each with an epoch column; steps is an empty
    dict where steps.csv is absent or empty)."""

    seed: int
    epochs: dict[str, np.ndarray]
    steps: dict[str, np.ndarray]

    @property
    def valid_columns(self) -> list[str]:
        """The validation scores logged: valid_knn (what selects the epoch) first, then e.g.
        valid_head, the fine-tuned classifier's own score."""
        return [c for c in self.epochs if c.startswith("valid")]

    @property
    def valid_column(self) -> str | None:
        """The validation score that selects the epoch."""
        return next(iter(self.valid_columns), None)


def load_training(run: Run) -> dict[str, dict[str, list[TrainingLog]]]:
    """task -> method -> one log per seed."""
    logs: dict[str, dict[str, list[TrainingLog]]] = defaultdict(dict)
    for folder in sorted(run.models, key=lambda f: (f.task, method_key(f.method), f.seed)):
        epochs = read_csv(folder.path / "epochs.csv")
        if "epoch" not in epochs:
            run.notes.append(f"no epochs logged in {folder.path.relative_to(run.path)}")
            continue
        steps_file = folder.path / "steps.csv"
        steps = read_csv(steps_file) if steps_file.is_file() else {}
        log = TrainingLog(folder.seed, epochs, steps if "epoch" in steps else {})
        logs[folder.task].setdefault(folder.method, []).append(log)
    return dict(logs)


# ---------------------------------------------------------------- tables


@dataclass(frozen=True)
class Cell:
    text: str
    value: float | None = None  # compared for "best in column" (the shown, rounded mean)


def stat_cell(values: Iterable[float | None], decimals: int = DECIMALS) -> Cell:
    """"mean ± std" (sample std, ddof = 1, as heareval aggregates folds) over the finite
    values; just the mean for one value; "–" for none."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return Cell("–")
    mean = math.fsum(vals) / len(vals)
    text = f"{mean:.{decimals}f}"
    if len(vals) > 1:
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
        text += f" ± {std:.{decimals}f}"
    return Cell(text, round(mean, decimals))


@dataclass
class Table:
    """Header, rows of cells and, per column, whether higher is better (True), lower (False),
    or neither (None: nothing is bold). The first `names` columns name the row (left-aligned)."""

    header: list[str]
    rows: list[list[Cell]]
    higher_is_better: list[bool | None]
    names: int = 1

    def bold(self) -> set[tuple[int, int]]:
        """(row, column) of the best cells of each ranked column; ties are all bold."""
        out = set()
        for c, higher in enumerate(self.higher_is_better):
            vals = [(r, row[c].value) for r, row in enumerate(self.rows)
                    if row[c].value is not None]
            if higher is None or len(vals) < 2:
                continue
            best = (max if higher else min)(v for _, v in vals)
            out |= {(r, c) for r, v in vals if v == best}
        return out


def results_tables(records: list[Record]) -> list[tuple[str, Table, str]]:
    """One table per probe: rows = methods, columns = tasks and the mean over the tasks every
    method of the table has. Returns (title, table, footnote)."""
    out = []
    for probe in sorted({r.probe for r in records}, key=probe_key):
        recs = [r for r in records if r.probe == probe]
        tasks = sorted({r.task for r in recs})
        methods = sorted({r.method for r in recs}, key=method_key)
        scores: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
        metrics: dict[str, list[str]] = defaultdict(list)
        for r in recs:
            scores[r.method, r.task][r.seed] = r.score
            if r.metric not in metrics[r.task]:
                metrics[r.task].append(r.metric)
        shared = [t for t in tasks if all((m, t) in scores for m in methods)]
        header = ["method", *(f"{t} ({'/'.join(metrics[t])})" for t in tasks),
                  f"mean over {len(shared)} task{'s' * (len(shared) != 1)}"]
        rows = [[Cell(m), *(stat_cell(scores[m, t].values()) if (m, t) in scores else Cell("–")
                             for t in tasks), mean_over_tasks(scores, m, shared)]
                for m in methods]
        note = "" if len(shared) == len(tasks) else (
            "The mean leaves out " + ", ".join(t for t in tasks if t not in shared)
            + ", which not every method has.")
        out.append((PROBE_TITLES.get(probe, probe), Table(header, rows, [None] + [True] * (
            len(tasks) + 1)), note))
    return out


def mean_over_tasks(scores: dict[tuple[str, str], dict[int, float]], method: str,
                    tasks: Sequence[str]) -> Cell:
    """The mean over `tasks`; ± the std over seeds of the per-seed task means when every task
    has the same seeds (otherwise the mean of the task means alone)."""
    if not tasks:
        return Cell("–")
    per_task = [scores[method, t] for t in tasks]
    seeds = set(per_task[0])
    if all(set(s) == seeds for s in per_task):
        return stat_cell(math.fsum(s[seed] for s in per_task) / len(tasks) for seed in seeds)
    task_means = [stat_cell(s.values()).value for s in per_task]
    if any(v is None for v in task_means):
        return Cell("–")
    mean = math.fsum(task_means) / len(task_means)
    return Cell(f"{mean:.{DECIMALS}f}", round(mean, DECIMALS))


def geometry_table(summary: TaskEmbeddings) -> Table:
    """Rows = methods, columns = the measures (mean ± std over seeds)."""
    rows = [[Cell(m), *(stat_cell(g[measure.key] for g in per_seed) for measure in MEASURES)]
            for m, per_seed in summary.geometry.items()]
    return Table(["method", *(m.title for m in MEASURES)], rows,
                 [None, *(m.higher_is_better for m in MEASURES)])


def training_table(logs: dict[str, dict[str, list[TrainingLog]]]) -> Table:
    """Per (task, method): epochs, best validation score, time and throughput, over seeds."""
    rows = []
    for task, by_method in sorted(logs.items()):
        for method, runs in by_method.items():
            valid_names = sorted({r.valid_column for r in runs if r.valid_column})
            best = [float(np.nanmax(r.epochs[r.valid_column])) for r in runs
                    if r.valid_column and np.isfinite(r.epochs[r.valid_column]).any()]
            minutes = [float(np.nansum(r.epochs["seconds"])) / 60 for r in runs
                       if "seconds" in r.epochs]
            rows.append([Cell(task), Cell(method), Cell(", ".join(valid_names) or "–"),
                         Cell(str(len(runs))),
                         Cell(str(max(int(np.nanmax(r.epochs["epoch"])) for r in runs))),
                         stat_cell(best), stat_cell(minutes, 1),
                         stat_cell((epoch_throughput(r) for r in runs), 0)])
    header = ["task", "method", "validation column", "seeds", "epochs", "best validation",
              "minutes per seed", "clips/s"]
    return Table(header, rows, [None] * len(header), names=3)


def epoch_throughput(log: TrainingLog) -> float | None:
    """Median over epochs of clips/s at each epoch's last step (tune logs a running mean)."""
    if "clips_per_s" not in log.steps:
        return None
    epochs, rate = log.steps["epoch"], log.steps["clips_per_s"]
    last = np.r_[epochs[1:] != epochs[:-1], True]
    finite = rate[last][np.isfinite(rate[last])]
    return float(np.median(finite)) if len(finite) else None


# ---------------------------------------------------------------- plot


def method_color(method: str, methods: Sequence[str]) -> str:
    """The same colour for a method in every figure."""
    others = [m for m in methods if m not in METHOD_COLORS]
    return METHOD_COLORS.get(method) or EXTRA_COLORS[others.index(method) % len(EXTRA_COLORS)]


def new_figure(width: float, height: float) -> Figure:
    """A figure on the Agg canvas, outside pyplot (no global state, nothing to close)."""
    fig = Figure(figsize=(width, height), layout="constrained", dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def class_colors(n_classes: int) -> np.ndarray:
    """Distinct colours for up to 20 classes; a continuous colormap beyond."""
    if n_classes <= 10:
        return colormaps["tab10"](np.arange(n_classes))
    if n_classes <= 20:
        return colormaps["tab20"](np.arange(n_classes))
    return colormaps["turbo"](np.linspace(0, 1, n_classes))


def plot_projections(summary: TaskEmbeddings, task: str, path: Path) -> None:
    """One scatter panel per method, clips coloured by class (for multilabel: by their first
    label in vocabulary order; clips without labels in light grey)."""
    methods = list(summary.projections)
    fig = new_figure(4.2 * len(methods), 4.6)
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    colors = class_colors(len(summary.vocabulary))
    shown: set[int] = set()
    unlabelled = False
    for ax, method in zip(axes, methods, strict=True):
        proj = summary.projections[method]
        has_label = proj.labels.any(axis=1)
        cls = proj.labels.argmax(axis=1)
        if not has_label.all():
            unlabelled = True
            ax.scatter(*proj.coords[~has_label].T, s=6, color="lightgrey", linewidths=0)
        for c in np.unique(cls[has_label]):
            pts = proj.coords[has_label & (cls == c)]
            ax.scatter(*pts.T, s=8, alpha=0.75, color=colors[c], linewidths=0)
            shown.add(int(c))
        ax.set_title(f"{method} (seed {proj.seed}): PCA keeps {proj.variance:.0%}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if len(summary.vocabulary) <= 20:  # beyond, a legend would hide the plot
        entries = [(colors[c], summary.vocabulary[c]) for c in sorted(shown)]
        entries += [("lightgrey", "(no label)")] * unlabelled
        handles = [Line2D([], [], marker="o", linestyle="", color=color, label=label)
                   for color, label in entries]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(10, len(handles)),
                   fontsize=8, frameon=False)
    fig.suptitle(f"{task}: test embeddings", fontsize=11)
    fig.savefig(path, format="png")


def plot_knn_curves(summary: TaskEmbeddings, task: str, path: Path) -> None:
    """Validation score against k per method: mean over seeds, ± std band when there are
    several. A curve that rises with k means labels agree only over wide neighbourhoods."""
    methods = list(summary.knn_curves)
    fig = new_figure(6, 4)
    ax = fig.subplots()
    all_ks: set[int] = set()
    for i, method in enumerate(methods):
        curves = summary.knn_curves[method]
        ks = sorted(set.intersection(*(set(c) for c in curves)))
        all_ks |= set(ks)
        vals = np.array([[c[k] for k in ks] for c in curves])
        mean = vals.mean(axis=0)
        color = method_color(method, methods)
        label = f"{method} ({len(curves)} seed{'s' * (len(curves) > 1)})"
        # shrinking markers of distinct shapes keep a curve visible under an equal one
        ax.plot(ks, mean, marker="osD^v"[i % 5], markersize=max(3, 10 - 2 * i), alpha=0.85,
                color=color, label=label)
        if len(curves) > 1:
            std = vals.std(axis=0, ddof=1)
            ax.fill_between(ks, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
    ax.set_xscale("log")
    ax.set_xticks(sorted(all_ks), [str(k) for k in sorted(all_ks)])
    ax.minorticks_off()
    ax.set_xlabel("k (neighbours)")
    ax.set_ylabel(f"validation {summary.knn_metric}")
    ax.set_title(f"{task}: kNN probe, validation score vs k", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, format="png")


def plot_training(by_method: dict[str, list[TrainingLog]], task: str, path: Path) -> None:
    """Per tuned method: loss (per step, faint; per epoch, bold) and validation score against
    epoch. Methods get their own panels: their losses and validation scores differ in kind."""
    methods = list(by_method)
    fig = new_figure(10, 3.2 * len(methods))
    axes = fig.subplots(len(methods), 2, squeeze=False)
    for (loss_ax, valid_ax), method in zip(axes, methods, strict=True):
        color = method_color(method, methods)
        for i, log in enumerate(by_method[method]):
            style = ("-", "--", ":", "-.")[i % 4]
            if "loss" in log.steps and len(log.steps["loss"]):
                loss_ax.plot(step_epochs(log.steps["epoch"]), log.steps["loss"], color=color,
                             alpha=0.25, linewidth=0.8)
            if "loss" in log.epochs:
                loss_ax.plot(log.epochs["epoch"], log.epochs["loss"], style, marker="o",
                             color=color, label=f"seed {log.seed}")
            for column in log.valid_columns:
                selects = column == log.valid_column  # the others are drawn with crosses
                valid_ax.plot(log.epochs["epoch"], log.epochs[column], style, color=color,
                              marker="o" if selects else "x",
                              label=f"seed {log.seed}" + ("" if selects else f": {column}"))
        names = sorted({c for log in by_method[method] for c in log.valid_columns})
        loss_ax.set_title(f"{method}: training loss (faint: per step)", fontsize=10)
        valid_ax.set_title(f"{method}: {', '.join(names) or 'no validation column'}",
                           fontsize=10)
        for ax in (loss_ax, valid_ax):
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    fig.suptitle(f"{task}: training curves", fontsize=11)
    fig.savefig(path, format="png")


def step_epochs(epochs: np.ndarray) -> np.ndarray:
    """Each step's position in epochs: step i of n in epoch e sits at e - 1 + (i + 1) / n, so
    an epoch's steps lead up to its per-epoch point at x = e."""
    out = np.empty(len(epochs))
    for e in np.unique(epochs):
        at = np.flatnonzero(epochs == e)
        out[at] = e - 1 + np.arange(1, len(at) + 1) / len(at)
    return out


# ---------------------------------------------------------------- write


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class TableBlock:
    table: Table
    title: str = ""
    note: str = ""


@dataclass(frozen=True)
class Plot:
    src: str  # relative to the run folder
    caption: str


Block = Heading | Paragraph | Bullets | TableBlock | Plot


def slug(name: str) -> str:
    """A file-name-safe form of a task name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "task"


def build_report(run: Run, plot_dir: Path) -> list[Block]:
    """Measure, draw the plots into `plot_dir`, and lay out the report's blocks."""
    embeddings = measure_embeddings(run)
    training = load_training(run)
    methods = sorted({r.method for r in run.records} | {e.method for e in run.embeddings},
                     key=method_key)
    seeds = sorted({r.seed for r in run.records} | {e.seed for e in run.embeddings})
    tasks = sorted({r.task for r in run.records} | set(embeddings) | set(training))
    blocks: list[Block] = [
        Heading(1, f"Comparison report: {run.path.name}"),
        Paragraph(f"{len(tasks)} task{'s' * (len(tasks) != 1)} ({', '.join(tasks) or 'none'}); "
                  f"methods {', '.join(methods) or 'none'}; seeds "
                  f"{', '.join(map(str, seeds)) or 'none'}."),
        Heading(2, "Probe scores"),
        Paragraph("Each task's primary test score (higher is better), mean ± sample std over "
                  "seeds (just the mean for one seed). Bold: the best method in the column. "
                  "The mean over tasks is ± the std over seeds of each seed's task average."),
    ]
    for title, table, note in results_tables(run.records):
        blocks.append(TableBlock(table, title, note))
    if embeddings:
        blocks += [
            Heading(2, "Embedding geometry"),
            Paragraph(f"Measured on each method's test embeddings (all folds for k-fold tasks; "
                      f"at most {MAX_POINTS} clips, the same random sample for every method), "
                      "mean ± std over seeds. Bold: the best method in the column."),
            Bullets([f"{m.title}: {m.meaning}" for m in MEASURES]),
        ]
        for task, summary in embeddings.items():
            sample = (f", a sample of {MAX_POINTS} of {summary.n_clips} clips"
                      if summary.n_clips > MAX_POINTS else f", {summary.n_clips} clips")
            kind = "multilabel" if summary.multilabel else "multiclass"
            blocks.append(TableBlock(geometry_table(summary), f"{task} ({kind}{sample})"))
        blocks.append(Heading(2, "Test embeddings in 2-D"))
        for task, summary in embeddings.items():
            name = f"projection-{slug(task)}.png"
            plot_projections(summary, task, plot_dir / name)
            colour = ("by the clip's first label in vocabulary order (grey: no label)"
                      if summary.multilabel else "by class")
            blocks.append(Plot(f"plots/{name}", f"{task}: PCA of the L2-normalised test "
                                f"embeddings of each method's lowest seed, coloured {colour}. "
                                "The panel title gives the share of variance the two axes "
                                "keep."))
        curves = {t: s for t, s in embeddings.items() if s.knn_curves}
        if curves:
            blocks.append(Heading(2, "kNN probe: validation score vs k"))
        for task, summary in curves.items():
            name = f"knn-k-{slug(task)}.png"
            plot_knn_curves(summary, task, plot_dir / name)
            blocks.append(Plot(f"plots/{name}", f"{task}: the kNN probe's validation "
                                f"{summary.knn_metric} at each k (mean over folds), mean over "
                                "seeds with a ± std band; the probe tests at the best k."))
    if training:
        blocks += [Heading(2, "Training"), TableBlock(training_table(training))]
        for task, by_method in training.items():
            name = f"training-{slug(task)}.png"
            plot_training(by_method, task, plot_dir / name)
            blocks.append(Plot(f"plots/{name}", f"{task}: loss and validation score per "
                                "epoch of each tuned method; one line style per seed."))
    if run.notes:
        blocks += [Heading(2, "Notes"), Bullets(run.notes)]
    return blocks


def markdown(blocks: list[Block]) -> str:
    """The report as GitHub-flavoured markdown."""
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Paragraph):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, TableBlock):
            bold = b.table.bold()
            lines = [f"**{b.title}**", ""] if b.title else []
            lines.append("| " + " | ".join(map(esc, b.table.header)) + " |")
            names = b.table.names
            lines.append("|" + "|".join([":---"] * names
                                        + ["---:"] * (len(b.table.header) - names)) + "|")
            for r, row in enumerate(b.table.rows):
                cells = [f"**{esc(c.text)}**" if (r, i) in bold else esc(c.text)
                         for i, c in enumerate(row)]
                lines.append("| " + " | ".join(cells) + " |")
            if b.note:
                lines += ["", b.note]
            out.append("\n".join(lines))
        else:
            out.append(f"![{Path(b.src).stem}]({quote(b.src)})\n\n*{b.caption}*")
    return "\n\n".join(out) + "\n"


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1200px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.4em 0 1.4em; font-size: 0.92em; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.3em; }
th, td { border: 1px solid #d0d0d0; padding: 4px 10px; text-align: right;
         font-variant-numeric: tabular-nums; white-space: nowrap; }
th { background: #f3f3f3; }
th.name, td.name { text-align: left; }
td.best { font-weight: 700; background: #eef6ee; }
p.note { color: #555; font-size: 0.9em; margin-top: -1em; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
"""


def html_cell(tag: str, text: str, classes: list[str]) -> str:
    attr = f" class=\"{' '.join(classes)}\"" if classes else ""
    return f"<{tag}{attr}>{html.escape(text)}</{tag}>"


def html_table(block: TableBlock) -> str:
    """A table with its title as caption; name columns and the best cells get CSS classes."""
    table, e = block.table, html.escape
    bold = table.bold()
    rows = ["".join(html_cell("th", h, ["name"] * (i < table.names))
                    for i, h in enumerate(table.header))]
    rows += ["".join(html_cell("td", c.text,
                               ["name"] * (i < table.names) + ["best"] * ((r, i) in bold))
                     for i, c in enumerate(row))
             for r, row in enumerate(table.rows)]
    caption = f"<caption>{e(block.title)}</caption>" if block.title else ""
    note = f"\n<p class=\"note\">{e(block.note)}</p>" if block.note else ""
    return f"<table>{caption}" + "".join(f"<tr>{r}</tr>" for r in rows) + f"</table>{note}"


def html_page(blocks: list[Block], title: str) -> str:
    """The report as one self-contained HTML page (inline CSS, no script)."""
    e = html.escape
    body = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            body.append(f"<p>{e(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, TableBlock):
            body.append(html_table(b))
        else:
            body.append(f"<figure><img src=\"{e(quote(b.src))}\" alt=\"{e(b.caption)}\">"
                        f"<figcaption>{e(b.caption)}</figcaption></figure>")
    return ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def write_report(run_dir: Path) -> tuple[Path, Path]:
    """Write RUN/report.md, RUN/index.html and RUN/plots/ for a compare run; returns the two
    pages. The plots folder is replaced whole and each page renamed into place, so a killed
    report leaves the previous one intact."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    with atomic_dir(run_dir / "plots") as plot_dir:
        blocks = build_report(run, plot_dir)
    md, page = run_dir / "report.md", run_dir / "index.html"
    write_text(md, markdown(blocks))
    write_text(page, html_page(blocks, f"contrastune report: {run_dir.name}"))
    return md, page

"""What the test embeddings' geometry says: kNN label purity, silhouette, alignment and
uniformity, 2-D PCA and t-SNE maps and the kNN probe's validation curve, per task and method."""

import json
from dataclasses import dataclass, field

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import normalize
from threadpoolctl import threadpool_limits

from hear_contrastune.comparison.report.load import ReportInput, knn_curve, test_points
from hear_contrastune.comparison.run_layout import method_key
from hear_contrastune.data.embeddings import open_embedded_task
from hear_contrastune.errors import UserError
from hear_contrastune.estimators.knn_search import KnnIndex
from hear_contrastune.probes.knn import OUTPUT_NAME as KNN_OUTPUT

PURITY_K = 10
TSNE_PERPLEXITY = 30.0


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
    variance it keeps: global directions, which t-SNE's map does not keep."""
    z = normalize(x.astype(np.float64))
    if len(z) < 2 or np.ptp(z, axis=0).max() == 0:  # one clip, or all clips identical
        return np.zeros((len(z), 2)), 0.0
    pca = PCA(n_components=min(2, *z.shape), random_state=0)
    coords = pca.fit_transform(z)
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords, float(pca.explained_variance_ratio_.sum())


def tsne_map(x: np.ndarray) -> np.ndarray:
    """2-D t-SNE of the same L2-normalised embeddings: which clips are neighbours, which PCA's
    two axes hide when classes differ in more than two directions. scikit-learn's defaults
    (PCA init, 1000 iterations, perplexity 30, capped below the clip count), seeded so a report
    redraws the same map. One thread: for 2000 clips x 256 dims on a 2-core machine it took
    5.1 s (3.7 s with two threads idle, but 33 s with two against 7.9 s with one while another
    process ran), so a report of 4 tasks x 3 methods spends about a minute on it."""
    z = normalize(x.astype(np.float64))
    if len(z) < 4 or np.ptp(z, axis=0).max() == 0:  # too few clips, or all identical
        return np.zeros((len(z), 2))
    tsne = TSNE(n_components=2, perplexity=min(TSNE_PERPLEXITY, (len(z) - 1) / 3),
                init="pca" if z.shape[1] >= 2 else "random", random_state=0)
    with threadpool_limits(1):
        return tsne.fit_transform(z)


@dataclass
class Projection:
    """One method's 2-D test embeddings (its lowest seed), for the scatter plots."""

    seed: int
    coords: np.ndarray  # PCA
    variance: float  # the share of variance PCA keeps
    tsne: np.ndarray
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


def measure_embeddings(run: ReportInput) -> dict[str, TaskEmbeddings]:
    """Geometry, projection and kNN curve of every embeddings folder, one at a time (only the
    sample of test clips of one folder is in memory)."""
    tasks: dict[str, TaskEmbeddings] = {}
    for folder in sorted(run.embeddings,
                         key=lambda f: (f.task, method_key(f.method), f.seed, f.fold)):
        try:
            task = open_embedded_task(folder.path)
            x, y, n = test_points(task)
        except UserError as e:
            run.notes.append(f"skipped {run.show(folder.path)}: {e}")
            continue
        summary = tasks.setdefault(folder.task, TaskEmbeddings(task.vocabulary, task.multilabel, n))
        summary.geometry.setdefault(folder.method, []).append(geometry(x, y, task.multilabel))
        if folder.method not in summary.projections:
            coords, variance = project(x)
            summary.projections[folder.method] = Projection(folder.seed, coords, variance,
                                                            tsne_map(x), y)
        knn_file = folder.path / KNN_OUTPUT
        if knn_file.is_file():
            try:
                summary.knn_metric, curve = knn_curve(knn_file)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
                run.notes.append(f"unreadable {run.show(knn_file)} "
                                 f"({type(e).__name__}: {e})")
            else:
                summary.knn_curves.setdefault(folder.method, []).append(curve)
        else:
            run.notes.append(f"no kNN probe output in {run.show(folder.path)}")
    return tasks

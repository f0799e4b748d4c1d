"""The exact search and the voting, checked against scikit-learn and hand computations."""

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

from hear_contrastune.errors import UserError
from hear_contrastune.estimators import knn_search as knn
from hear_contrastune.estimators.knn_search import (
    KnnIndex,
    Neighbours,
    onednn_available,
    resolve_device,
    vote,
)

GEMMS = ["mm", pytest.param("onednn", marks=pytest.mark.skipif(
    not onednn_available(), reason="torch without oneDNN"))]


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    """Random float32 train (300 x 16) and queries (57 x 16): no exact ties."""
    rng = np.random.default_rng(1)
    return (rng.standard_normal((300, 16), dtype=np.float32),
            rng.standard_normal((57, 16), dtype=np.float32))


@pytest.mark.parametrize("gemm", GEMMS)
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_neighbours_match_sklearn(
    data: tuple[np.ndarray, np.ndarray], metric: str, gemm: str
) -> None:
    train, queries = data
    nn = KnnIndex(train, metric, gemm=gemm).search(queries, 25)
    dist, ref = NearestNeighbors(n_neighbors=25, algorithm="brute", metric=metric).fit(
        train.astype(np.float64)).kneighbors(queries.astype(np.float64))
    np.testing.assert_array_equal(nn.indices.numpy(), ref)
    expected = 1.0 - dist if metric == "cosine" else -dist
    np.testing.assert_allclose(nn.similarities.numpy(), expected, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_pruned_search_matches_sklearn(metric: str) -> None:
    """Wide enough train sets take the pruned top-k path (blocks of 64 and 32 columns)."""
    rng = np.random.default_rng(5)
    train = rng.standard_normal((3100, 12), dtype=np.float32)
    queries = rng.standard_normal((40, 12), dtype=np.float32)
    ref = NearestNeighbors(n_neighbors=30, algorithm="brute", metric=metric).fit(
        train.astype(np.float64))
    for k in (10, 30):  # 3100 // 64 >= 3 * 11: blocks of 64; 3100 // 32 >= 3 * 31: of 32
        got = KnnIndex(train, metric).search(queries, k).indices.numpy()
        np.testing.assert_array_equal(got, ref.kneighbors(queries.astype(np.float64), k)[1])


@pytest.mark.parametrize("n", [2112, 3000, 3043])
def test_pruned_top_k_is_exact(n: int) -> None:
    """Same values as torch.topk, at real positions, on rows full of repeated values too."""
    gen = torch.Generator().manual_seed(n)
    for scores in (torch.randn(17, n, generator=gen),
                   torch.randint(0, 40, (17, n), generator=gen).float()):  # heavy ties
        for kk in (2, 11, 22):
            values, idx = knn._top_k_cpu(scores, kk)
            assert torch.equal(values, torch.topk(scores, kk, dim=1).values)
            assert torch.equal(scores.gather(1, idx), values)
            assert all(len(set(row)) == kk for row in idx.tolist())


def test_train_array_is_left_alone_unless_copy_false(data: tuple[np.ndarray, np.ndarray]) -> None:
    train, queries = data
    before = train.copy()
    KnnIndex(train, "cosine").search(queries, 3)
    np.testing.assert_array_equal(train, before)
    KnnIndex(train, "cosine", copy=False)
    np.testing.assert_allclose(np.linalg.norm(train, axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("gemm", GEMMS)
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_chunk_size_and_k_do_not_change_results(
    data: tuple[np.ndarray, np.ndarray], metric: str, gemm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One search at the largest k serves every k: its prefix is the smaller search. Chunking
    (or the GEMM) changes blocking, hence a similarity's last bit, not the neighbours here."""
    train, queries = data
    whole = KnnIndex(train, metric, gemm="mm").search(queries, 40)
    monkeypatch.setattr(knn, "CPU_CHUNK_BYTES", 7 * 4 * len(train))  # 7 queries per chunk
    chunked = KnnIndex(train, metric, gemm=gemm)
    assert chunked.rows == 7
    full = chunked.search(queries, 40)
    assert torch.equal(full.indices, whole.indices)
    torch.testing.assert_close(full.similarities, whole.similarities)
    for k in (1, 5, 39):
        small = chunked.search(queries, k)
        assert torch.equal(small.indices, full.indices[:, :k])
        assert torch.equal(small.similarities, full.similarities[:, :k])


@pytest.mark.parametrize("gemm", GEMMS)
def test_ties_go_to_the_lower_train_index(gemm: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Duplicated rows straddle the k-th place; identical embeddings tie everywhere."""
    rng = np.random.default_rng(2)
    base = rng.standard_normal((5, 8), dtype=np.float32)
    train = base[[3, 0, 1, 1, 2, 1, 4, 1, 0, 2]]  # row 1 repeated at 2, 3, 5, 7
    query = base[1:2] + 1e-3 * rng.standard_normal((1, 8), dtype=np.float32)
    for metric in ("cosine", "euclidean"):
        for k in (1, 2, 3, 4, 6):
            got = KnnIndex(train, metric, gemm=gemm).search(query, k).indices[0].tolist()
            assert got[: min(k, 4)] == [2, 3, 5, 7][: min(k, 4)], (metric, k, got)
    monkeypatch.setattr(knn, "TIE_ROWS", 3)
    for n in (50, 2200):  # 2200: through the pruned top-k too
        same = np.ones((n, 4), dtype=np.float32)
        for metric in ("cosine", "euclidean"):
            nn = KnnIndex(same, metric, gemm=gemm).search(same[:9], 7)
            assert nn.indices.tolist() == [list(range(7))] * 9
    many = np.repeat(base, 500, axis=0)  # 2500 rows: every base row 500 times, in runs
    got = KnnIndex(many, "cosine", gemm=gemm).search(query, 6).indices[0].tolist()
    assert got == list(range(500, 506))


def test_zero_vectors_and_k_beyond_train(data: tuple[np.ndarray, np.ndarray]) -> None:
    train, _ = data
    train = train[:10]
    nn = KnnIndex(train, "cosine").search(np.zeros((2, 16), np.float32), 50)
    assert nn.k == 10  # clipped to the train size
    assert nn.indices.tolist() == [list(range(10))] * 2  # all similarities 0: index order
    assert torch.all(nn.similarities == 0)


def test_multiclass_votes_match_sklearn(data: tuple[np.ndarray, np.ndarray]) -> None:
    train, queries = data
    y = np.random.default_rng(3).integers(0, 4, len(train))
    onehot = torch.from_numpy(np.eye(4, dtype=np.float32)[y])
    nn = KnnIndex(train, "cosine").search(queries, 15)
    for k in (1, 4, 15):  # k=4 has tied votes: both pick the lower class
        clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute", metric="cosine")
        clf.fit(train, y)
        scores = vote(nn, torch.from_numpy(y), k, n_classes=4).numpy()
        np.testing.assert_array_equal(scores, vote(nn, onehot, k).numpy())  # both paths
        np.testing.assert_allclose(scores, clf.predict_proba(queries), atol=1e-6)
        np.testing.assert_array_equal(scores.argmax(1), clf.predict(queries))
    tau = 0.07
    clf = KNeighborsClassifier(n_neighbors=15, algorithm="brute", metric="cosine",
                               weights=lambda d: np.exp((1.0 - d) / tau)).fit(train, y)
    weighted = vote(nn, torch.from_numpy(y), 15, "similarity", tau).numpy()
    np.testing.assert_allclose(weighted, clf.predict_proba(queries), atol=1e-5)
    np.testing.assert_allclose(weighted, vote(nn, onehot, 15, "similarity", tau).numpy(),
                               atol=1e-6)


def test_multilabel_votes_are_vote_fractions(data: tuple[np.ndarray, np.ndarray]) -> None:
    train, queries = data
    y = (np.random.default_rng(4).random((len(train), 6)) < 0.3).astype(np.float32)
    nn = KnnIndex(train, "euclidean").search(queries, 9)
    _, ref = NearestNeighbors(n_neighbors=9, algorithm="brute").fit(train).kneighbors(queries)
    scores = vote(nn, torch.from_numpy(y), 9).numpy()
    np.testing.assert_allclose(scores, y[ref].mean(axis=1), atol=1e-6)
    sims = nn.similarities.numpy().astype(np.float64)
    w = np.exp(sims / 0.5)
    expected = np.einsum("qk,qkc->qc", w, y[ref]) / w.sum(1, keepdims=True)
    got = vote(nn, torch.from_numpy(y), 9, "similarity", 0.5).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_similarity_weights_do_not_overflow() -> None:
    """exp(s / tau) overflows float32 for a large -distance / tau; the shift prevents it."""
    nn = Neighbours(torch.tensor([[0, 1]]), torch.tensor([[500.0, 499.0]]))
    scores = vote(nn, torch.eye(2), 2, "similarity", 0.07)
    assert torch.isfinite(scores).all() and scores[0, 0] > 0.99


def test_option_errors() -> None:
    nn = Neighbours(torch.tensor([[0]]), torch.tensor([[1.0]]))
    with pytest.raises(UserError, match="--weighting"):
        vote(nn, torch.eye(1), 1, "distance")
    with pytest.raises(UserError, match="--temperature"):
        vote(nn, torch.eye(1), 1, "similarity", 0.0)
    with pytest.raises(UserError, match="--metric"):
        KnnIndex(np.zeros((2, 2), np.float32), "manhattan")
    with pytest.raises(UserError, match="--device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"

"""Exact k-nearest-neighbour search and voting over float32 torch matmuls (CPU or GPU).

Why exact: a probe's score must not depend on an approximate index. Why chunked: the full
queries x train similarity matrix of a real task does not fit in memory, so queries go through
in blocks of a fixed similarity-buffer size. Why ties are broken by train index: neighbour lists
then have one correct answer, so one search at the largest k serves every smaller k (the first
k entries of a longer list are exactly the k nearest), and results do not depend on the BLAS,
the chunk size or the device.

On the CPU the products go through torch's oneDNN fp32 linear kernel when it is there (and
agrees with torch.mm on a self-test): measured on a 2-core AMD EPYC, torch.mm's MKL
sgemm ran 1.5-2.8x slower (MKL takes its AVX2 path on AMD; oneDNN JITs AVX-512). Both are full
fp32 (neighbour sets agreed on 99.99% of queries, the rest float32 near-ties); `gemm="mm"`
forces torch.mm. The op is torch-internal (mkldnn::_linear_pointwise, inductor's CPU linear),
hence the self-test and the fallback.
"""

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from hear_contrastune.errors import UserError

METRICS = ("cosine", "euclidean")
VOTE_WEIGHTINGS = ("uniform", "similarity")
GEMMS = ("auto", "onednn", "mm")
# Votes weighted by exp(similarity / this) under weighting "similarity" (the DINO kNN's value).
DEFAULT_TEMPERATURE = 0.07

# Similarity buffer per chunk of queries: big enough for the GEMM to run at full speed, small
# enough for the memory budget. On the CPU it also stays under glibc's largest mmap threshold
# (32 MiB), so the buffer oneDNN allocates per chunk is recycled from the heap instead of being
# mapped and page-faulted afresh each time (measured: 30 MiB chunks ran ~1.4x faster than 64).
CPU_CHUNK_BYTES = 30 * 2**20
GPU_CHUNK_BYTES = 1024 * 2**20
MAX_CHUNK_ROWS = 8192
# _top_k_cpu's block widths (widest first) and the fewest blocks per kept block it prunes with;
# measured on 2 cores: 64 is best for 50k train rows (0.65 vs 1.58 ns/score), 32 for 10k.
PRUNE_BLOCKS = (64, 32)
PRUNE_MIN_BLOCKS = 3
# Rows resolved at a time when the k-th and (k+1)-th similarities tie (needs an int64 cumsum).
TIE_ROWS = 32
# Elements of the [queries, k, labels] gather done at a time while voting multilabel.
VOTE_ELEMENTS = 2**24


@functools.cache
def onednn_available() -> bool:
    """Whether torch's oneDNN fp32 linear exists here and matches torch.mm to fp32 rounding."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
        gen = torch.Generator().manual_seed(0)
        a, w = torch.randn(7, 33, generator=gen), torch.randn(19, 33, generator=gen)
        return bool(torch.backends.mkldnn.is_available() and torch.allclose(
            op(a, w, None, "none", [], ""), a @ w.T, rtol=1e-5, atol=1e-5))
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class Neighbours:
    """The k nearest train rows of each query, nearest first, ties by lower train index.

    `similarities` are cosine similarities for metric "cosine" and minus the euclidean distance
    for "euclidean", so larger is always nearer.
    """

    indices: torch.Tensor  # [n_queries, k] int64, CPU
    similarities: torch.Tensor  # [n_queries, k] float32, CPU

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])


def resolve_device(device: str | None) -> torch.device:
    """The torch device for a `device` option: None picks CUDA when present, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"--device {device!r}: expected 'cpu' or 'cuda'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine")
    return torch.device(device)


def chunk_rows(n_train: int, device: torch.device) -> int:
    """Queries per chunk so that one [rows, n_train] float32 similarity buffer fits the budget."""
    budget = GPU_CHUNK_BYTES if device.type == "cuda" else CPU_CHUNK_BYTES
    return max(1, min(MAX_CHUNK_ROWS, budget // (4 * max(1, n_train))))


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A float32 tensor sharing memory with `x` where possible (no copy of the big train matrix)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"expected a 2-d array, got shape {tuple(x.shape)}")
    return x.to(torch.float32)


def _unit_rows_(x: torch.Tensor) -> torch.Tensor:
    """Scale rows to unit L2 norm in place; all-zero rows stay zero (as scikit-learn does)."""
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return x.div_(norms.masked_fill_(norms == 0, 1.0))


class KnnIndex:
    """Exact nearest-neighbour search against a fixed train matrix."""

    def __init__(
        self,
        train: np.ndarray | torch.Tensor,
        metric: str = "cosine",
        device: str | torch.device | None = None,
        copy: bool = True,
        gemm: str = "auto",
    ) -> None:
        """Prepare `train` [n, d] for search.

        With `copy=False` and metric "cosine" on the CPU the rows of `train` are normalised in
        place, which saves a copy of the largest array; pass it only for an array you own.
        `gemm`: "auto" (oneDNN on the CPU when available, else torch.mm), "onednn" or "mm".
        """
        if metric not in METRICS:
            raise UserError(f"--metric {metric!r}: expected one of {', '.join(METRICS)}")
        if gemm not in GEMMS:
            raise ValueError(f"gemm {gemm!r}: expected one of {', '.join(GEMMS)}")
        self.metric = metric
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.onednn = self.device.type == "cpu" and gemm != "mm" and onednn_available()
        if gemm == "onednn" and not self.onednn:
            raise ValueError("gemm 'onednn': not available (CPU only, torch built with oneDNN)")
        src = _as_tensor(train)
        self.train = src.to(self.device)
        if metric == "cosine" and copy and self.train.data_ptr() == src.data_ptr():
            self.train = self.train.clone()  # normalised in place below: keep the caller's
        # Scores: cosine similarity, or q.t - |t|^2 / 2, which ranks train rows as -|q - t|^2
        # does (|q|^2 is the same for every train row of a query).
        self.bias: torch.Tensor | None = None
        if metric == "cosine":
            _unit_rows_(self.train)
        else:
            self.bias = torch.einsum("nd,nd->n", self.train, self.train).mul_(-0.5)
        self.n_train, self.dim = self.train.shape
        self.rows = chunk_rows(self.n_train, self.device)

    def _scores(self, q: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
        """Scores [len(q), n_train] of a chunk of queries (in `buf` unless oneDNN allocates)."""
        if self.onednn:
            return torch.ops.mkldnn._linear_pointwise(q, self.train, self.bias, "none", [], "")
        out = buf[: len(q)]
        if self.bias is None:
            return torch.mm(q, self.train.T, out=out)
        return torch.addmm(self.bias, q, self.train.T, out=out)

    def search(
        self, queries: np.ndarray | torch.Tensor, k: int, copy: bool = True
    ) -> Neighbours:
        """The `k` nearest train rows of every query (k is clipped to the train size).

        `copy=False` lets metric "cosine" normalise CPU `queries` in place (saves a copy).

        Per chunk of queries: the GEMM on every thread, then the top-k and the boundary-tie
        check on one thread (see _one_thread); ordering ties inside the lists and turning
        scores into distances run once, at the end.
        """
        q_all = _as_tensor(queries)
        if q_all.shape[1] != self.dim:
            raise ValueError(f"queries have {q_all.shape[1]} dims, train has {self.dim}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        k = min(k, self.n_train)
        # One extra neighbour tells whether the k-th is tied with rows left outside the list.
        kk = min(k + 1, self.n_train)
        n_q = q_all.shape[0]
        # Everything but the GEMM runs on one CPU thread (see _one_thread).
        serial = _one_thread if self.device.type == "cpu" else contextlib.nullcontext
        on_device = q_all.to(self.device)
        if self.metric == "cosine":
            fresh = on_device.data_ptr() != q_all.data_ptr()
            with serial():
                on_device = _unit_rows_(on_device if fresh or not copy else on_device.clone())
        q_all = on_device
        values = torch.empty((n_q, kk), device=self.device)
        indices = torch.empty((n_q, kk), dtype=torch.int64, device=self.device)
        buf_rows = 0 if self.onednn else min(self.rows, n_q)
        buf = torch.empty((buf_rows, self.n_train), device=self.device)
        for start in range(0, n_q, self.rows):
            end = min(start + self.rows, n_q)
            out = self._scores(q_all[start:end], buf)
            with serial():
                if self.device.type == "cpu":
                    values[start:end], indices[start:end] = _top_k_cpu(out, kk)
                else:
                    torch.topk(out, kk, dim=1, out=(values[start:end], indices[start:end]))
                if kk > k:
                    _settle_boundary_ties(out, values[start:end], indices[start:end], k)
            del out
        with serial():
            return self._finish(values[:, :k], indices[:, :k], q_all)

    def _finish(
        self, values: torch.Tensor, indices: torch.Tensor, q_all: torch.Tensor
    ) -> Neighbours:
        """Order equal scores by ascending train index (topk leaves their order open); turn
        euclidean scores into minus distances."""
        rows = (values[:, 1:] == values[:, :-1]).any(dim=1).nonzero().flatten()
        if len(rows):
            idx, order = indices[rows].sort(dim=1)
            vals, order = values[rows].gather(1, order).sort(dim=1, descending=True, stable=True)
            indices[rows], values[rows] = idx.gather(1, order), vals
        if self.metric == "euclidean":  # |q - t|^2 = |q|^2 - 2 (q.t - |t|^2 / 2)
            q_sq = torch.einsum("qd,qd->q", q_all, q_all).unsqueeze(1)
            values = -(q_sq - 2 * values).clamp_min_(0).sqrt_()
        return Neighbours(indices.contiguous().cpu(), values.contiguous().cpu())


def _settle_boundary_ties(
    scores: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, k: int
) -> None:
    """Where the k-th and (k+1)-th scores tie, redo the row's top k on the full row, ties to
    the lower index (in place in `values`/`indices`, [rows, k + 1])."""
    tied = (values[:, k - 1] == values[:, k]).nonzero().flatten()
    for first in range(0, len(tied), TIE_ROWS):
        r = tied[first : first + TIE_ROWS]
        cols = _lowest_index_top_k(scores[r], values[r, k - 1 : k], k)
        # cols ascend, so a stable descending sort leaves equal scores by index
        vals, order = scores[r].gather(1, cols).sort(dim=1, descending=True, stable=True)
        indices[r, :k] = cols.gather(1, order)
        values[r, :k] = vals


def _top_k_cpu(scores: torch.Tensor, kk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.topk(scores, kk, dim=1) for a contiguous CPU matrix, about 2x faster on wide rows.

    torch.topk costs ~1.5 ns per score on the CPU, a fifth of the GEMM at d=768. Pruning: split
    each row into blocks of B, take the kk blocks with the largest maxima, and keep their
    scores >= t, the smallest of those maxima (plus the columns past the last whole block).
    Every score > t lies in a kept block and at least kk kept scores are >= t, so the top kk
    values are exact; only which of several scores equal to t come last can differ from
    torch.topk, and the caller's tie check settles those rows on the full row anyway.
    """
    n_rows, n = scores.shape
    block = next((b for b in PRUNE_BLOCKS if n // b >= PRUNE_MIN_BLOCKS * kk), None)
    if block is None:
        return torch.topk(scores, kk, dim=1)
    return _pruned_top_k(scores, kk, block)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run a burst of small torch ops on one thread.

    The top-k and tie bookkeeping of a chunk are a dozen ops of 1-8 MB each. With other jobs on
    the cores, every parallel op waits (spinning) for a descheduled partner thread: measured on
    a shared 2-core machine, the pruned top-k took 96 ms per chunk on 2 threads against 7 ms
    on one (torch.topk: 16 ms on 2, 12 on 1). On an idle machine one thread costs a few percent
    against the GEMM, which keeps every thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _pruned_top_k(scores: torch.Tensor, kk: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """_top_k_cpu's pruned path, for blocks of `block` columns."""
    n_rows, n = scores.shape
    n_blocks = n // block
    whole = n_blocks * block
    maxima = scores[:, :whole].view(n_rows, n_blocks, block).amax(dim=2)
    top_max, kept = torch.topk(maxima, kk, dim=1, sorted=False)
    # Kept blocks copied out through an overlapping unfold view (no copy of the whole matrix).
    starts = (kept * block + (torch.arange(n_rows) * n).unsqueeze(1)).view(-1)
    cand = scores.view(-1).unfold(0, block, 1).index_select(0, starts).view(n_rows, kk * block)
    if whole < n:
        cand = torch.cat([cand, scores[:, whole:]], dim=1)
    row, pos = (cand >= top_max.amin(dim=1, keepdim=True)).nonzero().unbind(1)
    counts = torch.bincount(row, minlength=n_rows)
    slot = torch.arange(len(row)) - (counts.cumsum(0) - counts)[row]
    width = int(counts.max())
    packed = torch.full((n_rows, width), float("-inf"))
    packed_pos = torch.zeros((n_rows, width), dtype=torch.int64)
    packed[row, slot] = cand[row, pos]
    packed_pos[row, slot] = pos
    values, j = torch.topk(packed, kk, dim=1)
    pos = packed_pos.gather(1, j)
    in_block = pos < kk * block
    block_of = kept.gather(1, (pos // block).clamp_(max=kk - 1))
    return values, torch.where(in_block, block_of * block + pos % block, pos - kk * block + whole)


def _lowest_index_top_k(scores: torch.Tensor, kth: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k columns of each row when the k-th score is tied: all above it, then ties by index."""
    above = scores > kth
    at = scores == kth
    need = k - above.sum(dim=1, keepdim=True)
    take = above | (at & (at.cumsum(dim=1) <= need))
    return take.nonzero()[:, 1].view(-1, k)


def vote(
    neighbours: Neighbours,
    train_targets: torch.Tensor,
    k: int,
    weighting: str = VOTE_WEIGHTINGS[0],
    temperature: float = DEFAULT_TEMPERATURE,
    n_classes: int | None = None,
) -> torch.Tensor:
    """Class (or label) scores [n_queries, n_classes] from the first k neighbours' votes.

    `train_targets` is either [n_train] int64 class indices (multiclass; `n_classes` columns,
    default max + 1) or a [n_train, n_labels] multi-hot matrix (multilabel). A score is the
    (weighted) fraction of the neighbours carrying the label, so multiclass scores sum to 1 and
    their argmax is the majority class (ties to the lower class index, as scikit-learn and
    heareval's argmax do). "uniform" counts votes exactly; "similarity" weights a neighbour by
    exp(s / temperature), as in Wu et al. 2018 and DINO.
    """
    if weighting not in VOTE_WEIGHTINGS:
        raise UserError(f"--weighting {weighting!r}: expected one of {', '.join(VOTE_WEIGHTINGS)}")
    if not 1 <= k <= neighbours.k:
        raise ValueError(f"k={k} outside 1..{neighbours.k} (the neighbours searched)")
    idx = neighbours.indices[:, :k]
    if weighting == "uniform":
        weights = torch.ones(idx.shape, dtype=torch.float32)  # integer counts: exact ties
    else:
        if not temperature > 0:
            raise UserError(f"--temperature {temperature}: must be > 0")
        s = neighbours.similarities[:, :k]
        # Shifting by the nearest neighbour's similarity cancels in the normalisation below
        # and keeps exp() from overflowing.
        weights = torch.exp((s - s[:, :1]) / temperature)
    if train_targets.ndim == 1:
        n_classes = int(train_targets.max()) + 1 if n_classes is None else n_classes
        scores = torch.zeros((idx.shape[0], n_classes), dtype=torch.float32)
        scores.scatter_add_(1, train_targets[idx], weights)
    else:
        targets = train_targets.to(torch.float32)
        scores = torch.empty((idx.shape[0], targets.shape[1]), dtype=torch.float32)
        step = max(1, VOTE_ELEMENTS // max(1, k * targets.shape[1]))
        for a in range(0, idx.shape[0], step):
            scores[a : a + step] = torch.bmm(
                weights[a : a + step].unsqueeze(1), targets[idx[a : a + step]]
            ).squeeze(1)
    return scores.div_(weights.sum(dim=1, keepdim=True))

"""Benchmark the kNN probe against scikit-learn and against the bare matmul (run by hand).

    .venv/bin/python benchmarks/bench_knn.py            # 50k train / 5k valid / 10k test x 768
    .venv/bin/python benchmarks/bench_knn.py --quick    # 10k / 1k / 2k x 256, seconds

Writes a random-but-clustered task as a real embeddings folder, then times, on the same data:
  (a) the whole probe in a subprocess (interpreter start, imports, file reading, search, votes,
      heareval scoring, JSON), with its peak RSS;
  (b) scikit-learn's best brute-force protocol: NearestNeighbors(algorithm="brute",
      metric="cosine"), one kneighbors call at the largest k for valid+test, votes for every k
      reused from it (data already in memory, no imports or file reading counted);
  (c) the naive sweep: one KNeighborsClassifier per k (skip with --no-naive);
  (d) bare torch matmuls of the same shapes, (valid+test) x train, chunked exactly as the search
      is: torch.mm (MKL sgemm) into a reused buffer, and torch's oneDNN fp32 linear (the kernel
      our CPU search uses); the faster is the compute floor of an exact search;
and our search alone in-process (oneDNN and torch.mm variants), interleaved with (d), for the
fraction of the floor it reaches.
It checks our neighbours against scikit-learn's. Targets on 2 CPU cores: (a) >= 1.3x faster
than (b); search >= 85% of (d)'s throughput; peak RSS of (a) <= inputs + 1 GiB.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hear_contrastune.data.embeddings import (  # noqa: E402
    open_embedded_task,
    read_split,
    write_split,
)
from hear_contrastune.estimators.knn_search import KnnIndex, chunk_rows, onednn_available  # noqa: E402
from hear_contrastune.probes.knn import OUTPUT_NAME  # noqa: E402

GIB = 2**30
# ru_maxrss survives exec: a child's is at least its parent's peak at spawn time. The parent
# therefore holds no data when it spawns these (the task is written by a child too), and the
# children also report VmHWM, the peak of their own address space only.
MEMORY = """
def memory():
    import resource
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status")
               if line.startswith("VmHWM"))
    return {"maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "hwm": hwm * 1024}
"""
CHILD = MEMORY + """
import json, sys, time
t0 = time.perf_counter()
from hear_contrastune.probes.knn import run_knn_probe
run_knn_probe([sys.argv[1]], k_grid=json.loads(sys.argv[2]), force=True)
print(json.dumps({**memory(), "inside_s": time.perf_counter() - t0}))
"""
BASELINE = MEMORY + """
import json, warnings
warnings.simplefilter("ignore")
import torch, hear_contrastune.probes.knn, heareval.score
print(json.dumps(memory()))
"""
WRITER = """
import argparse, json, sys
sys.path.insert(0, sys.argv[1])
from benchmarks.bench_knn import make_task
from pathlib import Path
make_task(Path(sys.argv[2]), argparse.Namespace(**json.loads(sys.argv[3])))
print("{}")
"""


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-train", type=int, default=50_000)
    p.add_argument("--n-valid", type=int, default=5_000)
    p.add_argument("--n-test", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--noise", type=float, default=4.0, help="cluster spread (sets accuracy)")
    p.add_argument("--k-grid", default="1,3,5,10,20,50,100")
    p.add_argument("--repeat", type=int, default=2, help="runs of (a) and (b); best counts")
    p.add_argument("--floor-repeat", type=int, default=3,
                   help="interleaved runs of (d) and our in-process search; best counts")
    p.add_argument("--quick", action="store_true", help="10k/1k/2k x 256, one repeat")
    p.add_argument("--no-naive", action="store_true", help="skip (c), the slowest part")
    p.add_argument("--workdir", type=Path, help="where the embeddings folder goes (default: tmp)")
    args = p.parse_args()
    if args.quick:
        args.n_train, args.n_valid, args.n_test, args.dim = 10_000, 1_000, 2_000, 256
        args.repeat = args.floor_repeat = 1
    args.k_grid = [int(k) for k in args.k_grid.split(",")]
    return args


def make_task(out: Path, args: argparse.Namespace) -> None:
    """Gaussian clusters around random class centres, written in heareval's layout."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((args.classes, args.dim), dtype=np.float32)
    vocab = [f"class{i:03d}" for i in range(args.classes)]
    for split, n in (("train", args.n_train), ("valid", args.n_valid), ("test", args.n_test)):
        y = rng.integers(0, args.classes, n)
        x = rng.standard_normal((n, args.dim), dtype=np.float32)
        x *= np.float32(args.noise)
        x += centers[y]
        write_split(out, split, x, [[vocab[i]] for i in y])
    (out / "labelvocabulary.csv").write_text(
        "idx,label\n" + "".join(f"{i},{v}\n" for i, v in enumerate(vocab)))
    (out / "task_metadata.json").write_text(json.dumps({
        "task_name": "bench_knn", "version": "bench", "embedding_type": "scene",
        "prediction_type": "multiclass", "split_mode": "trainvaltest",
        "splits": ["train", "valid", "test"], "evaluation": ["top1_acc"],
        "sample_duration": 1.0}))


def load_task(task_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(embeddings, class indices) per split, read back for the in-process comparisons."""
    task = open_embedded_task(task_dir)
    data = {}
    for split in ("train", "valid", "test"):
        x, labels = read_split(task, split)
        data[split] = (x, np.array([task.vocabulary.index(row[0]) for row in labels]))
    return data


def timed(fn):  # type: ignore[no-untyped-def]
    """(seconds, result) of one call."""
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def timed_cpu(fn):  # type: ignore[no-untyped-def]
    """(wall seconds, CPU seconds of this process, result) of one call. CPU time is steadier
    than wall time when other jobs share the cores: it counts only the time we ran."""
    t, c = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - t, time.process_time() - c, result


def run_child(code: str, *argv: str) -> tuple[float, dict]:
    """Wall time and the JSON last printed by a fresh interpreter running `code`."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                         env=env, check=True)
    return time.perf_counter() - t, json.loads(out.stdout.strip().splitlines()[-1])


def bare_mm(train: torch.Tensor, queries: torch.Tensor, rows: int) -> None:
    """(d) with torch.mm (MKL sgemm): the products alone, into one reused buffer."""
    buf = torch.empty((rows, train.shape[0]))
    for start in range(0, len(queries), rows):
        q = queries[start : start + rows]
        torch.mm(q, train.T, out=buf[: len(q)])


def bare_onednn(train: torch.Tensor, queries: torch.Tensor, rows: int) -> None:
    """(d) with torch's oneDNN fp32 linear, the kernel our CPU search uses: products alone."""
    for start in range(0, len(queries), rows):
        torch.ops.mkldnn._linear_pointwise(queries[start : start + rows], train, None, "none",
                                           [], "")


def our_search(train: np.ndarray, valid: np.ndarray, test: np.ndarray, k: int, gemm: str):  # type: ignore[no-untyped-def]
    """Our search as the probe runs it on arrays it owns (normalised in place, no copies):
    build the index, search valid and test at the largest k."""
    index = KnnIndex(train, "cosine", gemm=gemm, copy=False)
    return index.search(valid, k, copy=False), index.search(test, k, copy=False)


def sklearn_best(train, ytrain, queries, n_valid, yvalid, ytest, k_grid, n_classes):  # type: ignore[no-untyped-def]
    """(b): one brute-force kneighbors call at the largest k; every k's votes reuse it."""
    from sklearn.neighbors import NearestNeighbors

    k_max = min(max(k_grid), len(train))
    nn = NearestNeighbors(n_neighbors=k_max, algorithm="brute", metric="cosine").fit(train)
    _, idx = nn.kneighbors(queries)
    counts = np.zeros((len(queries), n_classes), np.int32)
    rows = np.arange(len(queries))
    neighbour_labels = ytrain[idx]
    acc = {}
    done = 0
    for k in sorted({min(k, k_max) for k in k_grid}):
        for j in range(done, k):
            counts[rows, neighbour_labels[:, j]] += 1
        done = k
        pred = counts.argmax(1)  # ties: lowest class, as heareval's argmax
        acc[k] = (float((pred[:n_valid] == yvalid).mean()), float((pred[n_valid:] == ytest).mean()))
    best = max(acc, key=lambda k: (acc[k][0], -k))
    return idx, best, acc[best][1]


def sklearn_naive(train, ytrain, valid, yvalid, test, ytest, k_grid):  # type: ignore[no-untyped-def]
    """(c): a KNeighborsClassifier per k on valid, then the best k on test."""
    from sklearn.neighbors import KNeighborsClassifier

    def clf(k: int) -> KNeighborsClassifier:
        return KNeighborsClassifier(n_neighbors=k, algorithm="brute", metric="cosine").fit(
            train, ytrain)

    val = {k: float((clf(k).predict(valid) == yvalid).mean()) for k in k_grid}
    best = max(val, key=lambda k: (val[k], -k))
    return best, float((clf(best).predict(test) == ytest).mean())


def agreement(ours: np.ndarray, ref: np.ndarray, train: np.ndarray, queries: np.ndarray) -> str:
    """How far our neighbour sets match scikit-learn's; mismatches must be float32 near-ties."""
    same_set = np.array([set(a) == set(b) for a, b in zip(ours, ref, strict=True)])
    same_order = (ours == ref).all(axis=1)
    gaps = []
    for row in np.flatnonzero(~same_set):
        q = queries[row].astype(np.float64)
        q /= np.linalg.norm(q)
        cand = np.union1d(ours[row], ref[row])
        t = train[cand].astype(np.float64)
        sims = dict(zip(cand, t @ q / np.linalg.norm(t, axis=1), strict=True))
        kth = min(sims[i] for i in ours[row])
        gaps.append(max(abs(sims[i] - kth) for i in set(ours[row]) ^ set(ref[row])))
    worst = f"{max(gaps):.1e}" if gaps else "n/a"
    return (f"identical neighbour sets in {same_set.mean():.4%} of {len(ours)} queries, identical "
            f"order in {same_order.mean():.4%}; {len(gaps)} differing sets, largest float64 "
            f"similarity gap to the k-th neighbour among the swapped ones: {worst}")


def main() -> None:
    args = parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"os.cpu_count()={os.cpu_count()}; load average before: {os.getloadavg()}")
    tmp = tempfile.TemporaryDirectory(prefix="bench_knn.", dir=args.workdir)
    task_dir = Path(tmp.name) / "bench_knn"
    shape = {k: getattr(args, k) for k in ("n_train", "n_valid", "n_test", "dim", "classes",
                                           "noise")}
    t, _ = run_child(WRITER, str(REPO), str(task_dir), json.dumps(shape))
    inputs = 4 * args.dim * (args.n_train + args.n_valid + args.n_test)
    k_max = min(max(args.k_grid), args.n_train)
    print(f"data: train {args.n_train}, valid {args.n_valid}, test {args.n_test} x {args.dim}, "
          f"{args.classes} classes, {inputs / 2**20:.0f} MiB of embeddings, written in {t:.1f}s "
          f"(by a child process); k grid {args.k_grid}")

    # (a) the probe end to end, in a fresh interpreter each time, spawned by a parent that
    # holds no data yet (see MEMORY).
    base_s, base = run_child(BASELINE)
    runs = [run_child(CHILD, str(task_dir), json.dumps(args.k_grid)) for _ in range(args.repeat)]
    probe_s = min(r[0] for r in runs)
    peak = max(r[1]["maxrss"] for r in runs)
    peak_hwm = max(r[1]["hwm"] for r in runs)
    doc = json.loads((task_dir / OUTPUT_NAME).read_text())
    timing = doc["timing"]
    data = load_task(task_dir)
    (xtr, ytr), (xva, yva), (xte, yte) = data["train"], data["valid"], data["test"]

    # (d) and our search in-process, interleaved so that load changes hit all alike.
    tq = torch.from_numpy(np.concatenate([xva, xte]))
    tt = torch.from_numpy(xtr)
    rows = chunk_rows(len(xtr), torch.device("cpu"))
    floors = {"torch.mm (MKL sgemm)": bare_mm}
    gemms = ["mm"]
    if onednn_available():
        floors["oneDNN fp32 linear"] = bare_onednn
        gemms.insert(0, "onednn")
    floor_times: dict[str, list[float]] = {name: [] for name in floors}
    search_times: dict[str, list[float]] = {g: [] for g in gemms}
    floor_cpu: dict[str, list[float]] = {name: [] for name in floors}
    search_cpu: dict[str, list[float]] = {g: [] for g in gemms}
    ours = {}
    for _ in range(args.floor_repeat):
        for name, fn in floors.items():
            w, c, _ = timed_cpu(lambda fn=fn: fn(tt, tq, rows))
            floor_times[name].append(w)
            floor_cpu[name].append(c)
        for g in gemms:
            owned = (xtr.copy(), xva.copy(), xte.copy())  # fresh arrays, as the probe reads
            w, c, ours[g] = timed_cpu(lambda g=g, o=owned: our_search(*o, k_max, g))
            search_times[g].append(w)
            search_cpu[g].append(c)
    flops = 2.0 * len(tq) * len(tt) * args.dim

    # (b) scikit-learn's best protocol.
    queries = np.concatenate([xva, xte])
    sk_runs = [timed(lambda: sklearn_best(xtr, ytr, queries, len(xva), yva, yte, args.k_grid,
                                          args.classes)) for _ in range(args.repeat)]
    sk_s = min(r[0] for r in sk_runs)
    sk_idx, sk_k, sk_acc = sk_runs[0][1]

    # (c) the naive sweep.
    naive = None if args.no_naive else timed(
        lambda: sklearn_naive(xtr, ytr, xva, yva, xte, yte, args.k_grid))

    ours_idx = torch.cat([ours[gemms[0]][0].indices, ours[gemms[0]][1].indices]).numpy()
    mm_idx = torch.cat([ours["mm"][0].indices, ours["mm"][1].indices]).numpy()
    floor_name = min(floor_times, key=lambda n: min(floor_times[n]))
    floor_s = min(floor_times[floor_name])
    search_s = min(search_times[gemms[0]])
    budget = inputs + GIB
    print()
    print(f"results (wall seconds; best of {args.repeat} runs for (a), (b); best of "
          f"{args.floor_repeat} for (d) and our search)")
    print(f"  (a) our probe, end to end in a subprocess: {probe_s:6.2f}s  (all runs: "
          f"{', '.join(f'{r[0]:.2f}' for r in runs)}); inside: import heareval.score and "
          f"read {timing['read_s']:.2f}s, search {timing['search_s']:.2f}s, votes+scores "
          f"{timing['fit_and_score_s'] - timing['search_s']:.2f}s")
    print(f"      chose k={doc['test']['k']}, test top1_acc={doc['test']['test_top1_acc']:.4f}")
    print(f"  (b) scikit-learn best (1 kneighbors, reused): {sk_s:6.2f}s  (all runs: "
          f"{', '.join(f'{r[0]:.2f}' for r in sk_runs)}); chose k={sk_k}, test acc={sk_acc:.4f}")
    if naive is not None:
        print(f"  (c) scikit-learn naive per-k sweep:         {naive[0]:6.2f}s; chose k="
              f"{naive[1][0]}, test acc={naive[1][1]:.4f}")
    for name, times in floor_times.items():
        print(f"  (d) bare {name}, {len(tq)}x{args.dim} @ {args.dim}x{len(tt)} in {rows}-row "
              f"chunks: {min(times):6.2f}s = {flops / min(times) / 1e9:.0f} GFLOP/s  (all runs: "
              f"{', '.join(f'{t:.2f}' for t in times)}; CPU s: "
              f"{', '.join(f'{t:.2f}' for t in floor_cpu[name])})")
    for g, times in search_times.items():
        print(f"      our search in-process, gemm={g} (index + valid + test, k={k_max}): "
              f"{min(times):6.2f}s  (all runs: {', '.join(f'{t:.2f}' for t in times)}; CPU s: "
              f"{', '.join(f'{t:.2f}' for t in search_cpu[g])})")
    print()
    print(f"  speed vs (b): {sk_s / probe_s:.2f}x end to end (target >= 1.3x); "
          f"{sk_s / search_s:.2f}x search only")
    if naive is not None:
        print(f"  speed vs (c): {naive[0] / probe_s:.2f}x end to end")
    print(f"  search throughput: {floor_s / search_s:.1%} of the fastest bare matmul's "
          f"({floor_name}; target >= 85%); in the probe run: {floor_s / timing['search_s']:.1%}"
          f"; by CPU time: {min(floor_cpu[floor_name]) / min(search_cpu[gemms[0]]):.1%}")
    mm_floor = min(floor_times["torch.mm (MKL sgemm)"])
    print(f"      with gemm=mm: {mm_floor / min(search_times['mm']):.1%} of bare torch.mm's; "
          f"the fastest floor is {mm_floor / floor_s:.2f}x torch.mm's speed")
    print(f"  peak RSS of (a): ru_maxrss {peak / 2**20:.0f} MiB, VmHWM {peak_hwm / 2**20:.0f} MiB; "
          f"budget inputs + 1 GiB = {budget / 2**20:.0f} MiB "
          f"({'within' if peak <= budget else 'OVER'}); a bare 'import torch, heareval.score' "
          f"child peaks at {base['maxrss'] / 2**20:.0f} MiB (took {base_s:.1f}s), so the "
          f"probe's own share is {(peak - base['maxrss']) / 2**20:.0f} MiB")
    print(f"  neighbours vs scikit-learn: {agreement(ours_idx, sk_idx, xtr, queries)}")
    print(f"  gemm=mm vs gemm={gemms[0]}: identical neighbour sets in "
          f"{np.mean([set(a) == set(b) for a, b in zip(mm_idx, ours_idx, strict=True)]):.4%}, "
          f"identical lists in {(mm_idx == ours_idx).all(axis=1).mean():.4%} of the queries")
    print(f"  load average after: {os.getloadavg()}; this process peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    tmp.cleanup()


if __name__ == "__main__":
    main()

"""Time JaccardMiner + JaccardSupConLoss (forward and backward) against a Python pair loop.

Run by hand: `.venv/bin/python benchmarks/bench_jaccard.py`. Both paths run on the same batch in
the same process; their losses, mined pairs and pair weights are checked to agree before any
time is printed. At batch 1024 the loop covers only the first 64 anchors (every pair of theirs);
its full-batch time is that time × 1024/64, and the lines say so.
"""

import math
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from pytorch_metric_learning.reducers import DoNothingReducer

from hear_contrastune.training.config import DEFAULTS
from hear_contrastune.training.losses import JaccardSupConLoss
from hear_contrastune.training.miners import JaccardMiner

NUM_LABELS = 200
EMBEDDING_DIM = 128
TEMPERATURE = DEFAULTS.temperature
LOOP_ANCHORS_AT_1024 = 64


def make_batch(batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings and multi-hot labels with skewed label frequencies and some empty clips."""
    generator = torch.Generator().manual_seed(batch)
    frequencies = torch.logspace(math.log10(0.1), math.log10(0.002), NUM_LABELS)
    labels = (torch.rand(batch, NUM_LABELS, generator=generator) < frequencies).int()
    embeddings = torch.randn(batch, EMBEDDING_DIM, generator=generator)
    return embeddings.to(device), labels.to(device)


def loop_reference(
    embeddings: torch.Tensor, labels: torch.Tensor, anchors: range
) -> tuple[dict[int, torch.Tensor], dict[tuple[int, int], float], set[tuple[int, int]]]:
    """Per-anchor losses, positive pairs with their Jaccard, and negative pairs, pair by pair."""
    sets = [set(torch.nonzero(row).flatten().tolist()) for row in labels.cpu()]
    z = F.normalize(embeddings, dim=1)
    similarity = z @ z.T
    anchor_losses, positives, negatives = {}, {}, set()
    for i in anchors:
        logits, weights = [], []
        for j in range(len(sets)):
            if j == i:
                continue
            union = len(sets[i] | sets[j])
            jaccard = len(sets[i] & sets[j]) / union if union else 0.0
            if jaccard > 0:
                positives[(i, j)] = jaccard
            else:
                negatives.add((i, j))
            logits.append(similarity[i, j] / TEMPERATURE)
            weights.append(jaccard)
        if sum(weights) > 0:
            log_denominator = torch.logsumexp(torch.stack(logits), dim=0)
            weighted = sum(w * (x - log_denominator) for w, x in zip(weights, logits, strict=True))
            anchor_losses[i] = -weighted / sum(weights)
    return anchor_losses, positives, negatives


def seconds(run: Callable[[], None], device: torch.device, repeats: int) -> float:
    """Median wall time of `run`, after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check_agreement(
    embeddings: torch.Tensor, labels: torch.Tensor, anchors: range
) -> tuple[float, float]:
    """Assert both paths give the same pairs and weights; return the largest loss differences."""
    miner = JaccardMiner()
    a1, p, a2, n = miner(embeddings, labels)
    per_anchor = JaccardSupConLoss(TEMPERATURE, reducer=DoNothingReducer())(
        embeddings, labels, (a1, p, a2, n)
    )["loss"]
    ours = dict(zip(per_anchor["indices"].tolist(), per_anchor["losses"].tolist(), strict=True))
    loop_losses, loop_positives, loop_negatives = loop_reference(embeddings, labels, anchors)

    in_anchors = torch.isin(a1, torch.tensor(anchors, device=a1.device))
    mined_positives = list(zip(a1[in_anchors].tolist(), p[in_anchors].tolist(), strict=True))
    mined_weights = miner.pos_weights[in_anchors].tolist()
    assert len(mined_positives) == len(loop_positives)
    for pair, weight in zip(mined_positives, mined_weights, strict=True):
        assert math.isclose(weight, loop_positives[pair], rel_tol=1e-6)
    in_anchors = torch.isin(a2, torch.tensor(anchors, device=a2.device))
    assert set(zip(a2[in_anchors].tolist(), n[in_anchors].tolist(), strict=True)) == loop_negatives
    assert {i for i in ours if i in anchors} == loop_losses.keys()

    anchor_difference = max(abs(ours[i] - loop_losses[i].item()) for i in loop_losses)
    mean_difference = 0.0
    if len(anchors) == len(labels):
        vectorised = JaccardSupConLoss(TEMPERATURE)(embeddings, labels, (a1, p, a2, n))
        mean_difference = abs(vectorised.item() - torch.stack(list(loop_losses.values())).mean())
    return anchor_difference, float(mean_difference)


def bench(batch: int, device: torch.device) -> None:
    embeddings, labels = make_batch(batch, device)
    anchors = range(batch if batch <= 256 else LOOP_ANCHORS_AT_1024)
    anchor_difference, mean_difference = check_agreement(embeddings, labels, anchors)
    assert anchor_difference < 1e-4 and mean_difference < 1e-4, (anchor_difference, mean_difference)

    miner, loss_fn = JaccardMiner(), JaccardSupConLoss(TEMPERATURE)

    def vectorised() -> None:
        leaf = embeddings.detach().requires_grad_()
        loss_fn(leaf, labels, miner(leaf, labels)).backward()

    def loop() -> None:
        leaf = embeddings.detach().requires_grad_()
        anchor_losses = loop_reference(leaf, labels, anchors)[0]
        torch.stack(list(anchor_losses.values())).mean().backward()

    fast = seconds(vectorised, device, repeats=20)
    slow = seconds(loop, device, repeats=1) * batch / len(anchors)
    loop_note = ""
    if len(anchors) < batch:
        loop_note = f" (estimated: {len(anchors)} anchors timed, × {batch // len(anchors)})"
    print(
        f"{device.type:4} batch {batch:4}: miner+loss fwd+bwd {fast * 1e3:8.2f} ms | "
        f"python loop {slow:7.2f} s{loop_note} | speed-up {slow / fast:8.0f}× | "
        f"max |Δ| per-anchor loss {anchor_difference:.1e}"
        + (f", mean loss {mean_difference:.1e}" if len(anchors) == batch else "")
    )


def main() -> None:
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"{NUM_LABELS} labels, dim {EMBEDDING_DIM}, τ={TEMPERATURE}"
    )
    for device in devices:
        for batch in (256, 1024):
            bench(batch, device)


if __name__ == "__main__":
    main()

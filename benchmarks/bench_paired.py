"""The paired bootstrap's replicate scores: heareval's scorer called once per resample (what
comparison.paired did) against comparison.resampled (all resamples at once), side by side on
the same predictions, with the largest difference between the two. Run by hand:

    .venv/bin/python benchmarks/bench_paired.py [--replicates 1000]
"""

import time
import warnings
from pathlib import Path

import click
import numpy as np

from hear_contrastune.comparison.paired import REPLICATES
from hear_contrastune.comparison.resampled import resampled_scores
from hear_contrastune.probes.protocol import primary_score, score_function

# (score, test clips, labels, multilabel): shapes of the suite's tasks and a larger one
CASES = (("top1_acc", 540, 12, False), ("top1_acc", 2000, 50, False),
         ("mAP", 300, 20, True), ("mAP", 2000, 100, True))


def predictions(n: int, labels: int, multilabel: bool, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """Targets and noisy scores that carry some of them."""
    if multilabel:
        targets = (rng.random((n, labels)) < 0.1).astype(np.float32)
    else:
        targets = np.eye(labels, dtype=np.float32)[rng.integers(0, labels, n)]
    return (rng.random((n, labels)) + targets).astype(np.float32), targets


@click.command()
@click.option("--replicates", default=REPLICATES, show_default=True)
def main(replicates: int) -> None:
    rng = np.random.default_rng(0)
    for name, n, labels, multilabel in CASES:
        scores, targets = predictions(n, labels, multilabel, rng)
        scorer = score_function(name, [str(i) for i in range(labels)], Path("-"))
        idx = rng.integers(0, n, (replicates, n))
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            each = np.array([primary_score([scorer], scores[i], targets[i]) for i in idx])
        t1 = time.perf_counter()
        at_once = resampled_scores(scorer, scores, targets, idx)
        t2 = time.perf_counter()
        print(f"{name:8s} {n:5d} clips x {labels:3d} labels, {replicates} resamples: "
              f"per resample {t1 - t0:7.2f} s, at once {t2 - t1:6.2f} s, "
              f"{(t1 - t0) / (t2 - t1):6.1f}x; largest difference "
              f"{np.max(np.abs(each - at_once)):.1e}")


if __name__ == "__main__":
    main()

"""Paired bootstrap intervals and verdicts: is one method's probe score better than another's
by more than the luck of the test clips and of the seeds?

Pure functions over results.json's Records and the per-clip predictions files they name
(probes.predictions). For each record, B replicate scores are computed with heareval's own
scorer on resampled test clips; replicate b of a (task, fold) draws the same clip indices for
every method and seed (the test clips are one set for all), so differences are paired over
clips. A difference A − B is the mean over seeds of (score A − score B), a k-fold task's score
being its fold mean as heareval's; its interval is a hierarchical bootstrap: in replicate b,
seeds are drawn with replacement from those both methods have (a method with one seed, the
frozen encoder, pairs with every seed of the other), and the drawn seeds' replicate-b
differences are averaged; the 95 % percentile interval of those B values decides: "win" if it
lies wholly on A's better side, "loss" if wholly on B's, else "tie". With one seed the
interval covers the test clips only.

A record's B replicate scores come from comparison.resampled (all resamples at once, where the
score allows it); each vector is cached under RUN/paired/, keyed by the predictions file's
content, B, the bootstrap seed and the (task, fold) the clip draws belong to.
"""

import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hear_contrastune.atomic import atomic_path
from hear_contrastune.comparison.resampled import resampled_scores
from hear_contrastune.comparison.results import Record
from hear_contrastune.comparison.run_layout import FINETUNE_METHODS, HEAD, method_key
from hear_contrastune.errors import UserError
from hear_contrastune.probes.predictions import read_predictions
from hear_contrastune.probes.protocol import score_function

REPLICATES = 1000  # B
BOOTSTRAP_SEED = 0
LEVEL = 0.95
PAIRED_DIR = "paired"
BEST_FINETUNE = "best fine-tuning"  # the stand-in name of the chosen FINETUNE_METHODS variant


@dataclass(frozen=True)
class Comparison:
    """A − B for one (task, shots, probe): verdict, point estimate and interval."""

    task: str
    shots: int
    probe: str
    a: str
    b: str  # a method, or BEST_FINETUNE (then `chosen` names the variant)
    verdict: str  # "win", "loss", "tie", or why there is none
    diff: float = math.nan
    low: float = math.nan
    high: float = math.nan
    seeds: tuple[int, ...] = ()  # the seeds of the difference (A's seeds where B has one)
    chosen: str = ""

    @property
    def decided(self) -> bool:
        return self.verdict in ("win", "loss", "tie")

    def text(self) -> str:
        """e.g. "win +0.021 [+0.008, +0.034]"; the reason where there is no verdict."""
        if not self.decided:
            return self.verdict
        return f"{self.verdict} {self.diff:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


@dataclass(frozen=True)
class SeedScores:
    """One method's per-seed scores (fold mean) and replicate vectors [B] on one cell."""

    points: dict[int, float]
    replicates: dict[int, np.ndarray]
    maximize: bool


def stable_int(*parts: object) -> int:
    """A 64-bit integer from `parts`, the same in every process (unlike hash())."""
    return int.from_bytes(hashlib.sha256("\0".join(map(str, parts)).encode()).digest()[:8],
                          "little")


def clip_indices(task: str, fold: str, n: int, replicates: int, seed: int) -> np.ndarray:
    """Replicate b's resampled test clips [B, n] of a (task, fold): the same for every method,
    seed and probe, which is what pairs the differences."""
    rng = np.random.default_rng([seed, stable_int(task, fold, n)])
    return rng.integers(0, n, (replicates, n))


def replicate_scores(path: Path, task: str, fold: str, replicates: int, seed: int
                     ) -> tuple[np.ndarray, bool]:
    """The primary score on each bootstrap replicate of a predictions file's test clips (fold
    mean for several folds), and whether higher is better."""
    pred = read_predictions(path)
    scorer = score_function(pred.primary, pred.vocabulary, path)
    per_fold = [resampled_scores(scorer, s, t,
                                 clip_indices(task, f"{fold}/{name}", len(s), replicates, seed))
                for name, s, t in zip(pred.folds, pred.scores, pred.targets, strict=True)]
    return np.mean(per_fold, axis=0), bool(scorer.maximize)


def cached_replicates(run: Path, record: Record, replicates: int, seed: int
                      ) -> tuple[np.ndarray, bool]:
    """replicate_scores of a record, reused from RUN/paired/ when computed for the same file
    content, B, seed and (task, fold)."""
    path = run / record.predictions
    digest = hashlib.sha256(path.read_bytes() if path.is_file() else b"")
    digest.update(f"\0{replicates}\0{seed}\0{record.task}\0{record.fold}".encode())
    cache = run / PAIRED_DIR / f"{digest.hexdigest()}.npz"
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if z["replicates"].shape == (replicates,):
                    return z["replicates"], bool(z["maximize"])
        except (OSError, KeyError, ValueError):
            pass  # unreadable: computed again
    reps, maximize = replicate_scores(path, record.task, record.fold, replicates, seed)
    with atomic_path(cache) as tmp, open(tmp, "wb") as f:
        np.savez(f, replicates=reps, maximize=np.array(maximize))
    return reps, maximize


def seed_scores(run: Path, records: list[Record], replicates: int, seed: int) -> SeedScores:
    """One method's records of one (task, shots, probe), by seed: the fold mean of the scores
    and of the replicate vectors."""
    by_seed: dict[int, list[Record]] = defaultdict(list)
    for r in records:
        by_seed[r.seed].append(r)
    points, reps, maximize = {}, {}, True
    for s, recs in sorted(by_seed.items()):
        pairs = [cached_replicates(run, r, replicates, seed) for r in recs]
        points[s] = math.fsum(r.score for r in recs) / len(recs)
        reps[s] = np.mean([p[0] for p in pairs], axis=0)
        maximize = pairs[0][1]
    return SeedScores(points, reps, maximize)


def seed_pairs(a: list[int], b: list[int]) -> list[tuple[int, int]]:
    """Which seed of A goes with which of B: a lone seed (the frozen encoder's) pairs with
    every seed of the other side; otherwise the seeds both have."""
    if len(a) == 1 and len(b) > 1:
        return [(a[0], s) for s in b]
    if len(b) == 1 and len(a) > 1:
        return [(s, b[0]) for s in a]
    return [(s, s) for s in a if s in b]


def paired_difference(a: SeedScores, b: SeedScores, rng: np.random.Generator
                      ) -> tuple[float, float, float, list[tuple[int, int]]]:
    """A − B: the mean over paired seeds, and the hierarchical bootstrap's percentile interval
    (seeds drawn with replacement in each replicate, clips already resampled in it)."""
    pairs = seed_pairs(sorted(a.points), sorted(b.points))
    if not pairs:
        return math.nan, math.nan, math.nan, pairs
    point = math.fsum(a.points[sa] - b.points[sb] for sa, sb in pairs) / len(pairs)
    diffs = np.stack([a.replicates[sa] - b.replicates[sb] for sa, sb in pairs])  # [pairs, B]
    draws = rng.integers(0, len(pairs), (diffs.shape[1], len(pairs)))  # [B, pairs]
    boot = diffs[draws, np.arange(diffs.shape[1])[:, None]].mean(axis=1)
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.nanpercentile(boot, [tail, 100 - tail])
    return point, float(low), float(high), pairs


def verdict(low: float, high: float, maximize: bool) -> str:
    """win / loss / tie of A against B from the interval of A − B."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "no interval"
    better_low, better_high = (low, high) if maximize else (-high, -low)
    return "win" if better_low > 0 else "loss" if better_high < 0 else "tie"


def best_finetune(by_method: dict[str, list[Record]]) -> str | None:
    """The fine-tuning variant (FINETUNE_METHODS) with the higher mean VALID score on this
    cell, never the test score; None where none has one."""
    valid = {m: [r.valid_score for r in by_method[m] if math.isfinite(r.valid_score)]
             for m in FINETUNE_METHODS if m in by_method}
    means = {m: math.fsum(v) / len(v) for m, v in valid.items() if v}
    return max(means, key=lambda m: (means[m], -FINETUNE_METHODS.index(m))) if means else None


def method_pairs(methods: list[str]) -> list[tuple[str, str]]:
    """The comparisons of a cell: each tuned method − frozen; contrastive − each fine-tuning
    variant; contrastive − the best variant (BEST_FINETUNE)."""
    pairs = [(m, "frozen") for m in methods if m != "frozen" and "frozen" in methods]
    if "contrastive" in methods:
        variants = [m for m in FINETUNE_METHODS if m in methods]
        pairs += [("contrastive", m) for m in variants]
        if variants:
            pairs.append(("contrastive", BEST_FINETUNE))
    return pairs


def compare_cell(run: Path, by_method: dict[str, list[Record]], a: str, b: str,
                 replicates: int, seed: int) -> Comparison:
    """One comparison of one (task, shots, probe) cell."""
    first = next(iter(by_method.values()))[0]
    cell = (first.task, first.shots, first.probe)
    sides = [a, *([m for m in FINETUNE_METHODS if m in by_method] if b == BEST_FINETUNE
                  else [b])]
    if not all(r.predictions for m in sides for r in by_method[m]):  # older results.json
        return Comparison(*cell, a, b, "no per-clip predictions")
    chosen = ""
    if b == BEST_FINETUNE:
        chosen = best_finetune(by_method) or ""
        if not chosen:
            return Comparison(*cell, a, b, "no valid score to choose a variant")
    recs_a, recs_b = by_method[a], by_method[chosen or b]
    try:
        sa = seed_scores(run, recs_a, replicates, seed)
        sb = seed_scores(run, recs_b, replicates, seed)
    except UserError:  # a file gone or damaged since the probe wrote it
        return Comparison(*cell, a, b, "predictions file missing or unreadable", chosen=chosen)
    rng = np.random.default_rng([seed, stable_int(*cell, a, chosen or b)])
    point, low, high, pairs = paired_difference(sa, sb, rng)
    if not pairs:
        return Comparison(*cell, a, b, "no seed in common", chosen=chosen)
    seeds = tuple(sorted({p[0] if len(sa.points) > 1 else p[1] for p in pairs}))
    return Comparison(*cell, a, b, verdict(low, high, sa.maximize), point, low, high, seeds,
                      chosen)


def comparisons(records: list[Record], run: Path, replicates: int = REPLICATES,
                seed: int = BOOTSTRAP_SEED) -> list[Comparison]:
    """Every comparison of every (task, shots, probe) cell of the records (the classifier
    head has no predictions and is left out)."""
    cells: dict[tuple[str, int, str], dict[str, list[Record]]] = defaultdict(
        lambda: defaultdict(list))
    for r in records:
        if r.probe != HEAD:
            cells[r.task, r.shots, r.probe][r.method].append(r)
    out = []
    for _, by_method in sorted(cells.items()):
        methods = sorted(by_method, key=method_key)
        out += [compare_cell(run, by_method, a, b, replicates, seed)
                for a, b in method_pairs(methods)]
    return out

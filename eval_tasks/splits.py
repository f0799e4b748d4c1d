"""Dealing items into splits or folds so every split sees every class, from a seeded rng.

Shared by the builders (gm-family-5fold deals programs, espeak-word deals voices) and by
`importer` (a user's files). Every function draws only from the `numpy.random.Generator` it is
given, in a fixed order, so the same inputs and seed always give the same splits.
"""

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def deal_round_robin(
    groups: Sequence[Sequence[T]], bins: Sequence[str], rng: np.random.Generator
) -> dict[str, list[T]]:
    """Each group's items shuffled and dealt round-robin over `bins`, starting where the
    previous group stopped: every group with at least len(bins) items reaches every bin, and
    bin sizes stay within one item of each other."""
    out: dict[str, list[T]] = {b: [] for b in bins}
    i = 0
    for members in groups:
        for j in rng.permutation(len(members)).tolist():
            out[bins[i % len(bins)]].append(members[j])
            i += 1
    return out


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """How many of `n` items each split gets: about n * fraction, but at least one each (so a
    class reaches every split), the first split (train) taking the rest. Needs n >= splits."""
    if n < len(fractions):
        raise ValueError(f"{n} items cannot reach {len(fractions)} splits")
    counts = [0] + [max(1, round(n * f)) for f in fractions[1:]]
    while sum(counts[1:]) > n - 1:  # train keeps at least one: shrink the largest other split
        k = max(range(1, len(counts)), key=lambda s: counts[s])
        counts[k] -= 1
    counts[0] = n - sum(counts[1:])
    return counts


def deal_by_size(
    groups: Sequence[Sequence[T]], fractions: Sequence[float], rng: np.random.Generator
) -> list[list[T]]:
    """Whole groups into len(fractions) splits holding about those fractions of all items.

    Groups are shuffled, then taken largest first, each into the split furthest below its
    target, so a big group cannot tip one split over. Keeps a group (one voice family) in one
    split, which is what makes that split's members unheard elsewhere."""
    total = sum(len(g) for g in groups)
    targets = [f * total for f in fractions]
    order = sorted(rng.permutation(len(groups)).tolist(), key=lambda i: -len(groups[i]))
    out: list[list[T]] = [[] for _ in fractions]
    for i in order:
        s = max(range(len(out)), key=lambda k: (targets[k] - len(out[k]), -k))
        out[s].extend(groups[i])
    return out


def stratify_multilabel(
    label_sets: Sequence[Sequence[str]], fractions: Sequence[float], rng: np.random.Generator
) -> list[int]:
    """A split index for each item, keeping every label's share of each split near `fractions`.

    Iterative stratification, greedily: labels are taken rarest first; each unplaced item
    carrying the label goes to the split that has none of that label yet, else to the split
    furthest below its quota for the label, else to the split furthest below its overall
    quota. Items are visited in a shuffled order. A label with at least len(fractions) items
    that are still unplaced when its turn comes reaches every split.
    """
    n, k = len(label_sets), len(fractions)
    labels = sorted({x for s in label_sets for x in s})
    count = {x: sum(x in s for s in label_sets) for x in labels}
    want = {x: [f * count[x] for f in fractions] for x in labels}
    have = {x: [0] * k for x in labels}
    want_all = [f * n for f in fractions]
    have_all = [0] * k
    split = [-1] * n
    order = rng.permutation(n).tolist()
    for label in sorted(labels, key=lambda x: (count[x], x)):
        for i in order:
            if split[i] >= 0 or label not in label_sets[i]:
                continue
            s = max(
                range(k),
                key=lambda j: (
                    have[label][j] == 0,
                    want[label][j] - have[label][j],
                    want_all[j] - have_all[j],
                    -j,
                ),
            )
            split[i] = s
            have_all[s] += 1
            for x in label_sets[i]:
                have[x][s] += 1
    for i in order:  # items with no labels at all: fill the overall quotas
        if split[i] < 0:
            s = max(range(k), key=lambda j: (want_all[j] - have_all[j], -j))
            split[i] = s
            have_all[s] += 1
    return split

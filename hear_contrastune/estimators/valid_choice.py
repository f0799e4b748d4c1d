"""Choosing a hyperparameter (a probe's k or C) by its valid score: one rule for every probe and
for LP-FT's classifier, so a choice never depends on which of them made it."""

import math
from typing import TypeVar

Setting = TypeVar("Setting", int, float)


def choose_on_valid(val_scores: dict[Setting, float], maximize: bool) -> Setting:
    """The best setting on validation; equal scores go to the smaller setting, NaN scores lose."""
    ordered = sorted(val_scores.items())
    best_key, best = ordered[0]
    for key, value in ordered[1:]:
        if math.isnan(value):
            continue
        if math.isnan(best) or (value > best if maximize else value < best):
            best_key, best = key, value
    return best_key

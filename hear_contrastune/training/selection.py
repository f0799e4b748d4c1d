"""Model selection while tuning: which epoch the valid scores keep as `best.pt`, and when a run
stops. The scores themselves come from training.valid_evaluator; the functions here are pure
functions of the curve of scores, so a resumed run chooses as an uninterrupted one and studies
replay them on finished runs.

Which epoch the scores choose is `choose_epoch`'s rule (TuneConfig.select): the best one, the
last one, or the best of the curve smoothed by a centred moving average over 3 epochs. A
centred window, not an exponential moving average: both cut the noise of one epoch's score
alike (an EMA with weight 1/2 on the newest score has the variance of a 3-epoch mean), but an
EMA lags, scoring epoch e by the epochs before it, so on a curve that rises then falls it keeps
an epoch after the peak; the centred mean scores e by e and its two neighbours. Its price: an
epoch is judged one epoch later, so the loop keeps the previous epoch's weights until then.
"""

from collections.abc import Sequence

import numpy as np

from hear_contrastune.training.config import SELECT_RULES


def smoothed(scores: Sequence[float]) -> np.ndarray:
    """Each score's mean with its neighbours (a centred window of 3; two at either end)."""
    v = np.asarray(scores, dtype=np.float64)
    return np.array([v[max(0, e - 1):e + 2].mean() for e in range(len(v))])


def scored_epochs(scores: Sequence[float]) -> np.ndarray:
    """The epochs of a curve that were scored (--select-every leaves the others NaN)."""
    return np.flatnonzero(np.isfinite(np.asarray(scores, dtype=np.float64)))


def choose_epoch(rule: str, scores: Sequence[float], finished: bool) -> tuple[int, float]:
    """The epoch `rule` keeps from the valid scores of epochs 0, 1, ... so far (NaN where an
    epoch was not scored), and the score it was chosen by (the smoothed one for "smoothed");
    the earliest on a tie. Only scored epochs are candidates.

    A scored epoch's smoothed score is its mean with the scored epochs either side, so until the
    run is `finished` the latest scored epoch is no candidate yet, and a new score can move the
    choice only to the scored epoch before. A pure function of the curve, so a resumed run (its
    curve read back from epochs.csv) chooses as an uninterrupted one, and studies can apply
    every rule to a finished run's curve.
    """
    epochs = scored_epochs(scores)
    values = np.asarray(scores, dtype=np.float64)[epochs]
    if rule == "last":
        return int(epochs[-1]), float(values[-1])
    if rule == "smoothed":
        values = smoothed(values)
        if not finished and len(values) > 1:
            epochs, values = epochs[:-1], values[:-1]
    elif rule != "best":
        raise ValueError(f"selection rule {rule!r}: choose from {', '.join(SELECT_RULES)}")
    best = int(np.argmax(values))
    return int(epochs[best]), float(values[best])


def stalled(rule: str, scores: Sequence[float], patience: int) -> bool:
    """Whether the run can stop: `rule`'s score of epochs 0, 1, ... has not improved for
    `patience` epochs (0: never stop early).

    Judged on the score the rule chooses by (the smoothed one for "smoothed"; "last" chooses by
    none, so by the raw valid kNN), with choose_epoch's own tie rule: a tie is no improvement.
    A pure function of the curve, like choose_epoch, so a resumed run stops where an
    uninterrupted one would, and studies can replay it on finished runs' curves.
    """
    if patience <= 0:
        return False
    best, _ = choose_epoch("best" if rule == "last" else rule, scores, finished=False)
    return int(scored_epochs(scores)[-1]) - best >= patience


def stop_epoch(rule: str, scores: Sequence[float], patience: int) -> int:
    """The epoch a run with this valid curve stops after under `patience` (the last if none)."""
    for epoch in scored_epochs(scores)[1:]:
        if stalled(rule, scores[:epoch + 1], patience):
            return int(epoch)
    return len(scores) - 1


def is_scored(epoch: int, epochs: int, select_every: int) -> bool:
    """Whether a run of `epochs` epochs scores valid after `epoch` (--select-every): epoch 0,
    the last, and every `select_every`-th."""
    return epoch % select_every == 0 or epoch == epochs


def every(scores: Sequence[float], select_every: int) -> list[float]:
    """A curve scored every epoch as a run with --select-every would have scored it (the
    other epochs NaN): what studies replay on finished runs."""
    return [v if is_scored(e, len(scores) - 1, select_every) else float("nan")
            for e, v in enumerate(scores)]

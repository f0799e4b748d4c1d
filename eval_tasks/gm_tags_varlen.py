"""gm-tags-varlen: which GM families and instruments sound in this clip? FSD50K's shape.

FSD50K is multilabel tagging of clips 0.3-30 s long, which hearpreprocess writes with
sample_duration null (every clip at its own length), split_mode trainvaltest and evaluation
mAP, d_prime, aucroc, top1_acc; its labels are AudioSet classes together with their
ancestors. Here, scaled down: clips of 0.3-6 s, log-uniform so most are short (median 1.3 s),
each holding 1-3 events (equally likely) of programs from `gm.PROGRAM_POOL` in different
families. An event is a phrase (`soundfont.Phrase`) of 1-8 evenly spaced notes spanning 20-90 %
of the clip at a random place in it, RMS-normalised over its span and set within 6 dB of the
clip's other events. Labels are each event's family and program, 15 + 45: a two-level
hierarchy like FSD50K's. As in gm-family-mix, train, valid and test draw their keys from
disjoint interleaved sets over the same range, so the test's pitches are unheard in training.

Filenames: <index>_p<program>-<program>....wav, the programs of the clip's events.
"""

from collections.abc import Iterator, Sequence
from typing import TypeVar

import numpy as np

from eval_tasks import gm
from eval_tasks.layout import Clip, TaskPlan, task_metadata
from eval_tasks.soundfont import Note, Phrase

NAME = "gm-tags-varlen"
DESCRIPTION = "GM families and instruments of 1-3 events in 0.3-6 s clips (60 labels, multilabel)"
VERSION = "v1"
# FSD50K's list. mAP comes first because heareval selects models on the first score.
# d_prime and aucroc need positives and negatives of every label in the scored split
# (roc_auc_score is undefined otherwise and heareval reports nan): `plan` makes every split
# cycle through the families for each clip's first event and through each family's
# programs, and checks the result. top1_acc in a multilabel task compares the top prediction
# with the clip's lowest-index label (its first family here), as it does for FSD50K.
EVALUATION = ["mAP", "d_prime", "aucroc", "top1_acc"]
SECONDS = (0.3, 6.0)  # clip length, log-uniform
CLIPS = {"full": (600, 160, 240), "small": (18, 12, 12)}  # train, valid, test
SPAN = (0.2, 0.9)  # an event's span (first onset to last key up), as a share of the clip
MIN_SPAN = 0.1  # seconds
NOTE_SECONDS = 0.25  # an event has at most one note per this much of its span ...
MAX_NOTES = 8  # ... and at most this many
GAIN_DB = (-6.0, 0.0)  # each event's level after RMS normalisation

T = TypeVar("T")


def _rounds(items: Sequence[T], rng: np.random.Generator) -> Iterator[T]:
    """`items` in shuffled rounds, forever: the first len(items) draws cover them all."""
    while True:
        for j in rng.permutation(len(items)).tolist():
            yield items[j]


def _event(rng: np.random.Generator, program: int, keys: list[int], seconds: float) -> Phrase:
    """One program's phrase, placed anywhere in a clip of `seconds`."""
    span = max(MIN_SPAN, seconds * float(rng.uniform(*SPAN)))
    onset = float(rng.uniform(0.0, seconds - span))
    count = int(rng.integers(1, min(MAX_NOTES, max(1, int(span / NOTE_SECONDS))) + 1))
    step = span / count
    hold = round(step * float(rng.uniform(*gm.ARTICULATION_RANGE)), 4)
    velocity = gm.draw_velocity(rng)
    notes = tuple(
        Note(program, int(rng.choice(keys)), gm.vary_velocity(rng, velocity),
             round(onset + j * step, 4), hold)
        for j in range(count)
    )
    return Phrase(notes, round(float(rng.uniform(*GAIN_DB)), 2))


def _check_every_label_decides(clips: list[Clip], vocabulary: list[str]) -> None:
    """Every label with positives and negatives in every split: heareval's d_prime and
    aucroc are nan otherwise."""
    for split in gm.TRAIN_VALID_TEST:
        label_sets = [set(c.labels) for c in clips if c.split == split]
        for label in vocabulary:
            n = sum(label in s for s in label_sets)
            if not 0 < n < len(label_sets):
                raise ValueError(
                    f"{NAME}: label {label!r} is in {n} of {len(label_sets)} {split} clips; "
                    "d_prime and aucroc need positives and negatives"
                )


def plan(size: str, seed: int) -> TaskPlan:
    """The clips of one build; the same (size, seed) always gives the same plan."""
    if size == "full":
        programs, (low, high) = gm.PROGRAM_POOL, (48, 83)
    else:  # three programs of each small family, so the hierarchy is there
        small_families = {gm.family(p) for p in gm.SMALL_PROGRAMS}
        programs = [p for p in gm.PROGRAM_POOL if gm.family(p) in small_families]
        (low, high) = (60, 71)
    by_family: dict[str, list[int]] = {}
    for p in sorted(programs):
        by_family.setdefault(gm.family(p), []).append(p)
    families = list(by_family)  # GM order, as the programs are numbered
    vocabulary = families + [gm.program_name(p) for p in sorted(programs)]
    key_sets = gm.interleaved_pitch_sets(low, high, 3)
    log_seconds = np.log(SECONDS)
    rng = np.random.default_rng(seed)
    clips = []
    for split, keys, count in zip(gm.TRAIN_VALID_TEST, key_sets, CLIPS[size], strict=True):
        leads = _rounds(families, rng)
        players = {f: _rounds(by_family[f], rng) for f in families}
        for i in range(count):
            seconds = round(float(np.exp(rng.uniform(*log_seconds))), 3)
            lead = next(leads)
            others = [f for f in families if f != lead]
            extra = rng.choice(len(others), size=int(rng.integers(0, 3)), replace=False)
            chosen = sorted([lead, *(others[j] for j in extra.tolist())], key=families.index)
            events = tuple(_event(rng, next(players[f]), keys, seconds) for f in chosen)
            played = [e.notes[0].program for e in events]
            name = f"{i:05d}_p" + "-".join(f"{p:03d}" for p in played) + ".wav"
            labels = (*chosen, *(gm.program_name(p) for p in played))
            clips.append(Clip(split, name, labels, events, gm.draw_peak_db(rng), seconds))
    _check_every_label_decides(clips, vocabulary)
    metadata = task_metadata(
        NAME,
        version=VERSION,
        prediction_type="multilabel",
        evaluation=list(EVALUATION),
        splits=list(gm.TRAIN_VALID_TEST),
        sample_duration=None,
        size=size,
        seed=seed,
        clip_seconds=list(SECONDS),
        split_keys=dict(zip(gm.TRAIN_VALID_TEST, key_sets, strict=True)),
    )
    return TaskPlan(metadata, vocabulary, clips)

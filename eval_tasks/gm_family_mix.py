"""gm-family-mix: which General-MIDI instrument families sound in this mixture?

Multilabel: each clip mixes 1-3 notes, each from a different family (programs from
`gm.PROGRAM_POOL`), with staggered onsets and levels within 6 dB of each other after every
note is RMS-normalised, so no labelled family is inaudible. As in gm-program, train, valid
and test draw their keys from disjoint interleaved sets over the same range.

Filenames: <index>_p<program>-<program>....wav, the programs of the clip's notes.
"""

import numpy as np

from eval_tasks import gm
from eval_tasks.layout import Clip, TaskPlan, task_metadata
from eval_tasks.soundfont import Note

NAME = "gm-family-mix"
DESCRIPTION = "GM families in a mix of 1-3 notes (15 labels, multilabel); held-out keys in test"
VERSION = "v1"
DURATION = 1.0
CLIPS = {"full": (1800, 600, 600), "small": (24, 12, 12)}  # train, valid, test


def _mix_note(rng: np.random.Generator, program: int, pitch: int) -> Note:
    """Onset within the first 0.3 s, key held 0.3-0.6 s: notes overlap yet start apart."""
    onset = round(float(rng.uniform(0.0, 0.3)), 4)
    hold = round(float(rng.uniform(0.3, 0.6)), 4)
    gain_db = round(float(rng.uniform(-6.0, 0.0)), 2)
    return Note(program, pitch, gm.draw_velocity(rng), onset, hold, gain_db)


def plan(size: str, seed: int) -> TaskPlan:
    """The clips of one build; the same (size, seed) always gives the same plan."""
    if size == "full":
        programs, (low, high) = gm.PROGRAM_POOL, (48, 83)
    else:
        programs, (low, high) = gm.SMALL_PROGRAMS, (60, 71)
    by_family: dict[str, list[int]] = {}
    for p in sorted(programs):
        by_family.setdefault(gm.family(p), []).append(p)
    families = list(by_family)  # GM order, as the programs are numbered
    key_sets = gm.interleaved_pitch_sets(low, high, 3)
    rng = np.random.default_rng(seed)
    clips = []
    for split, keys, count in zip(gm.TRAIN_VALID_TEST, key_sets, CLIPS[size], strict=True):
        for i in range(count):
            k = int(rng.integers(1, 4))
            chosen = sorted(rng.choice(len(families), size=k, replace=False).tolist())
            notes = tuple(
                _mix_note(rng, int(rng.choice(by_family[families[f]])), int(rng.choice(keys)))
                for f in chosen
            )
            name = f"{i:05d}_p" + "-".join(f"{n.program:03d}" for n in notes) + ".wav"
            labels = tuple(families[f] for f in chosen)
            clips.append(Clip(split, name, labels, notes, gm.draw_peak_db(rng)))
    metadata = task_metadata(
        NAME,
        version=VERSION,
        prediction_type="multilabel",
        evaluation=["mAP", "d_prime", "aucroc"],
        splits=list(gm.TRAIN_VALID_TEST),
        sample_duration=DURATION,
        size=size,
        seed=seed,
        split_keys=dict(zip(gm.TRAIN_VALID_TEST, key_sets, strict=True)),
    )
    return TaskPlan(metadata, families, clips)

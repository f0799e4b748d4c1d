"""gm-phrase-5fold: which instrument, or sound effect, plays this 5 s phrase? ESC-50's shape.

ESC-50 is 50 classes of 5 s clips in five folds that come with the dataset: hearpreprocess
writes it with split_mode presplit_kfold and evaluation top1_acc, which heareval averages over
the folds (test fold k, validate on fold k+1, train on the other three). Here the 50 classes
are the 45 programs of `gm.PROGRAM_POOL` and the five sound effects of `gm.SCENE_EFFECTS`, and
each clip is one phrase of 3 or more notes (`soundfont.Phrase`: played in time on one
channel, each release ringing under the next note) with its own tempo, rhythm and rests,
articulation, dynamics and melody. It starts within 0.5 s and ends (last key up) about 3-4.8 s
in, so the clip ends in the release tail or in silence, as many ESC-50 clips do.

Folds hold out keys: keys 48-83 are dealt to the folds by `gm.interleaved_pitch_sets` (7 or 8
keys each, spread over the whole range) and a fold's phrases use only its keys, so the test
fold's pitches are never heard in training, as in gm-program. Every fold holds every class
(4 clips each at `full`, 1 at `small`).

Filenames: p<program>_<n>.wav, n numbering the program's clips over all folds.
"""

import numpy as np

from eval_tasks import gm
from eval_tasks.layout import Clip, TaskPlan, task_metadata
from eval_tasks.soundfont import Note, Phrase

NAME = "gm-phrase-5fold"
DESCRIPTION = "GM instrument or sound effect of a 5 s phrase (50 classes), 5 folds by key"
VERSION = "v1"
DURATION = 5.0
NFOLDS = 5
FOLDS = [f"fold{i:02d}" for i in range(NFOLDS)]
KEYS = (48, 83)  # C3-B5, dealt to the folds
CLIPS_PER_FOLD = {"full": 4, "small": 1}  # per class

TEMPO_BPM = (90.0, 160.0)
BEATS = (0.5, 1.0, 1.0, 1.5)  # inter-onset intervals in beats; a beat twice as likely
STEPS = (-2, -1, -1, 0, 1, 1, 2)  # moves through the fold's sorted keys: mostly by one
MIN_NOTES = 3  # always fit: the third starts by 0.5 s + 2 x 1.5 beats at 90 bpm < 3.5 s
# A step after the first MIN_NOTES notes is silent; never two in a row, nor the last.
REST_CHANCE = 0.15
# The last note is cut to end the phrase in time; a note starts only with this left (s).
MIN_HOLD = 0.1
START = (0.0, 0.5)  # first onset, seconds
END = (3.5, 4.8)  # the phrase ends (last key up) by then


def draw_phrase(rng: np.random.Generator, program: int, keys: list[int]) -> Phrase:
    """A phrase over `keys` (sorted) that leaves the clip room for its release tail."""
    beat = 60.0 / float(rng.uniform(*TEMPO_BPM))
    longest = beat * max(BEATS)
    articulation = float(rng.uniform(*gm.ARTICULATION_RANGE))
    velocity = gm.draw_velocity(rng)
    end = float(rng.uniform(*END))
    t = float(rng.uniform(*START))
    i = int(rng.integers(len(keys)))
    notes: list[Note] = []
    rested = False
    while t + MIN_HOLD < end:
        ioi = beat * float(rng.choice(BEATS))
        rested = (
            not rested and len(notes) >= MIN_NOTES and t + 2 * longest < end
            and rng.random() < REST_CHANCE
        )
        if not rested:
            hold = min(ioi * articulation, end - t)
            v = gm.vary_velocity(rng, velocity)
            notes.append(Note(program, keys[i], v, round(t, 4), round(hold, 4)))
            i = min(max(i + int(rng.choice(STEPS)), 0), len(keys) - 1)
        t += ioi
    return Phrase(tuple(notes))


def plan(size: str, seed: int) -> TaskPlan:
    """The clips of one build; the same (size, seed) always gives the same plan."""
    programs = sorted(gm.PROGRAM_POOL + gm.SCENE_EFFECTS if size == "full" else gm.SMALL_PROGRAMS)
    key_sets = gm.interleaved_pitch_sets(*KEYS, NFOLDS)
    per_fold = CLIPS_PER_FOLD[size]
    rng = np.random.default_rng(seed)
    clips = []
    for f, (fold, keys) in enumerate(zip(FOLDS, key_sets, strict=True)):
        for program in programs:
            for j in range(per_fold):
                clips.append(
                    Clip(
                        fold,
                        f"p{program:03d}_{f * per_fold + j:02d}.wav",
                        (gm.program_name(program),),
                        (draw_phrase(rng, program, keys),),
                        gm.draw_peak_db(rng),
                    )
                )
    metadata = task_metadata(
        NAME,
        version=VERSION,
        prediction_type="multiclass",
        evaluation=["top1_acc"],
        splits=list(FOLDS),
        sample_duration=DURATION,
        size=size,
        seed=seed,
        split_mode="presplit_kfold",
        fold_keys=dict(zip(FOLDS, key_sets, strict=True)),
    )
    return TaskPlan(metadata, [gm.program_name(p) for p in programs], clips)

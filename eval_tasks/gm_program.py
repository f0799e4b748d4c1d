"""gm-program: which General-MIDI instrument plays this note?

Multiclass over the programs in `gm.PROGRAM_POOL` (three per pitched GM family, so classes
range from easy, flute vs. taiko, to hard, violin vs. cello). Every program plays every key of
its split once; train, valid and test use disjoint interleaved keys over the same range, so
the test asks for timbre at pitches the model never heard that instrument play.

Filenames: p<program>_k<key>.wav (zero-padded to three digits).
"""

import numpy as np

from eval_tasks import gm
from eval_tasks.layout import Clip, TaskPlan, task_metadata

NAME = "gm-program"
DESCRIPTION = "GM instrument of a 1 s note (45 classes); valid/test keys never seen in training"
VERSION = "v1"
DURATION = 1.0


def plan(size: str, seed: int) -> TaskPlan:
    """The clips of one build; the same (size, seed) always gives the same plan."""
    if size == "full":
        programs, (low, high) = gm.PROGRAM_POOL, (48, 83)  # C3-B5, 12 keys per split
    else:
        programs, (low, high) = gm.SMALL_PROGRAMS, (60, 71)  # one octave, 4 keys per split
    programs = sorted(programs)
    key_sets = gm.interleaved_pitch_sets(low, high, 3)
    rng = np.random.default_rng(seed)
    clips = []
    for split, keys in zip(gm.TRAIN_VALID_TEST, key_sets, strict=True):
        for program in programs:
            for key in keys:
                note = gm.solo_note(rng, program, key, DURATION)
                clips.append(
                    Clip(
                        split,
                        f"p{program:03d}_k{key:03d}.wav",
                        (gm.program_name(program),),
                        (note,),
                        gm.draw_peak_db(rng),
                    )
                )
    metadata = task_metadata(
        NAME,
        version=VERSION,
        prediction_type="multiclass",
        evaluation=["top1_acc"],
        splits=list(gm.TRAIN_VALID_TEST),
        sample_duration=DURATION,
        size=size,
        seed=seed,
        split_keys=dict(zip(gm.TRAIN_VALID_TEST, key_sets, strict=True)),
    )
    return TaskPlan(metadata, [gm.program_name(p) for p in programs], clips)

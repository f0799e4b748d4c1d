"""gm-pitch: which MIDI key is this note? (HEAR's nsynth_pitch, from the GM soundfont.)

Multiclass over keys 36-84 (C2-C6, 49 classes), labels the key numbers as strings in rising
order, so heareval's chroma_acc (class index mod 12) is pitch class. Programs come from
`gm.PITCHED_PROGRAMS`, where CREPE confirmed the sounding pitch is the key; they are dealt to
train, valid and test 3:1:1 within each GM family, so valid and test are instruments never
heard in training. Every program plays every key once.

Filenames: p<program>_k<key>.wav (zero-padded to three digits).
"""

import numpy as np

from eval_tasks import gm
from eval_tasks.layout import Clip, TaskPlan, task_metadata

NAME = "gm-pitch"
DESCRIPTION = "MIDI key of a 1 s note (49 classes, C2-C6); valid/test instruments held out"
VERSION = "v1"
DURATION = 1.0
DEAL = ["train", "train", "train", "valid", "test"]  # repeated over the family-ordered programs


def deal_programs(programs: list[int], rng: np.random.Generator) -> dict[str, list[int]]:
    """Split programs 3:1:1 into train/valid/test: shuffle within each family, lay the families
    end to end and deal in the DEAL pattern, so every split gets a spread of families."""
    by_family: dict[str, list[int]] = {}
    for p in sorted(programs):
        by_family.setdefault(gm.family(p), []).append(p)
    ordered = [p for members in by_family.values() for p in rng.permutation(members).tolist()]
    dealt: dict[str, list[int]] = {s: [] for s in gm.TRAIN_VALID_TEST}
    for i, p in enumerate(ordered):
        dealt[DEAL[i % len(DEAL)]].append(int(p))
    return {s: sorted(ps) for s, ps in dealt.items()}


def plan(size: str, seed: int) -> TaskPlan:
    """The clips of one build; the same (size, seed) always gives the same plan."""
    if size == "full":
        programs, (low, high) = gm.PITCHED_PROGRAMS, (36, 84)
    else:
        programs, (low, high) = [*gm.SMALL_PROGRAMS, 24], (60, 71)  # + nylon guitar
    rng = np.random.default_rng(seed)
    dealt = deal_programs(programs, rng)
    keys = list(range(low, high + 1))
    clips = []
    for split in gm.TRAIN_VALID_TEST:
        for program in dealt[split]:
            for key in keys:
                note = gm.solo_note(rng, program, key, DURATION)
                clips.append(
                    Clip(
                        split,
                        f"p{program:03d}_k{key:03d}.wav",
                        (str(key),),
                        (note,),
                        gm.draw_peak_db(rng),
                    )
                )
    metadata = task_metadata(
        NAME,
        version=VERSION,
        prediction_type="multiclass",
        evaluation=["pitch_acc", "chroma_acc"],
        splits=list(gm.TRAIN_VALID_TEST),
        sample_duration=DURATION,
        size=size,
        seed=seed,
        pitch_range_min=low,
        pitch_range_max=high,
        split_programs=dealt,
    )
    return TaskPlan(metadata, [str(k) for k in keys], clips)

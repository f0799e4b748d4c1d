"""gm-family-5fold: which General-MIDI family does this instrument belong to? Five folds.

Multiclass over the 15 families of `gm.AUDIBLE_PROGRAMS`, split_mode new_split_kfold, so
heareval trains five times (test fold k, valid fold k+1, train the other three). Folds are
stratified by family and grouped by program: each family's programs are shuffled and dealt
round-robin over the folds, so every fold holds every family, and a test fold's instruments
never occur in its train or valid folds. The task asks whether an embedding places an unheard
instrument with its family.

Filenames: p<program>_k<key>_<n>.wav (key and note index zero-padded).
"""

import numpy as np

from eval_tasks import gm
from eval_tasks.layout import Clip, TaskPlan, task_metadata
from eval_tasks.splits import deal_round_robin

NAME = "gm-family-5fold"
DESCRIPTION = "GM family of a 1 s note (15 classes), 5 folds grouped by instrument"
VERSION = "v1"
DURATION = 1.0
NFOLDS = 5
FOLDS = [f"fold{i:02d}" for i in range(NFOLDS)]
NOTES_PER_PROGRAM = {"full": 12, "small": 2}
SMALL_FAMILIES = ("Piano", "Strings", "Brass")


def deal_folds(programs: list[int], rng: np.random.Generator) -> dict[str, list[int]]:
    """Each family's programs shuffled and dealt round-robin over the folds, starting where
    the previous family stopped, so fold sizes stay within one program of each other."""
    by_family: dict[str, list[int]] = {}
    for p in sorted(programs):
        by_family.setdefault(gm.family(p), []).append(p)
    for family, members in by_family.items():
        if len(members) < NFOLDS:
            raise ValueError(f"{family}: {len(members)} programs, need {NFOLDS} for the folds")
    folds = deal_round_robin(list(by_family.values()), FOLDS, rng)
    return {f: sorted(ps) for f, ps in folds.items()}


def plan(size: str, seed: int) -> TaskPlan:
    """The clips of one build; the same (size, seed) always gives the same plan."""
    programs = gm.AUDIBLE_PROGRAMS
    if size != "full":  # the first five programs of three families: one of each per fold
        programs = [
            p for f in SMALL_FAMILIES for p in [q for q in programs if gm.family(q) == f][:NFOLDS]
        ]
    rng = np.random.default_rng(seed)
    folds = deal_folds(programs, rng)
    clips = []
    for fold in FOLDS:
        for program in folds[fold]:
            keys = rng.integers(48, 84, size=NOTES_PER_PROGRAM[size]).tolist()
            for n, key in enumerate(keys):
                note = gm.solo_note(rng, program, int(key), DURATION)
                clips.append(
                    Clip(
                        fold,
                        f"p{program:03d}_k{key:03d}_{n:02d}.wav",
                        (gm.family(program),),
                        (note,),
                        gm.draw_peak_db(rng),
                    )
                )
    families = list(dict.fromkeys(gm.family(p) for p in sorted(programs)))
    metadata = task_metadata(
        NAME,
        version=VERSION,
        prediction_type="multiclass",
        evaluation=["top1_acc"],
        splits=list(FOLDS),
        sample_duration=DURATION,
        size=size,
        seed=seed,
        fold_programs=folds,
    )
    return TaskPlan(metadata, families, clips)

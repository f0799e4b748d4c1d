"""Offline HEAR tasks: notes and phrases from the General-MIDI soundfont that ships with
pretty_midi, and words spoken by espeak-ng; plus `importer`, which turns a user's own labelled
audio into one.

Each builder plans its clips from a seed (numpy's PCG64 only), renders them with tinysoundfont
or espeak-ng and writes hearpreprocess's layout, so the same (task, size, seed) gives
byte-identical files (on the same tinysoundfont / espeak-ng build: neither promises identical
output across versions or platforms).
"""

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from eval_tasks import (
    espeak_word,
    gm,
    gm_family_kfold,
    gm_family_mix,
    gm_phrase_kfold,
    gm_pitch,
    gm_program,
    gm_tags_varlen,
)
from eval_tasks.layout import TaskPlan, is_complete, write_task
from hear_contrastune.errors import UserError
from hear_contrastune.lock import exclusive

DEFAULT_SIZE = "full"


@dataclass(frozen=True)
class TaskBuilder:
    """A task's name, its one-line description and the function planning its clips."""

    name: str
    description: str
    plan: Callable[[str, int], TaskPlan]


TASKS: dict[str, TaskBuilder] = {
    m.NAME: TaskBuilder(m.NAME, m.DESCRIPTION, m.plan)
    for m in (
        gm_program, gm_family_mix, gm_pitch, gm_family_kfold, gm_phrase_kfold, gm_tags_varlen,
        espeak_word,
    )
}


def list_tasks() -> list[tuple[str, str]]:
    """(name, description) of every task, in registry order."""
    return [(b.name, b.description) for b in TASKS.values()]


def plan_task(name: str, size: str = DEFAULT_SIZE, seed: int = 0) -> TaskPlan:
    """The plan `build` would render, with a one-line UserError for an unknown name or size."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    if size not in gm.SIZES:
        raise UserError(f"unknown size {size!r}; known: {', '.join(gm.SIZES)}")
    return TASKS[name].plan(size, seed)


def is_built(name: str, out_dir: Path, size: str = DEFAULT_SIZE, seed: int = 0) -> bool:
    """True if out_dir/<name> already holds this exact build (so `build` would skip it)."""
    return is_complete(Path(out_dir) / name, plan_task(name, size, seed))


def build(name: str, out_dir: Path, size: str = DEFAULT_SIZE, seed: int = 0) -> Path:
    """Build task `name` at out_dir/<name> and return that path. A complete build of the same
    size and seed is kept; anything else there (partial, other size or seed) is replaced.

    Builders of one task wait for each other (a lock beside it): a second process (two tuning
    study processes starting together) finds the first one's build complete and keeps it,
    instead of replacing the folder the first is already reading."""
    plan = plan_task(name, size, seed)
    out_dir = Path(out_dir)
    task_dir, lock = out_dir / name, f".{name}.build.lock"
    created = not out_dir.exists()
    with exclusive(out_dir, "--out", name=lock, wait=True):
        try:
            if not is_complete(task_dir, plan):
                write_task(task_dir, plan)
        except BaseException:  # a failed build leaves nothing, not even the folder it made
            if created and [p.name for p in out_dir.iterdir()] == [lock]:
                shutil.rmtree(out_dir)
            raise
    return task_dir

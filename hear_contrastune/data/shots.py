"""The few-shot regime: N labelled train clips per class, drawn the same way for every method.

`draw_shots` picks clips from a train role's labels alone (in ClipDataset order: split order,
then filename), seeded by (seed, shots), so `tune`, `finetune`, LP-FT and the probes of a
frozen encoder all see exactly the same clips for one seed, and another seed draws another set.
A run draws once: the clips it drew are recorded by name (`write_draw`, shots.json in the tuning
run's folder, or in compare's model folder for the frozen encoder), and the probes' view is cut
from that record by clip name (`shots_view`), whatever order the embeddings' rows are in.
Multiclass: N clips of each class (all of a class that has fewer). Multilabel: clips are added,
rarest label first, until every label is on at least N of them (all its clips if it has
fewer): a clip brings its other labels along, so common labels end up with more than N; the
log and the view say how many clips that made.

Only train is cut: valid (model selection, the probes' choice of k or C) and test stay whole,
so the scores of every shots setting are on the same test clips.
"""

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hear_contrastune.atomic import atomic_dir, write_json
from hear_contrastune.data.embeddings import (
    EmbeddedTask,
    content_key,
    read_clip_names,
    read_split,
    write_split,
)
from hear_contrastune.data.hear_format import METADATA_FILE, VOCABULARY_FILE, roles_for_fold
from hear_contrastune.data.loading import ClipDataset
from hear_contrastune.data.task import Task
from hear_contrastune.errors import UserError

VIEW_SOURCE_FILE = "shots-source.json"
SHOTS_FILE = "shots.json"  # a few-shot run's draw: the clips it trains and is probed on
# --shots all: every train clip, no draw (what a run's `shots` holds then)
ALL_SHOTS = 0


def draw_shots(labels: list[list[str]], shots: int, seed: int, multilabel: bool) -> np.ndarray:
    """Sorted indices into `labels` of the clips the few-shot run keeps."""
    if shots < 1:
        raise UserError(f"--shots {shots}: expected a whole number >= 1 (or all)")
    rng = np.random.default_rng((seed, shots))
    by_label: dict[str, list[int]] = {}
    for i, row in enumerate(labels):
        for label in row:
            by_label.setdefault(label, []).append(i)
    order = sorted(by_label, key=lambda lab: (len(by_label[lab]), lab))  # rarest first
    chosen: set[int] = set()
    for label in order:
        candidates = [int(i) for i in rng.permutation(by_label[label])]
        if not multilabel:
            chosen.update(candidates[:shots])
            continue
        have = sum(i in chosen for i in by_label[label])
        for i in candidates:
            if have >= shots:
                break
            if i not in chosen:
                chosen.add(i)
                have += 1
    return np.array(sorted(chosen), dtype=np.int64)


def shots_note(labels: list[list[str]], kept: np.ndarray, shots: int, multilabel: bool) -> str:
    """One log line saying what the draw kept."""
    counts: dict[str, int] = {}
    for i in kept:
        for label in labels[i]:
            counts[label] = counts.get(label, 0) + 1
    unit = "label" if multilabel else "class"
    short = sum(c < shots for c in counts.values())
    return (f"few-shot: {len(kept)} of {len(labels)} train clips, {shots} per {unit}"
            + (" (at least; a clip carries all its labels)" if multilabel else "")
            + (f"; {short} {unit}(es) had fewer and keep all theirs" if short else ""))


def draw_train_clips(task: Task, fold: str, shots: int, seed: int
                     ) -> tuple[ClipDataset, np.ndarray]:
    """The train role's clips (of `fold` for k-fold) and `draw_shots`'s indices into them."""
    clips = ClipDataset(task, roles_for_fold(task, fold)["train"])
    return clips, draw_shots(clips.labels, shots, seed, task.multilabel)


def write_draw(path: Path, clips: Sequence[str], shots: int, seed: int) -> None:
    """Record a run's draw, the names of the clips it kept, atomically."""
    write_json(path, {"shots": shots, "seed": seed, "clips": list(clips)})


def read_draw(path: Path) -> list[str]:
    """The clip names a run's draw kept."""
    if not path.is_file():
        raise UserError(f"{path}: missing (the few-shot run that draws it has not started)")
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("clips"), list):
        raise UserError(f"{path}: not a few-shot draw (expected {{\"clips\": [...]}})")
    return [str(name) for name in doc["clips"]]


def shots_view(source: EmbeddedTask, drawn: Sequence[str], shots: int, seed: int,
               dest: Path) -> Path:
    """A train/valid/test embeddings folder with train cut to the `drawn` clips, by clip name (in
    the source's row order); valid and test as they are. Rebuilt when the source's embeddings
    or the draw change, else kept (and the probe results inside it with it)."""
    if source.kfold:
        raise ValueError("shots_view takes a train/valid/test folder (a fold_view of k-fold)")
    names = read_clip_names(source, "train")
    missing = set(drawn) - set(names)
    if missing:
        raise UserError(f"{source.path}: train holds no embedding of {len(missing)} drawn "
                        f"clip(s), e.g. {sorted(missing)[0]!r}")
    key = {"source": source.name, "shots": shots, "seed": seed, "sha256": content_key(source),
           "clips": hashlib.sha256("\n".join(sorted(drawn)).encode()).hexdigest()}
    held = dest / VIEW_SOURCE_FILE
    if held.is_file() and json.loads(held.read_text()) == key:
        return dest
    with atomic_dir(dest) as tmp:
        write_json(tmp / METADATA_FILE, {**source.metadata, "shots": shots, "shots_seed": seed})
        shutil.copyfile(source.path / VOCABULARY_FILE, tmp / VOCABULARY_FILE)
        for split in source.splits:
            x, labels = read_split(source, split)
            clips = read_clip_names(source, split)
            if split == "train":
                wanted = set(drawn)
                kept = [i for i, name in enumerate(clips) if name in wanted]
                x, labels, clips = x[kept], [labels[i] for i in kept], [clips[i] for i in kept]
            write_split(tmp, split, x, labels, clips)
        write_json(tmp / VIEW_SOURCE_FILE, key)
    return dest

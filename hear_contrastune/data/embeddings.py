"""heareval's on-disk embeddings layout, written and read with the checks it lacks.

One folder per task, as `heareval.embeddings.runner` writes it and
`heareval.predictions.runner` reads it:

    task_metadata.json, labelvocabulary.csv, <split>.json   copied from the task
    <split>.embeddings.npy              raw, headerless float32 memmap (NOT an np.save file)
    <split>.embedding-dimensions.json   [n, d]
    <split>.target-labels.pkl           a list holding one list of label strings per clip
    <split>.clip-names.json             ours, beside heareval's files: each row's clip as
                                        "<task split>/<filename>", so a view cut by clip
                                        (data.shots) never depends on the rows' order

The `.npy` name is a trap: heareval opens it with `np.memmap(shape=dims)`, so a file written
with `np.save` is read shifted by its header, silently. `read_split` detects that.
"""

import hashlib
import io
import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hear_contrastune.atomic import atomic_dir, atomic_path, write_json
from hear_contrastune.data.hear_format import (
    METADATA_FILE,
    VOCABULARY_FILE,
    HearFolder,
    read_folder,
    roles_for_fold,
    split_file,
)
from hear_contrastune.errors import UserError

NPY_MAGIC = b"\x93NUMPY"
CLIP_NAMES_SUFFIX = ".clip-names.json"
# The per-clip test predictions each probe writes beside the embeddings it scored (the files a
# commit of a compare run keeps). A folder embedded again from the same model and task, or one
# that is a checkout (its bulk files were never committed), carries them over: the records
# results.json reuses point to them.
PROBE_PREDICTIONS = "test.*-predictions.npz"


def write_split(
    out_dir: Path, split: str, embeddings: np.ndarray, labels: list[list[str]],
    clips: list[str] | None = None,
) -> None:
    """Write one split's embeddings and labels, and each row's clip name when known; the
    dimensions file goes last, marking it done."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or len(embeddings) != len(labels):
        raise ValueError(f"{split}: {embeddings.shape} embeddings for {len(labels)} label lists")
    if clips is not None and len(clips) != len(labels):
        raise ValueError(f"{split}: {len(clips)} clip names for {len(labels)} label lists")
    with atomic_path(out_dir / f"{split}.embeddings.npy") as tmp, open(tmp, "wb") as f:
        # raw float32, exactly what np.memmap(mode="r") reads; written through a Python file,
        # whose failed write (a full disk) is an OSError with its errno, unlike ndarray.tofile
        f.write(embeddings.data)
    with atomic_path(out_dir / f"{split}.target-labels.pkl") as tmp:
        tmp.write_bytes(pickle.dumps([list(x) for x in labels]))
    if clips is not None:
        write_json(out_dir / f"{split}{CLIP_NAMES_SUFFIX}", list(clips))
    write_json(out_dir / f"{split}.embedding-dimensions.json", list(embeddings.shape))


def copy_task_files(task_dir: Path, out_dir: Path, splits: list[str]) -> None:
    """Copy the task's metadata, vocabulary and split files, as heareval's runner does."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [METADATA_FILE, VOCABULARY_FILE] + [split_file(s) for s in splits]
    for name in names:
        with atomic_path(out_dir / name) as tmp:
            shutil.copyfile(task_dir / name, tmp)


class _PlainData(pickle.Unpickler):
    """Unpickles lists, strings and numbers only. heareval's label files are pickles, and a
    pickle can name any function to call; refusing every such reference means a crafted file
    is an error here, never code that runs."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refers to {module}.{name}")


def read_labels(path: Path) -> list[list[str]]:
    """A `<split>.target-labels.pkl` (one list of labels per clip), read without executing
    anything, or a one-line error."""
    try:
        labels = _PlainData(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError,
            KeyError, AttributeError) as e:
        raise UserError(f"{path}: not a plain list of label lists ({e}); refused without "
                        "running it") from None
    if not isinstance(labels, list) or not all(isinstance(row, list) for row in labels):
        raise UserError(f"{path}: expected a list holding one list of labels per clip")
    return labels


@dataclass(frozen=True)
class EmbeddedTask(HearFolder):
    """An embeddings folder: the task's metadata and vocabulary beside each split's embeddings."""


def open_embedded_task(path: str | os.PathLike[str]) -> EmbeddedTask:
    """Open an embeddings folder, or say in one line why it is not one."""
    path = Path(path)
    return EmbeddedTask(path, *read_folder(path, "an embeddings directory"))


def read_split(task: EmbeddedTask, split: str) -> tuple[np.ndarray, list[list[str]]]:
    """Read one split's embeddings (float32, [n, d]) and label lists, checking what can go wrong."""
    npy = task.path / f"{split}.embeddings.npy"
    dims_file = task.path / f"{split}.embedding-dimensions.json"
    labels_file = task.path / f"{split}.target-labels.pkl"
    for f in (npy, dims_file, labels_file):
        if not f.is_file():
            raise UserError(f"{f}: missing (split '{split}' was not embedded)")
    n, d = json.loads(dims_file.read_text())
    with open(npy, "rb") as fh:
        if fh.read(len(NPY_MAGIC)) == NPY_MAGIC:
            raise UserError(
                f"{npy}: written with np.save (has an .npy header); heareval reads a raw "
                "float32 memmap, so rows would be shifted. Rewrite it with array.tofile()"
            )
    expected = n * d * 4
    if npy.stat().st_size != expected:
        raise UserError(
            f"{npy}: {npy.stat().st_size} bytes, expected {expected} for [{n}, {d}] float32"
        )
    embeddings = np.fromfile(npy, dtype=np.float32).reshape(n, d)
    if not np.isfinite(embeddings).all():
        bad = int((~np.isfinite(embeddings)).any(axis=1).sum())
        raise UserError(f"{npy}: {bad} of {n} embeddings contain NaN or inf")
    labels = read_labels(labels_file)
    if len(labels) != n:
        raise UserError(f"{labels_file}: {len(labels)} label lists for {n} embeddings")
    vocab = set(task.vocabulary)
    for row in labels:
        unknown = [x for x in row if str(x) not in vocab]
        if unknown:
            raise UserError(f"{labels_file}: label {unknown[0]!r} is not in labelvocabulary.csv")
    return embeddings, [[str(x) for x in row] for row in labels]


def has_clip_names(task: EmbeddedTask, split: str) -> bool:
    """Whether the split records each row's clip (folders embedded before it did not)."""
    return (task.path / f"{split}{CLIP_NAMES_SUFFIX}").is_file()


def read_clip_names(task: EmbeddedTask, split: str) -> list[str]:
    """Each row's clip name, "<task split>/<filename>", in the split's row order."""
    path = task.path / f"{split}{CLIP_NAMES_SUFFIX}"
    if not path.is_file():
        raise UserError(f"{path}: missing (embedded before clip names were recorded); "
                        "embed the task again")
    names = json.loads(path.read_text())
    n = json.loads((task.path / f"{split}.embedding-dimensions.json").read_text())[0]
    if not isinstance(names, list) or len(names) != n:
        raise UserError(f"{path}: expected {n} clip names, one per embedding")
    return [str(name) for name in names]


VIEW_SOURCE_FILE = "view-source.json"


def fold_view(source: EmbeddedTask, fold: str, dest: Path) -> Path:
    """A train/valid/test embeddings folder holding one fold of a k-fold embeddings folder.

    heareval's roles for the fold (test = `fold`, valid = the next fold, train = the rest)
    become splits named train, valid and test, so every probe, heareval's runner included,
    scores exactly that fold on it. Per-fold models need it (each fold's embeddings come from
    its own model); the report averages the folds as heareval does. The view records a hash of
    the embeddings it was cut from and is rebuilt when they change; otherwise it and the probe
    results inside it are kept.
    """
    roles = roles_for_fold(source, fold)
    named = all(has_clip_names(source, s) for splits in roles.values() for s in splits)
    key = {"source": source.name, "fold": fold, "sha256": content_key(source),
           "clip_names": named}
    held = dest / VIEW_SOURCE_FILE
    if held.is_file() and json.loads(held.read_text()) == key:
        return dest
    carry = () if held.is_file() else (PROBE_PREDICTIONS,)  # a checkout's, else stale
    metadata = {**source.metadata, "split_mode": "trainvaltest",
                "splits": ["train", "valid", "test"], "fold": fold}
    metadata.pop("nfolds", None)
    with atomic_dir(dest, carry) as tmp:
        write_json(tmp / METADATA_FILE, metadata)
        shutil.copyfile(source.path / VOCABULARY_FILE, tmp / VOCABULARY_FILE)
        for role, splits in roles.items():
            parts = [read_split(source, split) for split in splits]
            names = ([n for split in splits for n in read_clip_names(source, split)]
                     if named else None)
            write_split(tmp, role, np.concatenate([x for x, _ in parts]),
                        [labels for _, y in parts for labels in y], names)
        write_json(tmp / VIEW_SOURCE_FILE, key)
    return dest


def content_key(task: EmbeddedTask) -> str:
    """A hash of everything a probe reads from an embeddings folder (metadata, vocabulary,
    each split's embeddings and labels): a probe result is reused only for the same key."""
    digest = hashlib.sha256()
    names = [METADATA_FILE, VOCABULARY_FILE] + [
        f"{split}{suffix}" for split in task.splits
        for suffix in (".embeddings.npy", ".embedding-dimensions.json", ".target-labels.pkl")]
    for name in names:
        path = task.path / name
        digest.update(name.encode() + b"\0")
        if path.is_file():
            with open(path, "rb") as f:
                while block := f.read(2**20):
                    digest.update(block)
    return digest.hexdigest()

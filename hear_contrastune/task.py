"""Read a HEAR task directory, as hearpreprocess writes it, checking what heareval assumes.

    task_metadata.json       task_name, embedding_type, prediction_type, split_mode,
                             sample_duration, splits, evaluation, ...
    labelvocabulary.csv      idx,label
    <split>.json             {filename: [label, ...]}
    <sample_rate>/<split>/   the clips, one wav per filename

heareval reads these with bare asserts and KeyErrors; here every mistake is a one-line
`UserError` naming the file, found when the task is opened rather than hours into a run.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from hear_contrastune.embedding_files import read_vocabulary
from hear_contrastune.errors import UserError

# The keys heareval's embedding and prediction runners index without a default.
REQUIRED_KEYS = (
    "task_name",
    "embedding_type",
    "prediction_type",
    "split_mode",
    "sample_duration",
    "splits",
    "evaluation",
)
PREDICTION_TYPES = ("multiclass", "multilabel")
# Splits with more clips than this get a progress bar while loading.
PROGRESS_MIN_CLIPS = 200


@dataclass(frozen=True)
class Task:
    """A HEAR scene task: metadata, vocabulary and each split's labels, all validated."""

    path: Path
    metadata: dict
    vocabulary: list[str]  # labels in index order
    sample_rate: int = 16000
    split_labels: dict[str, dict[str, list[str]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def name(self) -> str:
        return str(self.metadata["task_name"])

    @property
    def prediction_type(self) -> str:
        return str(self.metadata["prediction_type"])

    @property
    def duration(self) -> float:
        return float(self.metadata["sample_duration"])

    @property
    def splits(self) -> list[str]:
        return list(self.metadata["splits"])

    @property
    def num_samples(self) -> int:
        """Samples per clip at this task's sample rate."""
        return round(self.duration * self.sample_rate)

    def examples(self, split: str) -> list[tuple[str, list[str]]]:
        """(filename, labels) pairs of one split, sorted by filename so order never depends
        on how the JSON was written."""
        if split not in self.split_labels:
            raise UserError(f"{self.path}: no split {split!r} (splits: {', '.join(self.splits)})")
        return [(f, list(labels)) for f, labels in sorted(self.split_labels[split].items())]

    def wav_path(self, split: str, filename: str) -> Path:
        return self.path / str(self.sample_rate) / split / filename


def _read_json(path: Path) -> object:
    if not path.is_file():
        raise UserError(f"{path}: missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def _check_metadata(meta_file: Path, metadata: object) -> dict:
    """The metadata as a dict, or a UserError for the first thing heareval would trip on."""
    if not isinstance(metadata, dict):
        raise UserError(f"{meta_file}: expected a JSON object")
    for key in REQUIRED_KEYS:
        if key not in metadata:
            raise UserError(f"{meta_file}: missing key '{key}'")
    if metadata["embedding_type"] != "scene":
        raise UserError(
            f"{meta_file}: embedding_type {metadata['embedding_type']!r}: "
            "only scene tasks are supported"
        )
    if metadata["prediction_type"] not in PREDICTION_TYPES:
        raise UserError(
            f"{meta_file}: prediction_type {metadata['prediction_type']!r}: "
            f"expected one of {', '.join(PREDICTION_TYPES)}"
        )
    duration = metadata["sample_duration"]
    if isinstance(duration, bool) or not isinstance(duration, int | float) or duration <= 0:
        raise UserError(f"{meta_file}: sample_duration {duration!r}: expected seconds > 0")
    splits = metadata["splits"]
    if (
        not isinstance(splits, list)
        or not splits
        or not all(isinstance(s, str) and s for s in splits)
    ):
        raise UserError(f"{meta_file}: splits {splits!r}: expected a list of split names")
    if len(set(splits)) != len(splits):
        raise UserError(f"{meta_file}: splits {splits!r} repeat a name")
    return metadata


def _read_split(path: Path, vocab: set[str], multiclass: bool) -> dict[str, list[str]]:
    """One split's {filename: labels}; labels are strings, as heareval compares them."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object of filename -> label list")
    out: dict[str, list[str]] = {}
    for filename, labels in data.items():
        if not isinstance(labels, list):
            raise UserError(f"{path}: {filename}: expected a list of labels, got {labels!r}")
        labels = [str(x) for x in labels]
        unknown = [x for x in labels if x not in vocab]
        if unknown:
            raise UserError(
                f"{path}: {filename}: label {unknown[0]!r} is not in labelvocabulary.csv"
            )
        if multiclass and len(labels) != 1:
            raise UserError(
                f"{path}: {filename}: {len(labels)} labels in a multiclass task (need exactly 1)"
            )
        out[filename] = labels
    return out


def load_task(path: str | os.PathLike[str], sample_rate: int = 16000) -> Task:
    """Open a HEAR task directory, or say in one line what is wrong with it."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such task directory")
    meta_file = path / "task_metadata.json"
    if not meta_file.is_file():
        raise UserError(f"{meta_file}: missing (not a HEAR task directory)")
    metadata = _check_metadata(meta_file, _read_json(meta_file))
    vocab_file = path / "labelvocabulary.csv"
    if not vocab_file.is_file():
        raise UserError(f"{vocab_file}: missing")
    try:
        vocabulary = read_vocabulary(vocab_file)
    except UnicodeDecodeError:
        raise UserError(f"{vocab_file}: not a text file") from None
    if not vocabulary:
        raise UserError(f"{vocab_file}: no labels")
    if len(set(vocabulary)) != len(vocabulary):
        dup = next(x for x in vocabulary if vocabulary.count(x) > 1)
        raise UserError(f"{vocab_file}: label {dup!r} appears twice")
    audio_root = path / str(sample_rate)
    if not audio_root.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.is_dir() and p.name.isdigit())
        raise UserError(
            f"{audio_root}: missing (no audio at {sample_rate} Hz; "
            f"found: {', '.join(found) or 'none'})"
        )
    multiclass = metadata["prediction_type"] == "multiclass"
    split_labels = {
        split: _read_split(path / f"{split}.json", set(vocabulary), multiclass)
        for split in metadata["splits"]
    }
    return Task(path, metadata, vocabulary, sample_rate, split_labels)


def read_wav(
    path: str | os.PathLike[str], sample_rate: int, num_samples: int | None = None
) -> np.ndarray:
    """A mono float32 clip; zero-padded or trimmed to `num_samples` when given, so a batch of
    clips stacks even when a tool wrote one a sample short."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: missing")
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise UserError(f"{path}: cannot read audio ({' '.join(str(e).split())})") from None
    if sr != sample_rate:
        raise UserError(f"{path}: {sr} Hz, expected {sample_rate} Hz")
    if audio.shape[1] != 1:
        raise UserError(f"{path}: {audio.shape[1]} channels, expected mono")
    audio = audio[:, 0]
    if num_samples is not None:
        if len(audio) > num_samples:
            audio = audio[:num_samples]
        elif len(audio) < num_samples:
            audio = np.pad(audio, (0, num_samples - len(audio)))
    return np.ascontiguousarray(audio, dtype=np.float32)


def load_split_audio(task: Task, split: str) -> tuple[np.ndarray, list[list[str]]]:
    """All clips of a split as one [N, T] float32 array (T = sample_duration * sample_rate),
    in `task.examples(split)` order, with their label lists."""
    examples = task.examples(split)
    audio = np.zeros((len(examples), task.num_samples), dtype=np.float32)
    bar = tqdm(
        examples,
        desc=f"{task.name}/{split}",
        unit="clip",
        disable=len(examples) < PROGRESS_MIN_CLIPS,
    )
    for i, (filename, _) in enumerate(bar):
        audio[i] = read_wav(task.wav_path(split, filename), task.sample_rate, task.num_samples)
    return audio, [labels for _, labels in examples]

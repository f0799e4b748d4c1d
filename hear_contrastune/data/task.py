"""A HEAR scene task as hearpreprocess writes it, opened and checked (see data.hear_format).

    <task>/task_metadata.json, labelvocabulary.csv, <split>.json
    <task>/<sample_rate>/<split>/<filename>     the clips, one wav per filename
"""

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from hear_contrastune.data.hear_format import HearFolder, read_folder, read_json, split_file
from hear_contrastune.errors import UserError

SAMPLE_RATE = 16000  # the rate every built-in backbone takes, and hearpreprocess writes


@dataclass(frozen=True)
class Task(HearFolder):
    """A HEAR scene task: metadata, vocabulary and each split's labels, all validated."""

    sample_rate: int = SAMPLE_RATE  # the rate clips are delivered at (the backbone's)
    split_labels: dict[str, dict[str, list[str]]] = field(
        default_factory=dict, repr=False, compare=False
    )
    audio_rate: int = SAMPLE_RATE  # the rate of the folder read; resampled when it differs

    @property
    def audio_note(self) -> str:
        """Which audio folder feeds this task, and whether it is resampled: for the log."""
        folder = self.path / str(self.audio_rate)
        if self.audio_rate == self.sample_rate:
            return f"audio: {folder} ({self.sample_rate} Hz)"
        return (f"audio: {folder} resampled on the fly to {self.sample_rate} Hz "
                f"(no {self.sample_rate}/ folder)")

    @property
    def num_samples(self) -> int | None:
        """Samples per clip at this task's sample rate; None when clips vary in length."""
        return None if self.duration is None else round(self.duration * self.sample_rate)

    def examples(self, split: str) -> list[tuple[str, list[str]]]:
        """(filename, labels) pairs of one split, sorted by filename so order never depends
        on how the JSON was written."""
        if split not in self.split_labels:
            raise UserError(f"{self.path}: no split {split!r} (splits: {', '.join(self.splits)})")
        return [(f, list(labels)) for f, labels in sorted(self.split_labels[split].items())]

    def content_key(self) -> str:
        """sha256 of what the task's results depend on: metadata, vocabulary, every split's
        labels, and the bytes of each listed clip in every sample-rate folder the task has.

        The bytes, not sizes and mtimes: a task rebuilt on another machine (eval_tasks renders
        the same bytes) or copied keeps its key, so a tuning run, a search or a comparison
        resumes there from its committed outputs; one whose audio changed is refused. Reading
        the clips costs about a second per 500 MB, once per run."""
        digest = hashlib.sha256(json.dumps(
            {"metadata": self.metadata, "vocabulary": self.vocabulary,
             "labels": self.split_labels}, sort_keys=True).encode())
        rates = sorted(p for p in self.path.iterdir() if p.is_dir() and p.name.isdigit())
        for rate in rates:
            for split in self.splits:
                for filename, _ in self.examples(split):
                    path = rate / split / filename
                    digest.update(f"\0{rate.name}/{split}/{filename}\0".encode())
                    if path.is_file():
                        with open(path, "rb") as f:
                            while block := f.read(2**20):
                                digest.update(block)
        return f"sha256:{digest.hexdigest()}"

    def wav_path(self, split: str, filename: str) -> Path:
        return self.path / str(self.audio_rate) / split / filename


def _read_split(path: Path, vocab: set[str], multiclass: bool) -> dict[str, list[str]]:
    """One split's {filename: labels}; labels are strings, as heareval compares them."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object of filename -> label list")
    if not data:
        raise UserError(f"{path}: lists no clips (every split needs at least one)")
    out: dict[str, list[str]] = {}
    for filename, labels in data.items():
        check_clip_name(path, filename)
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


def check_clip_name(split_path: Path, filename: str) -> None:
    """Refuse a clip name that leaves its split's audio folder: an absolute path or a '..'
    would open any file on the machine, and '../valid/x.wav' in train.json would leak valid
    clips into training. (A symlink inside the folder may point anywhere: datasets do that.)"""
    parts = PurePosixPath(filename).parts
    if (not filename or "\0" in filename or PurePosixPath(filename).is_absolute()
            or ".." in parts or not parts or parts == (".",)):
        split = split_path.stem
        raise UserError(f"{split_path}: clip {filename!r} is not a file inside the split's audio "
                        f"folder (<rate>/{split}/): no absolute paths or '..'")


def load_task(path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE) -> Task:
    """Open a HEAR task directory, or say in one line what is wrong with it."""
    path = Path(path)
    metadata, vocabulary = read_folder(path, "a HEAR task directory")
    audio_rate = pick_audio_rate(path, sample_rate)
    multiclass = metadata["prediction_type"] == "multiclass"
    split_labels = {
        split: _read_split(path / split_file(split), set(vocabulary), multiclass)
        for split in metadata["splits"]
    }
    return Task(path, metadata, vocabulary, sample_rate, split_labels, audio_rate)


def pick_audio_rate(path: Path, sample_rate: int) -> int:
    """The audio folder to read for clips at `sample_rate`: `<sample_rate>/` when the task has
    it (as heareval reads it), else the lowest rate above it, else the highest below (least
    information lost when resampling). hearpreprocess writes 16, 22.05, 44.1 and 48 kHz."""
    rates = sorted(int(p.name) for p in path.iterdir()
                   if p.is_dir() and p.name.isdigit() and int(p.name) > 0)
    if not rates:
        raise UserError(f"{path}: no audio folder (expected e.g. {path / str(sample_rate)}/)")
    if sample_rate in rates:
        return sample_rate
    above = [r for r in rates if r > sample_rate]
    return above[0] if above else rates[-1]

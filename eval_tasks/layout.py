"""Write a task in exactly hearpreprocess's layout, all or nothing.

    <task>/task_metadata.json
    <task>/labelvocabulary.csv          idx,label
    <task>/<split>.json                 {filename: [label, ...]}
    <task>/16000/<split>/<filename>     16 kHz mono 16-bit PCM, exactly sample_duration long;
                                        each at its own length where sample_duration is null

The whole task is written in a temporary folder beside its final path and renamed into place
at the end, so a killed build leaves nothing that looks like a task. A folder already there is
kept only if its metadata (which records size, seed and builder version) is exactly what the
build would write and every clip it lists exists; anything else is rebuilt.

What a clip sounds like is up to the plan's renderer: the soundfont by default, espeak-ng for
espeak-word, the user's own files for `importer`. The layout, validation and atomic write are
the same for all of them.

A task whose clips vary in length is written as hearpreprocess writes FSD50K: sample_duration
null in the metadata, every clip planned with its own `seconds` and rendered at that length.
"""

import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torchaudio
from tqdm.auto import tqdm

from eval_tasks.soundfont import SAMPLE_RATE, Note, Phrase, Renderer
from hear_contrastune.atomic import atomic_dir
from hear_contrastune.data.hear_format import vocabulary_csv, vocabulary_problem

# Clips handed to the render threads at a time, so finished audio never piles up in memory.
RENDER_CHUNK = 64
# Threads for renderers that wait on a subprocess or a decoder (espeak-ng, imported files).
RENDER_THREADS = min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class Clip:
    """One clip to render: where it goes, its labels, what its renderer plays (soundfont
    `Note`s or `Phrase`s; for other renderers their own description, e.g. one espeak utterance
    or one source file), its peak level in dBFS (None: the renderer keeps the source's level)
    and, only in a task whose sample_duration is null, its own length in seconds."""

    split: str
    filename: str
    labels: tuple[str, ...]
    sounds: tuple[Any, ...]  # what the renderer plays: Notes, Phrases, an utterance, a file
    peak_db: float | None
    seconds: float | None = None


# Renders one clip to mono float32 at SAMPLE_RATE, exactly `num_samples` long (the task's
# length, or the clip's own where sample_duration is null).
ClipRenderer = Callable[[Clip, int], np.ndarray]


def soundfont_renderer() -> ClipRenderer:
    """The default: each clip's `Note`s (each rendered apart) or `Phrase`s (each played in
    time on one channel) through one tinysoundfont synth."""
    renderer = Renderer(SAMPLE_RATE)

    def render(clip: Clip, num_samples: int) -> np.ndarray:
        if clip.peak_db is None:
            raise ValueError(f"{clip.filename}: soundfont clips need a peak level")
        if all(isinstance(p, Phrase) for p in clip.sounds):
            phrases: tuple[Phrase, ...] = clip.sounds
            return renderer.mix(phrases, num_samples, clip.peak_db)
        notes: tuple[Note, ...] = clip.sounds
        return renderer.clip(notes, num_samples, clip.peak_db)

    return render


@dataclass(frozen=True)
class TaskPlan:
    """Everything a build writes, decided before any audio is rendered. `renderer` is called
    once per build (so a missing tool fails before anything is written) and returns the
    function that turns each clip into audio."""

    metadata: dict
    vocabulary: list[str]
    clips: list[Clip]
    renderer: Callable[[], ClipRenderer] = soundfont_renderer
    render_threads: int = 1  # > 1 only for renderers that are thread-safe (not the soundfont)
    extra_files: tuple[tuple[str, str], ...] = ()  # (name, text) written beside the metadata

    @property
    def name(self) -> str:
        return str(self.metadata["task_name"])


@lru_cache(maxsize=16)
def _resampler(orig_rate: int) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(orig_rate, SAMPLE_RATE)


def to_task_rate(audio: np.ndarray, orig_rate: int) -> np.ndarray:
    """Mono float32 audio resampled to SAMPLE_RATE with torchaudio's windowed sinc (the
    filter is built once per source rate: building it costs more than applying it)."""
    if orig_rate == SAMPLE_RATE:
        return np.asarray(audio, dtype=np.float32)
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    with torch.no_grad():
        return _resampler(orig_rate)(x).numpy()


def task_metadata(
    name: str,
    *,
    version: str,
    prediction_type: str,
    evaluation: list[str],
    splits: list[str],
    sample_duration: float | None,
    size: str,
    seed: int,
    split_mode: str | None = None,
    **extra: object,
) -> dict:
    """task_metadata.json as hearpreprocess writes it; `mode` and `seed` record the build.
    split_mode defaults to new_split_kfold for fold splits, else trainvaltest; pass
    presplit_kfold for folds that are part of the dataset (ESC-50's)."""
    if split_mode is None:
        split_mode = "new_split_kfold" if splits[0].startswith("fold") else "trainvaltest"
    kfold = split_mode != "trainvaltest"
    meta: dict = {
        "task_name": name,
        "version": version,
        "embedding_type": "scene",
        "prediction_type": prediction_type,
        "split_mode": split_mode,
        "sample_duration": sample_duration,
        "evaluation": evaluation,
        "download_urls": [],
        "default_mode": "full",
        "mode": size,
        "sample_rate": SAMPLE_RATE,
        "splits": splits,
    }
    if kfold:
        meta["nfolds"] = len(splits)
    meta["seed"] = seed
    meta.update(extra)
    return meta


def split_files(plan: TaskPlan) -> dict[str, dict[str, list[str]]]:
    """Each split's {filename: labels}, as written to <split>.json."""
    out: dict[str, dict[str, list[str]]] = {s: {} for s in plan.metadata["splits"]}
    for c in plan.clips:
        out[c.split][c.filename] = list(c.labels)
    return out


def _validate(plan: TaskPlan) -> None:
    """Catch a builder bug before rendering, not in heareval hours later."""
    splits = plan.metadata["splits"]
    vocab = set(plan.vocabulary)
    if len(vocab) != len(plan.vocabulary):
        raise ValueError(f"{plan.name}: duplicate labels in the vocabulary")
    problem = vocabulary_problem(plan.vocabulary)
    if problem:
        raise ValueError(f"{plan.name}: {problem}")
    varlen = plan.metadata["sample_duration"] is None
    seen: set[tuple[str, str]] = set()
    for c in plan.clips:
        if varlen != (c.seconds is not None):
            need = "its own length (sample_duration is null)" if varlen else "no length of its own"
            raise ValueError(f"{plan.name}: {c.filename} needs {need}")
        if varlen and not round(c.seconds * SAMPLE_RATE) > 0:
            raise ValueError(f"{plan.name}: {c.filename} is {c.seconds} s long")
        if c.split not in splits:
            raise ValueError(f"{plan.name}: clip {c.filename} in unknown split {c.split}")
        if (c.split, c.filename) in seen:
            raise ValueError(f"{plan.name}: {c.split}/{c.filename} planned twice")
        seen.add((c.split, c.filename))
        if not set(c.labels) <= vocab:
            raise ValueError(f"{plan.name}: {c.filename} has labels outside the vocabulary")
        if plan.metadata["prediction_type"] == "multiclass" and len(c.labels) != 1:
            raise ValueError(f"{plan.name}: {c.filename} needs exactly one label")
    empty = [s for s in splits if not any(c.split == s for c in plan.clips)]
    if empty:
        raise ValueError(f"{plan.name}: no clips in split(s) {empty}")


def is_complete(task_dir: Path, plan: TaskPlan) -> bool:
    """True if `task_dir` holds exactly this plan's build: same metadata, every file present."""
    meta_file = task_dir / "task_metadata.json"
    try:
        if json.loads(meta_file.read_text()) != plan.metadata:
            return False
    except (OSError, ValueError):
        return False
    if not (task_dir / "labelvocabulary.csv").is_file():
        return False
    for split, files in split_files(plan).items():
        if not (task_dir / f"{split}.json").is_file():
            return False
        audio_dir = task_dir / str(SAMPLE_RATE) / split
        if not all((audio_dir / f).is_file() for f in files):
            return False
    return True


def clip_samples(clip: Clip, sample_duration: float | None) -> int:
    """A clip's length in samples: the task's, or its own where sample_duration is null."""
    seconds = clip.seconds if sample_duration is None else sample_duration
    return round(seconds * SAMPLE_RATE)


def _rendered(plan: TaskPlan, render: ClipRenderer) -> Iterator[tuple[Clip, np.ndarray]]:
    """(clip, audio) in plan order, rendered `plan.render_threads` at a time."""
    duration = plan.metadata["sample_duration"]

    def one(c: Clip) -> np.ndarray:
        return render(c, clip_samples(c, duration))

    if plan.render_threads <= 1:
        for c in plan.clips:
            yield c, one(c)
        return
    with ThreadPoolExecutor(plan.render_threads) as pool:
        for i in range(0, len(plan.clips), RENDER_CHUNK):
            chunk = plan.clips[i : i + RENDER_CHUNK]
            yield from zip(chunk, pool.map(one, chunk), strict=True)


def write_task(task_dir: Path, plan: TaskPlan) -> Path:
    """Render every clip and write the task at `task_dir`, replacing whatever was there."""
    _validate(plan)
    render = plan.renderer()
    with atomic_dir(task_dir) as tmp:
        for split in plan.metadata["splits"]:
            (tmp / str(SAMPLE_RATE) / split).mkdir(parents=True)
        rendered = tqdm(
            _rendered(plan, render),
            desc=f"render {plan.name}", unit="clip", total=len(plan.clips),
        )
        for c, audio in rendered:
            num_samples = clip_samples(c, plan.metadata["sample_duration"])
            if audio.shape != (num_samples,):
                raise ValueError(f"{c.filename}: rendered {audio.shape}, expected {num_samples}")
            path = tmp / str(SAMPLE_RATE) / c.split / c.filename
            sf.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        for name, text in plan.extra_files:
            (tmp / name).write_text(text)
        (tmp / "labelvocabulary.csv").write_text(vocabulary_csv(plan.vocabulary))
        for split, files in split_files(plan).items():
            text = json.dumps(dict(sorted(files.items())), indent=2)
            (tmp / f"{split}.json").write_text(text + "\n")
        (tmp / "task_metadata.json").write_text(json.dumps(plan.metadata, indent=2) + "\n")
    return task_dir

"""Reading a task's clips: one wav, or a whole split as one array."""

import os
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from hear_contrastune.data.task import Task
from hear_contrastune.errors import UserError

# Splits with more clips than this get a progress bar while loading.
PROGRESS_MIN_CLIPS = 200


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

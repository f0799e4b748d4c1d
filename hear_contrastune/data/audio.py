"""Reading one clip from a task: at the rate the backbone takes, whole or as a crop.

Only the frames a crop needs are decoded, so a 30 s clip cropped to 4 s costs 4 s of decoding.
When the task has no folder at the backbone's rate, the clip is read from the folder
`data.task.pick_audio_rate` chose and resampled with torchaudio.
"""

import math
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from hear_contrastune.data.task import Task
from hear_contrastune.errors import UserError


def _open(path: Path) -> sf.SoundFile:
    if not path.is_file():
        raise UserError(f"{path}: missing")
    try:
        return sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise UserError(f"{path}: cannot read audio ({' '.join(str(e).split())})") from None


def _check(path: Path, f: sf.SoundFile, sample_rate: int) -> None:
    if f.samplerate != sample_rate:
        raise UserError(f"{path}: {f.samplerate} Hz, expected {sample_rate} Hz")
    if f.channels != 1:
        raise UserError(f"{path}: {f.channels} channels, expected mono")


def fit_length(audio: np.ndarray, num_samples: int) -> np.ndarray:
    """Trim or zero-pad the end to `num_samples`, so clips a sample off still stack."""
    if len(audio) > num_samples:
        return audio[:num_samples]
    return np.pad(audio, (0, num_samples - len(audio))) if len(audio) < num_samples else audio


def read_wav(
    path: str | os.PathLike[str], sample_rate: int, num_samples: int | None = None
) -> np.ndarray:
    """A whole mono float32 clip at exactly `sample_rate`; fitted to `num_samples` when given."""
    path = Path(path)
    with _open(path) as f:
        _check(path, f, sample_rate)
        audio = f.read(dtype="float32", always_2d=True)[:, 0]
    if num_samples is not None:
        audio = fit_length(audio, num_samples)
    return np.ascontiguousarray(audio, dtype=np.float32)


@lru_cache(maxsize=8)
def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(orig, new)  # its kernel is built once per rate pair


def resampled_length(frames: int, orig: int, new: int) -> int:
    """torchaudio's output length for `frames` resampled from `orig` to `new` Hz."""
    g = math.gcd(orig, new)
    return math.ceil(frames * (new // g) / (orig // g))


def clip_length(task: Task, split: str, filename: str) -> int:
    """A clip's length in samples at the task's delivered rate (reads the header only)."""
    if task.num_samples is not None:
        return task.num_samples
    path = task.wav_path(split, filename)
    with _open(path) as f:
        return resampled_length(f.frames, task.audio_rate, task.sample_rate)


def read_clip(task: Task, split: str, filename: str, num_samples: int | None = None,
              rng: np.random.Generator | None = None) -> np.ndarray:
    """One clip at `task.sample_rate`, mono float32.

    `num_samples` None: the whole clip (fitted to the task's sample_duration when it has one).
    Otherwise exactly `num_samples`: a shorter clip is zero-padded at the end; a longer one is
    cropped at a position drawn from `rng` (its start when `rng` is None).
    """
    path = task.wav_path(split, filename)
    rate, file_rate = task.sample_rate, task.audio_rate
    want = task.num_samples if num_samples is None else num_samples
    with _open(path) as f:
        _check(path, f, file_rate)
        total = resampled_length(f.frames, file_rate, rate)
        start = 0
        if want is not None and total > want and num_samples is not None and rng is not None:
            start = int(rng.integers(0, total - want + 1))
        if want is None:
            first, frames = 0, f.frames
        else:  # the file frames covering [start, start + want) at the delivered rate, +1 margin
            first = start * file_rate // rate
            frames = min(f.frames - first, math.ceil(want * file_rate / rate) + 1)
        f.seek(first)
        audio = f.read(frames, dtype="float32", always_2d=True)[:, 0]
    if file_rate != rate:
        with torch.no_grad():
            audio = _resampler(file_rate, rate)(torch.from_numpy(audio)).numpy()
    if not np.isfinite(audio).all():
        raise UserError(f"{path}: holds NaN or inf samples")
    if want is not None:
        audio = fit_length(audio, want)
    return np.ascontiguousarray(audio, dtype=np.float32)

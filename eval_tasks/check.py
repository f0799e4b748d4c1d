"""Check a HEAR task directory, ours or hearpreprocess's, before hours go into embedding it.

Everything heareval and the tuner assume about the audio is verified file by file: each clip
a split lists exists, is mono at the task's rate, exactly sample_duration long (any length but
empty where sample_duration is null, as in FSD50K) and neither silent nor holding NaN or inf.
The metadata, vocabulary and labels are checked by `hear_contrastune.data.task.load_task`.
"""

import os
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from hear_contrastune.data.task import load_task
from hear_contrastune.errors import UserError

# A clip whose peak stays below -60 dBFS is taken for silence (16-bit LSB is about -90 dBFS).
SILENCE_PEAK = 1e-3


def _check_wav(path: Path, sample_rate: int, num_samples: int | None) -> str | None:
    """The one thing wrong with one clip, or None. `num_samples` None: any length will do."""
    if not path.is_file():
        return f"{path}: missing"
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        return f"{path}: cannot read audio ({' '.join(str(e).split())})"
    if info.samplerate != sample_rate:
        return f"{path}: {info.samplerate} Hz, expected {sample_rate} Hz"
    if info.channels != 1:
        return f"{path}: {info.channels} channels, expected mono"
    if info.frames == 0:
        return f"{path}: empty (no samples)"
    if num_samples is not None and info.frames != num_samples:
        return f"{path}: {info.frames} samples, expected {num_samples}"
    audio, _ = sf.read(str(path), dtype="float32")
    if not np.isfinite(audio).all():
        return f"{path}: NaN or infinite samples"
    peak = float(np.abs(audio).max())
    if peak < SILENCE_PEAK:
        return f"{path}: silent (peak {20 * np.log10(peak + 1e-12):.0f} dBFS)"
    return None


def check_task(path: str | os.PathLike[str], sample_rate: int = 16000) -> list[str]:
    """Every problem found in the task at `path`, one line each; empty if it is sound.

    A problem with the metadata, vocabulary or split files stops the check there (it is the
    single line `load_task` reports); clip problems are all listed, as are wavs in a split's
    folder that its JSON does not list.
    """
    try:
        task = load_task(path, sample_rate)
    except UserError as e:
        return [str(e)]
    problems: list[str] = []
    total = sum(len(task.examples(s)) for s in task.splits)
    # clips are checked in the folder load_task reads, at that folder's rate
    length = None if task.duration is None else round(task.duration * task.audio_rate)
    with tqdm(total=total, desc=f"check {task.name}", unit="clip", disable=total < 200) as bar:
        for split in task.splits:
            listed = set()
            for filename, _ in task.examples(split):
                listed.add(filename)
                problem = _check_wav(task.wav_path(split, filename), task.audio_rate, length)
                if problem:
                    problems.append(problem)
                bar.update()
            audio_dir = task.path / str(task.audio_rate) / split
            if audio_dir.is_dir():
                for extra in sorted(p.name for p in audio_dir.iterdir() if p.name not in listed):
                    problems.append(f"{audio_dir / extra}: not listed in {split}.json")
    return problems

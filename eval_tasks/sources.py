"""Reading a user's sources for `tasks import`: which files are clips of which labels (a folder
of class folders, or a `path,labels` CSV), and whether each one can be used (read, decoded,
finite, not silent), with the reason when not."""

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from eval_tasks.check import SILENCE_PEAK
from eval_tasks.layout import to_task_rate
from eval_tasks.soundfont import SAMPLE_RATE
from hear_contrastune.errors import UserError

LABEL_SEPARATOR = ";"
# A little above check_task's silence threshold, so 16-bit rounding cannot push a kept clip
# below it.
SILENT_PEAK = SILENCE_PEAK * 1.01


@dataclass(frozen=True)
class SourceFile:
    """One clip of the source: its file, its labels and how it is named in sources.csv."""

    path: Path
    labels: tuple[str, ...]
    shown: str  # relative to SOURCE (or the CSV's folder) where possible


def shown_path(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def scan_folder(source: Path) -> tuple[list[SourceFile], list[tuple[str, str]]]:
    """Files of each class folder; files outside one, and hidden folders, are skipped."""
    files: list[SourceFile] = []
    skipped: list[tuple[str, str]] = []
    for entry in sorted(source.iterdir()):
        if entry.is_file():
            skipped.append((entry.name, "not in a class folder"))
        elif entry.name.startswith("."):
            skipped.append((entry.name + "/", "hidden folder, not a class"))
        elif entry.is_dir():
            label = entry.name.strip()
            for path in sorted(p for p in entry.rglob("*") if p.is_file()):
                files.append(SourceFile(path, (label,), shown_path(path, source)))
    return files, skipped


def scan_csv(source: Path) -> tuple[list[SourceFile], list[tuple[str, str]]]:
    """Rows of `path,labels`; a missing file is skipped, a malformed row is an error."""
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{source}: cannot read ({e})") from None
    root = source.parent
    files: list[SourceFile] = []
    skipped: list[tuple[str, str]] = []
    seen: dict[Path, int] = {}
    for line, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not any(cell.strip() for cell in row):
            continue
        if line == 1 and row[0].strip().lower() in ("path", "file", "filename"):
            continue
        if len(row) != 2:
            raise UserError(
                f"{source}:{line}: expected 2 columns 'path,labels' (labels separated by "
                f"'{LABEL_SEPARATOR}'; quote a path that holds a comma), got {len(row)}"
            )
        name, cell = row[0].strip(), row[1]
        labels = tuple(
            dict.fromkeys(x.strip() for x in cell.split(LABEL_SEPARATOR) if x.strip())
        )
        if not name or not labels:
            raise UserError(f"{source}:{line}: needs a path and at least one label")
        path = Path(name) if Path(name).is_absolute() else root / name
        key = path.resolve()
        if key in seen:
            raise UserError(f"{source}:{line}: {name} is already listed on line {seen[key]}")
        seen[key] = line
        if not path.is_file():
            skipped.append((name, "missing"))
            continue
        files.append(SourceFile(path, labels, name))
    return files, skipped


def load_clip(path: Path, num_samples: int | None = None) -> np.ndarray:
    """A source file as mono float32 at SAMPLE_RATE, cut or zero-padded to `num_samples`
    (None: at its own length)."""
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    x = to_task_rate(audio.mean(axis=1), rate)
    if num_samples is None:
        return x
    if len(x) >= num_samples:
        return x[:num_samples]
    return np.pad(x, (0, num_samples - len(x)))


def read_error(e: Exception) -> str:
    """soundfile's message on one line, without the path it repeats."""
    return re.sub(r"^Error opening '.*?': ", "", " ".join(str(e).split()))


def probe_file(path: Path) -> tuple[float | None, str | None]:
    """(seconds, None) for a file soundfile can open and that has samples, else (None, why)."""
    try:
        if path.stat().st_size == 0:
            return None, "empty file (0 bytes)"
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        return None, f"cannot read audio ({read_error(e)})"
    if info.frames <= 0 or info.samplerate <= 0:
        return None, "empty (no samples)"
    return info.frames / info.samplerate, None


def decode_file(path: Path, num_samples: int | None) -> tuple[int | None, str | None]:
    """(decoded length in samples, None), or (None, why the clip cannot be used).
    `num_samples`: what will be kept of it (None: all of it)."""
    try:
        full = load_clip(path)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as e:
        return None, f"cannot decode ({read_error(e)})"
    if len(full) == 0:
        return None, "empty (no samples)"
    if not np.isfinite(full).all():  # 16-bit PCM would turn them into full-scale clicks
        return None, "cannot decode (NaN or infinite samples)"
    if float(np.abs(full[:num_samples]).max()) < SILENT_PEAK:
        where = "" if num_samples is None else f" in its first {num_samples / SAMPLE_RATE:g} s"
        return None, f"silent{where} (peak below -60 dBFS)"
    return len(full), None

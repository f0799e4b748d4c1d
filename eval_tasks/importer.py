"""Turn a user's own labelled audio into a HEAR task, so it can be tuned and probed like ours.

SOURCE is either
  - a folder with one subfolder per class; every file under a class folder (at any depth) is
    a clip of that class: a multiclass task; or
  - a CSV of `path,labels` rows (a header row starting `path` is optional). Labels are
    separated by ';' (`dog;bark`); a row with several labels makes the task multilabel.
    Relative paths resolve against the CSV's folder.

Any format soundfile reads (wav, flac, ogg, aiff, ...) is accepted; each clip is mixed down
to mono, resampled to 16 kHz with torchaudio and cut or zero-padded (at the end) to one
duration, by default the median clip length rounded to 0.1 s; or, with duration KEEP_LENGTH,
kept at its own length (sample_duration null, as hearpreprocess writes FSD50K). Levels are
kept as they are.

Splits are stratified: train/valid/test per class (each class in each split), or k folds
(split_mode new_split_kfold) dealt round-robin per class; multilabel tasks use iterative
stratification (`splits.stratify_multilabel`). Nothing is dropped silently: files that cannot
be read (or hold NaN or infinite samples), are empty or are silent over the kept duration are
listed in the returned summary with the reason, and so are classes with fewer clips than there
are splits (they cannot reach every split, so they are left out of the task, vocabulary
included).

Output files are named `<index>_<source name, made safe>.wav`, unique even when sources share
a name; `sources.csv` in the task folder maps each back to its source file.
"""

import csv
import io
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eval_tasks.layout import (
    RENDER_THREADS,
    Clip,
    ClipRenderer,
    TaskPlan,
    task_metadata,
    write_task,
)
from eval_tasks.soundfont import SAMPLE_RATE
from eval_tasks.sources import (
    SourceFile,
    decode_file,
    load_clip,
    probe_file,
    scan_csv,
    scan_folder,
)
from eval_tasks.splits import deal_round_robin, split_counts, stratify_multilabel
from hear_contrastune.data.hear_format import vocabulary_problem
from hear_contrastune.errors import UserError

VERSION = "import-v1"
SPLIT_MODES = ("trainvaltest", "kfold")
DEFAULT_FOLDS = 5
# --duration none: every clip keeps its own length (sample_duration null, as FSD50K)
KEEP_LENGTH = "none"
DEFAULT_VALID_FRACTION = 0.15
DEFAULT_TEST_FRACTION = 0.15
EVALUATION = {"multiclass": ["top1_acc"], "multilabel": ["mAP", "d_prime", "aucroc"]}
MAX_FOLDS = 99  # fold names are fold00..fold98; heareval sorts them as strings
SHOW_SKIPPED = 5  # skipped files named in the summary; the rest are counted


@dataclass
class ImportSummary:
    """What an import wrote and what it left out, for the CLI to print."""

    task_dir: Path
    prediction_type: str
    split_mode: str
    sample_duration: float | None  # None: every clip kept its own length
    duration_source: str  # "median", "given" or "kept"
    clips: dict[str, int]  # per split, in split order
    classes: list[str]
    shortest: float  # seconds, of the clips written
    longest: float
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    dropped_classes: dict[str, int] = field(default_factory=dict)  # label -> its clips
    unlabelled_clips: int = 0  # multilabel: clips whose every label was dropped
    missing_from_splits: dict[str, list[str]] = field(default_factory=dict)  # label -> splits
    trimmed: int = 0
    padded: int = 0

    def __str__(self) -> str:
        if self.sample_duration is None:
            length = (f"clips kept at their own length, {self.shortest:g}-{self.longest:g} s "
                      "(sample_duration null)")
        else:
            how = "median clip length" if self.duration_source == "median" else "as given"
            length = f"{self.sample_duration:g} s clips ({how})"
        lines = [
            f"imported {sum(self.clips.values())} clips into {self.task_dir}: "
            f"{self.prediction_type}, {len(self.classes)} classes, {self.split_mode}, {length}",
            "  clips: " + ", ".join(f"{s} {n}" for s, n in self.clips.items()),
            "  classes: " + _shorten(self.classes, 12),
        ]
        if self.trimmed or self.padded:
            lines.append(
                f"  {self.trimmed} clips cut to {self.sample_duration:g} s, "
                f"{self.padded} padded with silence"
            )
        if self.skipped:
            reasons = Counter(reason.split(" (")[0] for _, reason in self.skipped)
            lines.append(
                f"  skipped {_count(len(self.skipped), 'file', 'files')}: "
                + ", ".join(f"{n} {r}" for r, n in reasons.most_common())
            )
            lines += [f"    {name}: {reason}" for name, reason in self.skipped[:SHOW_SKIPPED]]
            if len(self.skipped) > SHOW_SKIPPED:
                lines.append(f"    ... and {len(self.skipped) - SHOW_SKIPPED} more")
        if self.dropped_classes:
            lines.append(
                f"  dropped {_count(len(self.dropped_classes), 'class', 'classes')} with fewer "
                f"than {len(self.clips)} clips (one per split needed), clips in brackets: "
                + _shorten([f"{c} ({k})" for c, k in self.dropped_classes.items()], 12)
            )
        if self.unlabelled_clips:
            lines.append(
                f"  dropped {_count(self.unlabelled_clips, 'clip', 'clips')} left with no label"
            )
        for label, splits in self.missing_from_splits.items():
            lines.append(f"  warning: label {label!r} has no clip in {', '.join(splits)}")
        return "\n".join(lines)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _shorten(items: Sequence[str], limit: int) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _safe_stem(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).strip("._-")
    return stem[:48] or "clip"


def _task_name(source: Path) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", source.stem.lower()).strip(".-_")
    return name or "imported"


def _assign_splits(
    files: list[SourceFile], splits: list[str], fractions: list[float], kfold: bool,
    multilabel: bool, rng: np.random.Generator,
) -> list[str]:
    """The split of each file, stratified by label (see the module docstring)."""
    if multilabel:
        return [splits[i] for i in stratify_multilabel([f.labels for f in files], fractions, rng)]
    by_class: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        by_class.setdefault(f.labels[0], []).append(i)
    out = [""] * len(files)
    if kfold:
        for fold, members in deal_round_robin(list(by_class.values()), splits, rng).items():
            for i in members:
                out[i] = fold
        return out
    for members in by_class.values():
        order = [members[j] for j in rng.permutation(len(members)).tolist()]
        start = 0
        for split, n in zip(splits, split_counts(len(members), fractions), strict=True):
            for i in order[start : start + n]:
                out[i] = split
            start += n
    return out


def _drop_rare_classes(
    kept: list[SourceFile], n_splits: int, multilabel: bool
) -> tuple[list[SourceFile], dict[str, int], int]:
    """(files left, {dropped class: its clips}, clips left with no label): a class with fewer
    clips than splits cannot reach every split. A multilabel clip loses only that label."""
    counts = Counter(label for f in kept for label in f.labels)
    dropped = {c: n for c, n in sorted(counts.items()) if n < n_splits}
    left: list[SourceFile] = []
    unlabelled = 0
    for f in kept:
        labels = tuple(x for x in f.labels if x not in dropped)
        if labels:
            left.append(SourceFile(f.path, labels, f.shown))
        elif multilabel:  # a multiclass clip of a dropped class is counted with its class
            unlabelled += 1
    return left, dropped, unlabelled


def _sources_csv(clips: list[Clip], splits: list[str]) -> str:
    """sources.csv: split,filename,source for every clip, in split then filename order."""
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["split", "filename", "source"])
    for c in sorted(clips, key=lambda c: (splits.index(c.split), c.filename)):
        writer.writerow([c.split, c.filename, c.sounds[0].shown])
    return rows.getvalue()


def _file_renderer() -> ClipRenderer:
    def render(clip: Clip, num_samples: int) -> np.ndarray:
        (source,) = clip.sounds
        return load_clip(source.path, num_samples)

    return render


def _check_options(
    split: str, folds: int, valid_fraction: float, test_fraction: float,
    duration: float | str | None,
) -> None:
    if split not in SPLIT_MODES:
        raise UserError(f"split {split!r}: expected one of {', '.join(SPLIT_MODES)}")
    if split == "kfold" and not 3 <= folds <= MAX_FOLDS:
        raise UserError(
            f"folds {folds}: need 3 to {MAX_FOLDS} (heareval tests on one fold, validates on "
            "the next and trains on the rest)"
        )
    if split == "trainvaltest" and not (
        0 < valid_fraction < 1 and 0 < test_fraction < 1 and valid_fraction + test_fraction < 1
    ):
        raise UserError(
            f"valid fraction {valid_fraction} and test fraction {test_fraction}: each must be "
            "above 0 and together below 1"
        )
    if isinstance(duration, str):
        if duration != KEEP_LENGTH:
            raise UserError(f"duration {duration!r}: expected seconds > 0 or {KEEP_LENGTH!r}")
    elif duration is not None and not duration > 0:
        raise UserError(f"duration {duration}: expected seconds > 0")


def _check_paths(source: Path, task_dir: Path, files: list[SourceFile]) -> None:
    """Refuse to replace anything but an earlier task, to delete a source file by replacing
    the folder holding it, or to write the task into a class folder tree (it would become a
    class of the next import)."""
    src, dst = source.resolve(), task_dir.resolve()
    inside = [f.shown for f in files if dst in f.path.resolve().parents]
    if dst == src or dst in src.parents or (source.is_dir() and src in dst.parents) or inside:
        raise UserError(
            f"{task_dir}: the task must go outside the source {source}"
            + (f" (it holds {inside[0]})" if inside else "")
        )
    if task_dir.exists() and not (task_dir / "task_metadata.json").is_file():
        raise UserError(
            f"{task_dir}: exists and is not a HEAR task folder; choose another output or name"
        )


def import_task(
    source: Path,
    out_dir: Path,
    name: str | None = None,
    duration: float | str | None = None,
    split: str = SPLIT_MODES[0],
    folds: int = DEFAULT_FOLDS,
    valid_fraction: float = DEFAULT_VALID_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
) -> ImportSummary:
    """Import SOURCE (a folder per class, or a `path,labels` CSV) as the HEAR task
    out_dir/<name> (name defaults to SOURCE's name, made safe) and say what was done.
    `duration`: seconds, None for the median length, or KEEP_LENGTH to keep every clip's own.

    The task is written all or nothing; a task folder already at that path is replaced, any
    other folder there is an error. The same source, options and seed give the same task.
    """
    source, out_dir = Path(source), Path(out_dir)
    _check_options(split, folds, valid_fraction, test_fraction, duration)
    if source.is_dir():
        files, skipped = scan_folder(source)
    elif source.is_file() and source.suffix.lower() == ".csv":
        files, skipped = scan_csv(source)
    elif source.exists():
        raise UserError(f"{source}: expected a folder of class folders or a .csv file")
    else:
        raise UserError(f"{source}: no such file or folder")
    if name is not None and (not name.strip() or "/" in name or name in (".", "..")):
        raise UserError(f"task name {name!r}: expected a plain folder name")
    name = name or _task_name(source)
    task_dir = out_dir / name
    _check_paths(source, task_dir, files)
    if not files:
        raise UserError(f"{source}: no audio files found")
    multilabel = any(len(f.labels) > 1 for f in files)  # as listed, before anything is skipped
    problem = vocabulary_problem(sorted({label for f in files for label in f.labels}))
    if problem:
        raise UserError(f"{source}: {problem}; rename it")

    # Pass 1: headers only, for the median length; pass 2: decode what will be kept.
    lengths: dict[int, float] = {}
    for i, f in enumerate(files):
        seconds, why = probe_file(f.path)
        if why:
            skipped.append((f.shown, why))
        else:
            lengths[i] = seconds
    if not lengths:
        raise UserError(f"{source}: none of the {len(files)} files is readable audio")
    if duration == KEEP_LENGTH:
        duration_source, duration, num_samples = "kept", None, None
    else:
        duration_source = "given" if duration is not None else "median"
        if duration is None:
            duration = max(0.1, round(statistics.median(lengths.values()), 1))
        num_samples = round(duration * SAMPLE_RATE)
    candidates = sorted(lengths)
    with ThreadPoolExecutor(RENDER_THREADS) as pool:
        decoded = list(pool.map(lambda i: decode_file(files[i].path, num_samples), candidates))
    kept: list[SourceFile] = []
    decoded_length: dict[Path, int] = {}
    for i, (length, why) in zip(candidates, decoded, strict=True):
        if why or length is None:
            skipped.append((files[i].shown, why or "cannot decode"))
            continue
        kept.append(files[i])
        decoded_length[files[i].path] = length

    # Classes too small for the splits leave the task, and are reported.
    kfold = split == "kfold"
    if kfold:
        splits = [f"fold{k:02d}" for k in range(folds)]
        fractions = [1 / folds] * folds
    else:
        splits = ["train", "valid", "test"]
        fractions = [1 - valid_fraction - test_fraction, valid_fraction, test_fraction]
    kept, dropped, unlabelled = _drop_rare_classes(kept, len(splits), multilabel)
    classes = sorted({label for f in kept for label in f.labels})
    if len(classes) < 2:
        raise UserError(
            f"{source}: {len(classes)} class(es) with at least {len(splits)} usable clips; "
            "a task needs 2 or more"
            + (f" (too few: {_shorten(list(dropped), 8)})" if dropped else "")
        )

    rng = np.random.default_rng(seed)
    assigned = _assign_splits(kept, splits, fractions, kfold, multilabel, rng)
    width = max(5, len(str(len(kept) - 1)))
    clips = [
        Clip(
            s, f"{i:0{width}d}_{_safe_stem(f.path)}.wav", f.labels, (f,), None,
            None if num_samples is not None else decoded_length[f.path] / SAMPLE_RATE,
        )
        for i, (f, s) in enumerate(zip(kept, assigned, strict=True))
    ]
    present = {(c.split, x) for c in clips for x in c.labels}
    missing = {x: [s for s in splits if (s, x) not in present] for x in classes}
    missing = {x: absent for x, absent in missing.items() if absent}
    prediction_type = "multilabel" if multilabel else "multiclass"
    options: dict = {"folds": folds} if kfold else {
        "valid_fraction": valid_fraction, "test_fraction": test_fraction,
    }
    metadata = task_metadata(
        name,
        version=VERSION,
        prediction_type=prediction_type,
        evaluation=EVALUATION[prediction_type],
        splits=splits,
        sample_duration=duration,
        size="full",
        seed=seed,
        source=str(source.resolve()),
        import_options=options,
        dropped_classes=dropped,
    )
    plan = TaskPlan(
        metadata, classes, clips, renderer=_file_renderer, render_threads=RENDER_THREADS,
        extra_files=(("sources.csv", _sources_csv(clips, splits)),),
    )
    write_task(task_dir, plan)
    written = [decoded_length[f.path] if num_samples is None else num_samples for f in kept]
    return ImportSummary(
        task_dir=task_dir,
        prediction_type=prediction_type,
        split_mode=metadata["split_mode"],
        sample_duration=duration,
        duration_source=duration_source,
        clips={s: sum(c.split == s for c in clips) for s in splits},
        classes=classes,
        shortest=min(written) / SAMPLE_RATE,
        longest=max(written) / SAMPLE_RATE,
        skipped=skipped,
        dropped_classes=dropped,
        unlabelled_clips=unlabelled,
        missing_from_splits=missing,
        trimmed=sum(decoded_length[f.path] > n for f, n in zip(kept, written, strict=True)),
        padded=sum(decoded_length[f.path] < n for f, n in zip(kept, written, strict=True)),
    )

"""Write a task in exactly hearpreprocess's layout, all or nothing.

    <task>/task_metadata.json
    <task>/labelvocabulary.csv          idx,label
    <task>/<split>.json                 {filename: [label, ...]}
    <task>/16000/<split>/<filename>     16 kHz mono 16-bit PCM, exactly sample_duration long

The whole task is written in a temporary folder beside its final path and renamed into place
at the end, so a killed build leaves nothing that looks like a task. A folder already there is
kept only if its metadata (which records size, seed and builder version) is exactly what the
build would write and every clip it lists exists; anything else is rebuilt.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from tqdm.auto import tqdm

from eval_tasks.soundfont import SAMPLE_RATE, Note, Renderer
from hear_contrastune.atomic import atomic_dir

# Characters that would need CSV quoting, which heareval's `idx,label` readers do not expect.
FORBIDDEN_LABEL_CHARS = ',"\n\r'


@dataclass(frozen=True)
class Clip:
    """One clip to render: where it goes, its labels, its notes and its peak level (dBFS)."""

    split: str
    filename: str
    labels: tuple[str, ...]
    notes: tuple[Note, ...]
    peak_db: float


@dataclass(frozen=True)
class TaskPlan:
    """Everything a build writes, decided before any audio is rendered."""

    metadata: dict
    vocabulary: list[str]
    clips: list[Clip]

    @property
    def name(self) -> str:
        return str(self.metadata["task_name"])


def task_metadata(
    name: str,
    *,
    version: str,
    prediction_type: str,
    evaluation: list[str],
    splits: list[str],
    sample_duration: float,
    size: str,
    seed: int,
    **extra: object,
) -> dict:
    """task_metadata.json as hearpreprocess writes it; `mode` and `seed` record the build."""
    kfold = splits[0].startswith("fold")
    meta: dict = {
        "task_name": name,
        "version": version,
        "embedding_type": "scene",
        "prediction_type": prediction_type,
        "split_mode": "new_split_kfold" if kfold else "trainvaltest",
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
    for label in plan.vocabulary:
        if not label or any(ch in label for ch in FORBIDDEN_LABEL_CHARS):
            raise ValueError(f"{plan.name}: label {label!r} cannot go in labelvocabulary.csv")
    seen: set[tuple[str, str]] = set()
    for c in plan.clips:
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


def write_task(task_dir: Path, plan: TaskPlan) -> Path:
    """Render every clip and write the task at `task_dir`, replacing whatever was there."""
    _validate(plan)
    num_samples = round(plan.metadata["sample_duration"] * SAMPLE_RATE)
    renderer = Renderer(SAMPLE_RATE)
    with atomic_dir(task_dir) as tmp:
        for split in plan.metadata["splits"]:
            (tmp / str(SAMPLE_RATE) / split).mkdir(parents=True)
        for c in tqdm(plan.clips, desc=f"render {plan.name}", unit="clip"):
            audio = renderer.clip(c.notes, num_samples, c.peak_db)
            path = tmp / str(SAMPLE_RATE) / c.split / c.filename
            sf.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        rows = "".join(f"{i},{label}\n" for i, label in enumerate(plan.vocabulary))
        (tmp / "labelvocabulary.csv").write_text("idx,label\n" + rows)
        for split, files in split_files(plan).items():
            text = json.dumps(dict(sorted(files.items())), indent=2)
            (tmp / f"{split}.json").write_text(text + "\n")
        (tmp / "task_metadata.json").write_text(json.dumps(plan.metadata, indent=2) + "\n")
    return task_dir

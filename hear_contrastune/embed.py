"""`contrastune embed`: write heareval's embeddings layout for every task in a folder.

Output is exactly what `heareval.embeddings.runner` writes (see data.embeddings), without
needing TensorFlow, so `python -m heareval.predictions.runner` and the probes run on it
unchanged. Clips stream from disk at the model's sample rate (data.loading), each whole, in
batches of equal length. Each task folder is built under a temporary name and renamed when
complete; one holding this model's embeddings of the task's current contents is kept, so a
killed run resumes.
"""

import hashlib
import logging
import os
import re
from pathlib import Path

import torch

from hear_contrastune.atomic import atomic_dir, read_json_or_none, write_json
from hear_contrastune.backbones import is_backbone_spec
from hear_contrastune.backbones.embedding import embed_clips
from hear_contrastune.data.embeddings import (
    CLIP_NAMES_SUFFIX,
    PROBE_PREDICTIONS,
    copy_task_files,
    write_split,
)
from hear_contrastune.data.hear_format import METADATA_FILE, is_hear_folder
from hear_contrastune.data.loading import DEFAULT_WORKERS, ClipDataset
from hear_contrastune.data.task import load_task
from hear_contrastune.errors import UserError
from hear_contrastune.hear_api import HearModel, load_model
from hear_contrastune.lock import exclusive
from hear_contrastune.outputs import check_output_dir

MODEL_FILE = "embedding-model.json"
log = logging.getLogger(__name__)


def model_name(model: str | os.PathLike[str]) -> str:
    """A folder name for a model: the backbone name, or the run folder of a checkpoint."""
    if is_backbone_spec(str(model)):  # hf:/path?x=1 -> hf-path-x-1: a safe folder name
        return re.sub(r"[^A-Za-z0-9._-]+", "-", str(model)).strip("-")
    path = Path(model)
    return path.parent.name if path.name == "best.pt" else path.stem


def task_dirs(tasks_dir: Path) -> list[Path]:
    """The task folders under `tasks_dir` (or `tasks_dir` itself if it is one)."""
    if is_hear_folder(tasks_dir):
        return [tasks_dir]
    if not tasks_dir.is_dir():
        raise UserError(f"--tasks-dir {tasks_dir}: not a directory")
    found = sorted(p for p in tasks_dir.iterdir() if is_hear_folder(p))
    if not found:
        raise UserError(f"--tasks-dir {tasks_dir}: holds no task (no */{METADATA_FILE})")
    return found


def model_key(model: str | os.PathLike[str]) -> str:
    """What a model's embeddings depend on: a checkpoint's bytes (sha256), or a backbone spec."""
    path = Path(model)
    if is_backbone_spec(str(model)) and not path.is_file():
        return str(model)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(2**20):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def embed_task(model: HearModel, model_id: str, key: str, task_dir: Path, out_dir: Path,
               workers: int = DEFAULT_WORKERS) -> Path:
    """Embed every split of one task into out_dir/<task folder>; kept when it holds this
    model's embeddings of the task's current contents, embedded again otherwise."""
    task = load_task(task_dir, model.sample_rate)
    dest = out_dir / task_dir.name
    wanted = {"model_key": key, "task_key": task.content_key()}
    held = read_json_or_none(dest / MODEL_FILE)
    # a folder whose bulk files were dropped (a checkout of a compare run) is embedded again
    # (and one embedded before clip names were recorded)
    whole = all((dest / f"{split}.embeddings.npy").is_file()
                and (dest / f"{split}{CLIP_NAMES_SUFFIX}").is_file() for split in task.splits)
    same = isinstance(held, dict) and {k: held.get(k) for k in wanted} == wanted
    if same and whole:
        return dest
    if held is not None and not same:
        log.info("%s: the task or the model changed since it was embedded; embedding again",
                 dest)
    log.info("%s: %s", task.name, task.audio_note)
    # a checkout's probe predictions (no model file), or those of these very embeddings, stay
    carry = (PROBE_PREDICTIONS,) if held is None or same else ()
    with atomic_dir(dest, carry) as tmp:
        copy_task_files(task.path, tmp, task.splits)
        for split in task.splits:
            clips = ClipDataset(task, [split])
            emb = embed_clips(model.backbone, clips, workers=workers,
                              desc=f"embed {task.name}/{split}")
            write_split(tmp, split, emb.cpu().numpy(), clips.labels, clips.names)
        write_json(tmp / MODEL_FILE, {"model": model_id, **wanted, "meta": model.meta})
    return dest


def embed_tasks(model: str, tasks_dir: Path, out: Path, name: str | None = None,
                device: str | None = None, workers: int = DEFAULT_WORKERS,
                replace: bool = False) -> list[Path]:
    """Embed all tasks in `tasks_dir` with `model` into out/<name>/<task>.

    A folder holding another model's embeddings is refused (two models under one name), or,
    with `replace` (compare, whose folder for a model is its own), embedded again."""
    dirs = task_dirs(Path(tasks_dir))
    out_dir = Path(out) / (name or model_name(model))
    check_output_dir(Path(out), "--out")
    for d in dirs:  # each task's embeddings folder replaces whatever is there: never a task
        check_output_dir(out_dir / d.name, "--out", dirs)
    key = model_key(model) if Path(model).is_file() or is_backbone_spec(str(model)) else ""
    for d in dirs:
        held = read_json_or_none(out_dir / d.name / MODEL_FILE)
        if isinstance(held, dict) and held.get("model_key") != key and not replace:
            raise UserError(f"{out_dir / d.name}: holds embeddings of another model "
                            f"({held.get('model')!r}), not {str(model)!r}; choose another "
                            "--name or --out")
    for d in dirs:  # every task's split files checked before anything is written
        load_task(d)
    hear_model = load_model(model).to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with exclusive(out_dir):  # one process writes a model's embeddings folder at a time
        return [embed_task(hear_model, str(model), key, d, out_dir, workers) for d in dirs]

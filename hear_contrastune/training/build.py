"""Building a tuning run before its first epoch, each job a small step of `build_run` (as
SupContrast's set_loader / set_model / set_optimizer): the options checked, the training clips
(and a few-shot run's draw) fitted to the batch, the run folder opened and locked, the valid
evaluator, backbone, head, loss, optimiser, schedule and logs. training.loop runs the epochs
over the `TuningRun` it returns.
"""

import json
import logging
import os
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from hear_contrastune.atomic import write_json
from hear_contrastune.backbones import Backbone, build_backbone
from hear_contrastune.data.hear_format import Roles, roles_for_fold
from hear_contrastune.data.loading import ClipDataset
from hear_contrastune.data.samplers import fit_batch, make_sampler
from hear_contrastune.data.shots import SHOTS_FILE, draw_train_clips, shots_note, write_draw
from hear_contrastune.data.task import Task, load_task
from hear_contrastune.errors import UserError
from hear_contrastune.lock import exclusive, is_lock
from hear_contrastune.outputs import check_output_dir
from hear_contrastune.training import distributed
from hear_contrastune.training.config import (
    BATCH_SIZE,
    CLASSIFIER_METHODS,
    M_PER_CLASS,
    PRECISIONS,
    SELECT_RULES,
    TUNED_METHODS,
    VARIABLE_CLIP_SECONDS,
    TuneConfig,
    held_config,
)
from hear_contrastune.training.linear_head import fit_linear_head
from hear_contrastune.training.objective import make_head, make_loss, targets_for
from hear_contrastune.training.run_log import RunLog
from hear_contrastune.training.state import TrainingState
from hear_contrastune.training.valid_evaluator import ValidEvaluator, small_valid_warning

log = logging.getLogger(__name__)


@dataclass
class TuningRun:
    """Everything one tuning run works with, built once before the first epoch."""

    cfg: TuneConfig
    out: Path
    task: Task
    ranks: distributed.Ranks
    device: str
    amp: torch.dtype | None
    train: ClipDataset  # training crops, decoded as batches are drawn
    train_targets: Tensor  # on the device
    evaluator: ValidEvaluator
    workers: int
    backbone: Backbone
    head: nn.Module
    step_fn: nn.Module  # backbone + head, under DDP and torch.compile when asked
    loss_fn: nn.Module
    scaler: torch.amp.GradScaler
    gen: torch.Generator  # this rank's view generator
    state: TrainingState
    log: RunLog | None  # rank 0 only
    # rank 0: valid kNN of epochs 0, 1, ... (NaN where --select-every skipped one; read back
    # from epochs.csv on resume), what the selection rule chooses from
    scores: list[float] = field(default_factory=list)

    @property
    def classifier(self) -> nn.Module | None:
        """The head when it is a classifier whose own score is worth logging."""
        return self.head if self.cfg.method in CLASSIFIER_METHODS else None


@dataclass
class TrainingClips:
    """What a run trains on, and the run's configuration with its batch fitted to it."""

    cfg: TuneConfig
    roles: Roles
    train: ClipDataset  # training crops, decoded as batches are drawn
    targets: Tensor
    kept: np.ndarray | None  # a few-shot run's draw, as indices into the train role's clips
    seconds: float  # crop length
    notes: list[str]  # for the log: the few-shot draw, how batches are made

    @property
    def batch_bytes(self) -> int:
        """Memory that one batch's crops and their two views take as float32, at least."""
        return 3 * self.cfg.batch_size * self.train.num_samples * 4


def training_clips(cfg: TuneConfig, task: Task) -> TrainingClips:
    """The run's training clips and targets, its batch shape checked (or fitted to the task,
    data.samplers.fit_batch), and whether a batch fits in memory. Reads labels, no audio:
    `compare` calls it for every run before any of them starts."""
    roles = roles_for_fold(task, cfg.fold)
    seconds = cfg.clip_seconds or task.duration or VARIABLE_CLIP_SECONDS
    kept, notes = None, []
    if cfg.shots:  # the same draw for every method of this seed (data.shots)
        whole, kept = draw_train_clips(task, cfg.fold, cfg.shots, cfg.seed)
        notes.append(f"{shots_note(whole.labels, kept, cfg.shots, task.multilabel)}; "
                     "valid is whole")
    train = ClipDataset(task, roles["train"], round(seconds * task.sample_rate), cfg.seed, kept)
    targets = targets_for(task.vocabulary, train.labels, task.multilabel)
    shape = fit_batch(targets, cfg.batch_size, cfg.m_per_class, BATCH_SIZE, M_PER_CLASS)
    notes.append(shape.note)
    clips = TrainingClips(replace(cfg, batch_size=shape.batch_size, m_per_class=shape.m),
                          roles, train, targets, kept, seconds, notes)
    check_memory(clips)
    return clips


def check_memory(clips: TrainingClips) -> None:
    """Refuse a crop whose batch cannot fit in this machine's free memory, before any output
    (the activations need more again: this catches the impossible, not every tight fit)."""
    available = available_memory()
    if clips.batch_bytes > available:
        raise UserError(f"--clip-seconds {clips.seconds:g}: a batch of {clips.cfg.batch_size} "
                        f"crops and their two views needs {clips.batch_bytes / 2**30:.1f} GiB "
                        f"of audio alone; {available / 2**30:.1f} GiB is free. Use shorter "
                        "crops or a smaller --batch-size")


def available_memory() -> int:
    """Bytes of memory free for a new allocation (MemAvailable), or all of it if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_tuning(cfg: TuneConfig) -> None:
    """Every check a run makes before its first output, without building a model: so that
    `compare` refuses a run that cannot start before any of its stages runs."""
    training_clips(cfg, load_task(cfg.task_dir))


def build_run(cfg: TuneConfig, out: Path, device: str | None, workers: int,
              held: ExitStack) -> TuningRun | None:
    """Check everything, lock and open the run folder (`held` keeps the lock), and build data,
    model, loss and optimiser; None if the run is already done."""
    check_options(cfg)
    ranks, device = distributed.init(device)
    amp = autocast_dtype(cfg.precision, device)
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(cfg.backbone)
    task = load_task(cfg.task_dir, backbone.sample_rate)  # at the rate the backbone takes
    clips = training_clips(cfg, task)
    cfg = clips.cfg
    distributed.check_batch(cfg.batch_size, ranks)
    loss_fn = make_loss(cfg, task.multilabel, len(task.vocabulary))
    backbone.check_trainable()
    if not open_run_folder(out, cfg, task, clips, ranks, held):
        return None
    evaluator = make_evaluator(cfg, task, clips, workers)
    if ranks.main:
        log_run(cfg, task, clips, evaluator)
    backbone = backbone.to(device)
    head = make_head(cfg, backbone.embedding_size, len(task.vocabulary)).to(device)
    if cfg.method == "lpft" and not (out / "state.pt").exists():  # a resume restores the head
        fit_lpft_head(head, backbone, evaluator, task.multilabel, ranks)
    optimizer = make_optimizer(cfg, backbone, head)
    return TuningRun(
        cfg=cfg, out=out, task=task, ranks=ranks, device=device, amp=amp, train=clips.train,
        train_targets=clips.targets.to(device), evaluator=evaluator, workers=workers,
        backbone=backbone, head=head, step_fn=make_step_fn(cfg, backbone, head, ranks),
        loss_fn=loss_fn, scaler=torch.amp.GradScaler(enabled=amp == torch.float16),
        gen=torch.Generator(device=device).manual_seed(cfg.seed * 1000 + ranks.rank),
        state=TrainingState(backbone, head, optimizer,
                            make_schedule(optimizer, cfg, steps_per_epoch(cfg, clips.targets))),
        log=make_log(cfg, out) if ranks.main else None,
    )


def check_options(cfg: TuneConfig) -> None:
    """Refuse options no run can use, before anything is built."""
    if not cfg.task_dir:
        raise UserError("--task-dir: needed to tune")
    if cfg.method not in TUNED_METHODS:
        raise UserError(f"method {cfg.method!r}: choose from {', '.join(TUNED_METHODS)}")
    if cfg.select not in SELECT_RULES:
        raise UserError(f"--select {cfg.select!r}: choose from {', '.join(SELECT_RULES)}")
    if cfg.patience < 0:
        raise UserError(f"--patience {cfg.patience}: must be 0 (off) or more epochs")
    if cfg.select_every < 1:
        raise UserError(f"--select-every {cfg.select_every}: must be 1 (every epoch) or more")
    if cfg.warmup_epochs < 0 or (cfg.warmup_epochs and cfg.warmup_epochs >= cfg.epochs):
        raise UserError(f"--warmup-epochs {cfg.warmup_epochs:g}: must be at least 0 and less "
                        f"than --epochs {cfg.epochs}")


def open_run_folder(out: Path, cfg: TuneConfig, task: Task, clips: TrainingClips,
                    ranks: distributed.Ranks, held: ExitStack) -> bool:
    """Rank 0 locks and opens the run folder (`held` keeps the lock) and records a few-shot
    run's draw there; every rank then learns whether the run still has work (False: done.json
    says it finished)."""
    check_output_dir(out, "--out", [task.path])
    if ranks.main:
        held.enter_context(exclusive(out))
        open_run(out, cfg, task.content_key())
        if cfg.shots:
            write_draw(out / SHOTS_FILE, clips.train.names, cfg.shots, cfg.seed)
    distributed.barrier(ranks)
    return not (out / "done.json").exists()


def make_evaluator(cfg: TuneConfig, task: Task, clips: TrainingClips,
                   workers: int) -> ValidEvaluator:
    """Valid scoring against the training clips, whole as the probes see them (a few-shot
    run's draw only)."""
    reference = ClipDataset(task, clips.roles["train"], keep=clips.kept)
    valid = ClipDataset(task, clips.roles["valid"])
    return ValidEvaluator(reference, valid, clips.targets,
                          targets_for(task.vocabulary, valid.labels, task.multilabel),
                          task.multilabel, cfg.select_max_clips, cfg.seed, workers)


def log_run(cfg: TuneConfig, task: Task, clips: TrainingClips,
            evaluator: ValidEvaluator) -> None:
    """Rank 0: say what the run trains and scores on, and warn of a valid set too small to
    rank epochs."""
    log.info("%s: %s", task.name, task.audio_note)
    for note in clips.notes:
        log.info("%s", note)
    log.info("training on %s (%d clips), %.2f s crops; %s", "+".join(clips.roles["train"]),
             len(clips.train), clips.seconds, evaluator.note)
    warning = small_valid_warning(evaluator.valid_y, len(task.vocabulary), task.multilabel)
    if warning:
        log.warning("%s", warning)
    if cfg.xbm_size:
        log.info("cross-batch memory of %d embeddings (%.1f global batches), emptied at each "
                 "epoch's start so that a resumed run trains as an uninterrupted one",
                 cfg.xbm_size, cfg.xbm_size / (2 * cfg.batch_size))


def fit_lpft_head(head: nn.Module, backbone: Backbone, evaluator: ValidEvaluator,
                  multilabel: bool, ranks: distributed.Ranks) -> None:
    """LP-FT: fit the classifier on the frozen encoder's embeddings of the evaluator's clips
    before the first step (training.linear_head)."""
    train_emb, valid_emb = evaluator.embed(backbone)
    note = fit_linear_head(head, train_emb, evaluator.reference_y, valid_emb, evaluator.valid_y,
                           multilabel)
    if ranks.main:
        log.info("%s", note)


def make_step_fn(cfg: TuneConfig, backbone: Backbone, head: nn.Module,
                 ranks: distributed.Ranks) -> nn.Module:
    """Backbone + head, what trains (the checkpoint keeps only the backbone), under DDP and
    torch.compile when asked."""
    net = nn.Sequential(backbone, head)
    if ranks.world > 1:
        net = nn.parallel.DistributedDataParallel(net)
    return torch.compile(net) if cfg.compile else net


def make_optimizer(cfg: TuneConfig, backbone: Backbone, head: nn.Module) -> torch.optim.Optimizer:
    """AdamW over the backbone's groups and the head's, each at its own rate: pretrained
    weights may learn slower than new ones."""
    groups = backbone.param_groups()
    for group in groups:
        group["lr"] = cfg.lr * (cfg.backbone_lr_scale if group["name"] == "pretrained" else 1)
    groups.append({"name": "head", "params": list(head.parameters()),
                   "lr": cfg.lr * cfg.head_lr_scale})
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def steps_per_epoch(cfg: TuneConfig, targets: Tensor) -> int:
    """Optimiser steps in an epoch: the sampler's batches over --accumulate. Each epoch draws its
    own sampler, seeded by the epoch, so a resumed run sees the batches an uninterrupted one
    would have; every epoch's has this length."""
    sampler = make_sampler(targets, cfg.batch_size, cfg.m_per_class, cfg.seed)
    return max(1, len(sampler) // cfg.accumulate)


def make_log(cfg: TuneConfig, out: Path) -> RunLog:
    """Rank 0's step and epoch logs; a classifier's own valid score is a column too."""
    valid_fields = ["valid_knn", "valid_head"] if cfg.method in CLASSIFIER_METHODS else [
        "valid_knn"]
    return RunLog(out, ["loss", "lr", "clips_per_s"],
                  ["loss", *valid_fields, "seconds", "clips_per_s", "select_seconds"])


def make_schedule(optimizer: torch.optim.Optimizer, cfg: TuneConfig,
                  steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine decay to 0 over the run's optimiser steps, after `warmup_epochs` of linear warm-up.

    The k-th of W warm-up steps uses k / (W + 1) of each group's rate (LinearLR), then the cosine
    starts at the full rate. SequentialLR keeps both schedules' states in its state_dict, so a
    resumed run goes on with the rate it stopped at. Without warm-up: the cosine alone, as runs
    made before the option had.
    """
    total = cfg.epochs * steps_per_epoch
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total - 1)  # cosine: 1 step or more
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total - warmup)
    if warmup <= 0:
        return cosine
    linear = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / (warmup + 1),
                                               end_factor=1.0, total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [linear, cosine], [warmup])


def open_run(out: Path, cfg: TuneConfig, task_key: str) -> None:
    """Create the run folder, or accept it if it holds this same run; refuse another run's.

    The run is its options and its task's content (`task_key`), not the task's path: a moved
    run or task resumes, and a task whose files changed is refused rather than mixed."""
    config_file = out / "config.json"
    if config_file.exists():
        diff = run_differs(json.loads(config_file.read_text()), cfg, task_key)
        if diff == ["task_key"]:
            raise UserError(f"{out}: holds a run on other task contents (the files of "
                            f"{cfg.task_dir} changed since it began); choose another --out")
        if diff:
            raise UserError(f"{out}: already holds a different run (differs in {', '.join(diff)});"
                            " choose another --out")
    elif out.exists() and any(not is_lock(p) for p in out.iterdir()):
        raise UserError(f"{out}: exists and is not a tuning run folder; choose another --out")
    else:
        write_json(config_file, run_record(cfg, task_key))


def run_record(cfg: TuneConfig, task_key: str) -> dict:
    """What config.json holds: the run's options and its task's content key."""
    return {**json.loads(json.dumps(asdict(cfg))), "task_key": task_key}


def run_differs(written: dict, cfg: TuneConfig, task_key: str) -> list[str]:
    """What a recorded run (config.json's form) differs in from this run on this task content;
    [] when it is the same run. An option added since it was written holds its default there:
    what the run ran with. Its path (task_dir) is not part of it."""
    wanted, held = run_record(cfg, task_key), held_config(written)
    return sorted(k for k in wanted if k != "task_dir" and held.get(k) != wanted[k])


def autocast_dtype(precision: str, device: str) -> torch.dtype | None:
    """The autocast dtype of --precision. bf16 runs on the CPU too, with oneDNN's kernels where
    the CPU has AVX-512 (without, emulated and slow: a warning); fp16 autocast is CUDA-only.

    Measured on a 2-core CPU with AVX-512 BF16, nothing else running (benchmarks/bench_tune.py,
    benchmarks/results/bench_tune.txt), bf16 against fp32 forward + backward: Resemblyzer's LSTM
    1.80x; CREPE tiny's convolutions 1.18x, tiny wav2vec2 0.95x and AST 0.69x. Not the default
    even where it pays: 30-epoch gm-program runs in bf16 kept a lower valid kNN on both seeds
    than fp32's (TuneConfig.precision)."""
    if precision == "fp32":
        return None
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    if precision == "fp16" and not device.startswith("cuda"):
        raise UserError(f"--precision fp16 needs a CUDA device (this run is on {device}); "
                        "bf16 runs on the CPU")
    if device == "cpu" and precision == "bf16" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        log.warning("--precision bf16: this CPU lacks the AVX-512 that oneDNN's bf16 kernels "
                    "need, so autocast emulates bf16: 4-25x slower than fp32 on such a 2-core "
                    "CPU (benchmarks/results/bench_tune.txt); fp32 is the faster choice here")
    return torch.bfloat16 if precision == "bf16" else torch.float16

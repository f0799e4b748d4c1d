"""Tuning a backbone on a HEAR task's train split: contrastively, or by vanilla fine-tuning.

The loop, as in SupContrast: two random views of every clip in a batch -> backbone -> pooled
embedding -> head -> loss. The method decides only the head and the loss:
  contrastive  projection head (dropped afterwards) + SupCon (Jaccard-weighted for multilabel)
  finetune     linear classifier + cross-entropy (BCE for multilabel): the vanilla baseline
Everything else (data, sampler, views, optimiser, schedule, epochs, model selection) is shared,
so the comparison between them is fair. After each epoch the backbone alone (no head) embeds
train and valid, and a kNN probe on valid scores it; the best epoch's backbone is kept as a HEAR
checkpoint (`best.pt`; for finetune it also holds the classifier, whose own test score
`compare` reports). Epoch 0 is the untuned encoder, so a run never returns something worse
than what it started from.

Run folder: config.json (what defines the run), state.pt (resume point, rewritten every epoch),
best.pt, steps.csv / epochs.csv (and TensorBoard), done.json (written last: the run finished).
"""

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from pytorch_metric_learning.losses import SupConLoss
from sklearn.metrics import average_precision_score
from torch import Tensor, nn
from tqdm import tqdm

from hear_contrastune import distributed
from hear_contrastune.atomic import atomic_path, write_json
from hear_contrastune.augment import AugmentConfig, random_view
from hear_contrastune.backbones import DEFAULT_BACKBONE, Backbone, build_backbone
from hear_contrastune.checkpoint import save_checkpoint
from hear_contrastune.errors import UserError
from hear_contrastune.hear_api import HearModel, get_scene_embeddings
from hear_contrastune.knn import KnnIndex, vote
from hear_contrastune.losses import JaccardSupConLoss
from hear_contrastune.run_log import RunLog
from hear_contrastune.samplers import make_sampler
from hear_contrastune.task import Task, load_split_audio, load_task

VALID_K = (1, 5, 10, 20)
LOSSES = ("auto", "supcon", "jaccard-supcon", "any-shared-supcon", "ce", "bce")
METHODS = ("contrastive", "finetune")
# The head's learning rate is lr * this unless set. A new classifier on a pretrained encoder
# needs a far larger step than the encoder: at 1x its cross-entropy stayed at ln(classes) for
# the whole budget (benchmarks/finetune_study.py has the valid-split study behind the value).
HEAD_LR_SCALE = {"contrastive": 1.0, "finetune": 100.0}


@dataclass(frozen=True)
class TuneConfig:
    """Everything that defines a tuning run; a run folder holds exactly one."""

    task_dir: str
    backbone: str = DEFAULT_BACKBONE
    method: str = "contrastive"
    epochs: int = 30
    batch_size: int = 64
    m_per_class: int = 4
    lr: float = 1e-4
    weight_decay: float = 1e-4
    # pretrained weights learn at lr * this. At 1.0, lr 1e-4, tuning Resemblyzer's LSTM was
    # unstable in one of two identical runs (valid kNN 0.69 -> 0.53); at 0.3 it was steady.
    backbone_lr_scale: float = 0.3
    head_lr_scale: float | None = None  # the head learns at lr * this; None: HEAD_LR_SCALE
    grad_clip: float = 1.0  # max gradient norm of the backbone; 0 turns clipping off
    temperature: float = 0.1
    loss: str = "auto"
    proj_dim: int = 128
    seed: int = 0
    accumulate: int = 1  # batches per optimiser step (each batch keeps its own negatives)
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast, CUDA only)
    compile: bool = False  # torch.compile the backbone + head
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.head_lr_scale is None and self.method in HEAD_LR_SCALE:
            object.__setattr__(self, "head_lr_scale", HEAD_LR_SCALE[self.method])


def targets_for(task: Task, labels: list[list[str]]) -> Tensor:
    """Class ids [n] for multiclass tasks, multi-hot [n, vocabulary] for multilabel ones."""
    index = {label: i for i, label in enumerate(task.vocabulary)}
    if task.prediction_type == "multilabel":
        hot = torch.zeros(len(labels), len(index))
        for row, clip in enumerate(labels):
            hot[row, [index[x] for x in clip]] = 1.0
        return hot
    return torch.tensor([index[clip[0]] for clip in labels])


def make_loss(name: str, method: str, multilabel: bool, temperature: float) -> nn.Module:
    """The loss for a method; "auto" picks the natural one for the task's label type."""
    if method == "finetune":
        name = ("bce" if multilabel else "ce") if name == "auto" else name
        if name not in ("ce", "bce") or (name == "ce") == multilabel:
            raise UserError(f"--loss {name}: finetune uses {'bce' if multilabel else 'ce'} "
                            "for this task")
        return nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss()
    if name == "auto":
        name = "jaccard-supcon" if multilabel else "supcon"
    if name == "supcon":
        if multilabel:
            raise UserError("--loss supcon needs single-label classes; this task is multilabel "
                            "(use jaccard-supcon or any-shared-supcon)")
        return SupConLoss(temperature=temperature)
    if name in ("jaccard-supcon", "any-shared-supcon"):
        weighting = "jaccard" if name == "jaccard-supcon" else "any-shared"
        return JaccardSupConLoss(temperature=temperature, weighting=weighting)
    raise UserError(f"--loss {name!r}: choose from {', '.join(LOSSES)}")


class Classifier(nn.Module):
    """The fine-tuning head: a linear classifier over the L2-normalised embedding times a scale.

    On unit-norm inputs a plain linear layer starts with near-uniform logits and needs many
    steps to grow them (NormFace, Wang et al. 2017): with lr 1e-4 and a few epochs its loss never
    left ln(classes). Scaling by 1 / temperature puts cross-entropy on the same footing as
    SupCon, whose cosine similarities get that same scale.
    """

    def __init__(self, dim: int, n_classes: int, scale: float) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, n_classes)
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(nn.functional.normalize(x, dim=-1) * self.scale)


def make_head(cfg: TuneConfig, dim: int, n_classes: int) -> nn.Module:
    """Contrastive: SupContrast's MLP projection head, dropped after tuning. Finetune: the
    classifier, kept in the checkpoint for its own test score."""
    if cfg.method == "finetune":
        return Classifier(dim, n_classes, 1.0 / cfg.temperature)
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, cfg.proj_dim))


def open_run(out: Path, cfg: TuneConfig) -> None:
    """Create the run folder, or accept it if it holds this same run; refuse another run's."""
    config_file = out / "config.json"
    wanted = json.loads(json.dumps(asdict(cfg)))
    if config_file.exists():
        held = json.loads(config_file.read_text())
        if held != wanted:
            diff = sorted(k for k in wanted if held.get(k) != wanted[k])
            raise UserError(f"{out}: already holds a different run (differs in {', '.join(diff)});"
                            " choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: exists and is not a tuning run folder; choose another --out")
    else:
        write_json(config_file, wanted)


def valid_metric(scores: Tensor, truth: Tensor, multilabel: bool) -> float:
    """Top-1 accuracy of class scores [n, classes], or mAP over labels present for multilabel."""
    if multilabel:
        present = truth.sum(0) > 0
        return float(average_precision_score(truth[:, present], scores[:, present]))
    return (scores.argmax(1) == truth).float().mean().item()


def score(backbone: Backbone, model: HearModel, data: dict[str, tuple[Tensor, Tensor]],
          multilabel: bool, head: nn.Module | None = None) -> dict[str, float]:
    """Valid-split scores of the backbone alone: kNN, best over a small k grid (what selects the
    epoch), and, given a classifier head, that head's own score (logged, to show it learns).

    Model selection only: the full kNN probe (knn_probe) chooses k on valid and reports test.
    """
    emb = {split: get_scene_embeddings(audio, model) for split, (audio, _) in data.items()}
    backbone.train()
    (train_y, valid_y) = (data["train"][1].cpu(), data["valid"][1].cpu())
    if not multilabel:
        n_classes = int(max(train_y.max(), valid_y.max())) + 1
        train_y = torch.nn.functional.one_hot(train_y, n_classes)
    neighbours = KnnIndex(emb["train"], device=emb["train"].device).search(
        emb["valid"], max(VALID_K))
    scores = {"valid_knn": max(valid_metric(vote(neighbours, train_y, k), valid_y, multilabel)
                               for k in VALID_K if k <= neighbours.k)}
    if head is not None:
        head.eval()
        with torch.no_grad():
            scores["valid_head"] = valid_metric(head(emb["valid"]).cpu(), valid_y, multilabel)
        head.train()
    return scores


def tune(cfg: TuneConfig, out: Path, device: str | None = None) -> Path:
    """Tune, resuming a killed run from its last finished epoch; return the best checkpoint.

    Under torchrun, every rank runs this; see hear_contrastune.distributed.
    """
    out = Path(out)
    task = load_task(cfg.task_dir)
    if cfg.method not in METHODS:
        raise UserError(f"method {cfg.method!r}: choose from {', '.join(METHODS)}")
    ranks, device = distributed.init(device)
    distributed.check_batch(cfg.batch_size, ranks)
    amp = autocast_dtype(cfg.precision, device)
    if ranks.main:
        open_run(out, cfg)
    distributed.barrier(ranks)
    if (out / "done.json").exists():
        return out / "best.pt"
    torch.manual_seed(cfg.seed)
    multilabel = task.prediction_type == "multilabel"
    for split in ("train", "valid"):
        if split not in task.splits:
            raise UserError(f"{task.path}: tuning needs train and valid splits, has {task.splits}")
    data = {}
    for split in ("train", "valid"):
        audio, labels = load_split_audio(task, split)
        data[split] = (torch.from_numpy(audio).to(device), targets_for(task, labels).to(device))
    train_audio, train_targets = data["train"]

    backbone = build_backbone(cfg.backbone).to(device)
    backbone.check_trainable()
    head = make_head(cfg, backbone.embedding_size, len(task.vocabulary)).to(device)
    net = nn.Sequential(backbone, head)  # what trains; the checkpoint keeps only the backbone
    if ranks.world > 1:
        net = nn.parallel.DistributedDataParallel(net)
    step_fn = torch.compile(net) if cfg.compile else net
    loss_fn = make_loss(cfg.loss, cfg.method, multilabel, cfg.temperature)
    # checks --batch-size / --m-per-class now; each epoch then draws its own sampler, seeded by
    # the epoch, so a resumed run sees the batches an uninterrupted one would have
    sampler = make_sampler(train_targets, cfg.batch_size, cfg.m_per_class, cfg.seed)
    groups = backbone.param_groups()  # pretrained weights may learn slower than new ones
    for group in groups:
        group["lr"] = cfg.lr * (cfg.backbone_lr_scale if group["name"] == "pretrained" else 1)
    groups.append({"name": "head", "params": list(head.parameters()),
                   "lr": cfg.lr * cfg.head_lr_scale})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(sampler) // cfg.accumulate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler(enabled=amp == torch.float16)
    gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + ranks.rank)
    model = HearModel(backbone)
    classifier = head if cfg.method == "finetune" else None
    valid_fields = ["valid_knn", "valid_head"] if classifier else ["valid_knn"]
    log = RunLog(out, ["loss", "lr", "clips_per_s"], ["loss", *valid_fields, "seconds"]) \
        if ranks.main else None

    start_epoch, best, best_epoch = 1, -1.0, 0
    state_file = out / "state.pt"
    if state_file.exists():  # resume after a kill: every rank from the same state
        state = torch.load(state_file, map_location=device, weights_only=False)
        backbone.load_state_dict(state["backbone"])
        head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generators = state["generators"]  # one per rank of the killed run
        gen.set_state(generators[ranks.rank % len(generators)].to(gen.get_state().device))
        start_epoch, best, best_epoch = state["epoch"] + 1, state["best"], state["best_epoch"]
        if log:
            log.resume_after(state["epoch"])
    elif ranks.main:
        valid = score(backbone, model, data, multilabel, classifier)
        best = valid["valid_knn"]
        log.resume_after(-1)
        log.epoch(0, loss="", **valid, seconds=0.0)
        save_checkpoint(out / "best.pt", backbone, _meta(cfg, task, 0, best, head))

    t_start = time.time()
    for epoch in range(start_epoch, cfg.epochs + 1):
        net.train()
        sampler = make_sampler(train_targets, cfg.batch_size, cfg.m_per_class, cfg.seed + epoch)
        t0, losses = time.time(), []
        bar = tqdm(sampler, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, unit="batch",
                   disable=not ranks.main)
        for i, batch in enumerate(bar):
            idx = ranks.share(batch)
            x, y = train_audio[idx], train_targets[idx]
            views = torch.cat([random_view(x, cfg.augment, gen), random_view(x, cfg.augment, gen)])
            with torch.autocast(device.split(":")[0], dtype=amp, enabled=amp is not None):
                z = step_fn(views)
            z = distributed.gather(z.float(), ranks)  # the loss sees the global batch
            loss = loss_fn(z, distributed.gather(torch.cat([y, y]), ranks))
            scaler.scale(loss / cfg.accumulate).backward()
            if (i + 1) % cfg.accumulate == 0:
                if cfg.grad_clip > 0:  # recurrent backbones blow up without it; the head's
                    scaler.unscale_(optimizer)  # gradient is left alone, so it still learns
                    nn.utils.clip_grad_norm_(backbone.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                schedule.step()
            losses.append(loss.item())
            clips_per_s = (i + 1) * len(batch) * 2 / (time.time() - t0)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", clips_s=f"{clips_per_s:.0f}")
            if log:
                log.step(epoch, (epoch - 1) * len(sampler) + i, loss=losses[-1],
                         lr=schedule.get_last_lr()[0], clips_per_s=clips_per_s)
        optimizer.zero_grad(set_to_none=True)  # a partial accumulation does not carry over
        # every rank's view-generator state, so a resumed run draws the same views on each rank
        generators = distributed.gather_objects(gen.get_state(), ranks)
        if ranks.main:
            valid = score(backbone, model, data, multilabel, classifier)
            log.epoch(epoch, loss=float(np.mean(losses)), **valid, seconds=time.time() - t0)
            tqdm.write(f"epoch {epoch}: loss {np.mean(losses):.4f}  "
                       + "  ".join(f"{k} {v:.4f}" for k, v in valid.items()))
            if valid["valid_knn"] > best:
                best, best_epoch = valid["valid_knn"], epoch
                save_checkpoint(out / "best.pt", backbone, _meta(cfg, task, epoch, best, head))
            with atomic_path(state_file) as tmp:
                torch.save({"backbone": backbone.state_dict(), "head": head.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "schedule": schedule.state_dict(), "generators": generators,
                            "epoch": epoch, "best": best, "best_epoch": best_epoch}, tmp)
        distributed.barrier(ranks)
    if ranks.main:
        write_json(out / "done.json", {"best_epoch": best_epoch, "best_valid_knn": best,
                                       "seconds": time.time() - t_start,
                                       "processes": ranks.world})
    distributed.barrier(ranks)
    return out / "best.pt"


def autocast_dtype(precision: str, device: str) -> torch.dtype | None:
    """The autocast dtype for --precision; mixed precision is a CUDA feature here."""
    if precision == "fp32":
        return None
    if precision not in ("bf16", "fp16"):
        raise UserError(f"--precision {precision!r}: choose from fp32, bf16, fp16")
    if not device.startswith("cuda"):
        raise UserError(f"--precision {precision} needs a CUDA device (this run is on {device})")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def _meta(cfg: TuneConfig, task: Task, epoch: int, valid: float, head: nn.Module) -> dict:
    meta = {"task": task.name, "epoch": epoch, "valid_knn": valid, "config": asdict(cfg)}
    if cfg.method == "finetune":  # the classifier belongs to the result; a projection does not
        meta["head"] = {k: v.detach().cpu() for k, v in head.state_dict().items()}
    return meta

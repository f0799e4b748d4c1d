"""Tuning a backbone on a HEAR task's train split: contrastively, or by vanilla fine-tuning.

The loop, as in SupContrast's main_supcon.py: build the run (training.build: check the
options, open the run folder, then data, model, optimiser and schedule), then per
epoch train one epoch (two random views of every clip -> backbone -> pooled embedding -> head ->
loss), score valid (training.valid_evaluator), choose the epoch to keep (training.selection) and
save. The method decides only the head and the loss (training.objective); data,
sampler, views, optimiser, schedule, epochs and model selection are shared. The backbone of the
epoch the selection rule keeps (training.selection.choose_epoch; by default the best valid kNN
epoch) is a HEAR checkpoint (`best.pt`; for finetune it also holds the classifier, whose own
test score `compare` reports). Epoch 0 is the untuned encoder, so under the default rule a run
never returns something worse on valid than what it started from.

Run folder: config.json (what defines the run), shots.json (a few-shot run's draw, by clip
name: what the probes of its embeddings are cut to), state.pt (resume point, rewritten every
epoch), best.pt, steps.csv / epochs.csv (and TensorBoard), done.json (written last: the run
finished).
With --patience N the run ends once the selection score has not improved for N epochs
(training.selection.stalled); state.pt records that decision, so a run killed while stopping
ends on resume, as an uninterrupted one did.

The epoch's steps carry torch.profiler labels (sampler, views, forward, loss, backward,
optimiser, log, select; the DataLoader labels its own), which benchmarks/bench_tune.py reads to say
where an epoch's time goes.
"""

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from pytorch_metric_learning.losses import CrossBatchMemory
from torch import Tensor, nn
from torch.profiler import record_function
from tqdm import tqdm

from hear_contrastune.atomic import write_json
from hear_contrastune.backbones.checkpoint import save_checkpoint
from hear_contrastune.data.loading import DEFAULT_WORKERS, clip_batches
from hear_contrastune.data.samplers import make_sampler
from hear_contrastune.data.views import random_view
from hear_contrastune.errors import UserError
from hear_contrastune.training import distributed
from hear_contrastune.training.build import TuningRun, build_run
from hear_contrastune.training.config import (
    TuneConfig,
)
from hear_contrastune.training.pairs import jaccard_similarity
from hear_contrastune.training.run_log import read_csv
from hear_contrastune.training.selection import choose_epoch, is_scored, stalled

log = logging.getLogger(__name__)


def tune(cfg: TuneConfig, out: Path, device: str | None = None,
         workers: int = DEFAULT_WORKERS,
         on_epoch: Callable[[int, float], None] | None = None) -> Path:
    """Tune, resuming a killed run from its last finished epoch; return the best checkpoint.

    Under torchrun, every rank runs this; see training.distributed. `workers` DataLoader
    processes decode clips (it changes speed, not results). `on_epoch(epoch, valid score)` hears
    each finished epoch's selection score (a search's pruner); an exception it raises ends the
    run there, resumable like a killed one.
    """
    out = Path(out)
    with ExitStack() as held:  # the run folder's lock, for as long as this process trains it
        run = build_run(cfg.resolved(), out, device, workers, held)
        if run is None:
            return out / "best.pt"
        start(run)
        t_start = time.time()
        for epoch in range(run.state.epoch + 1, run.cfg.epochs + 1):
            if run.state.stopped:  # resumed after the epoch that ran out of patience
                break
            t0 = time.time()
            losses = train_one_epoch(run, epoch)
            seconds = time.time() - t0
            # every rank's view-generator state, so a resumed run draws the same views on each
            run.state.generators = distributed.gather_objects(run.gen.get_state(), run.ranks)
            if run.ranks.main:
                valid = score_valid(run, epoch, losses, seconds)
                if valid:
                    choose_and_save_best(run, epoch)
                save_state(run, epoch)
                if on_epoch is not None and math.isfinite(run.scores[epoch]):
                    on_epoch(epoch, run.scores[epoch])
            # rank 0 alone scores valid: every rank takes its decision to stop (a barrier too)
            run.state.stopped = distributed.gather_objects(run.state.stopped, run.ranks)[0]
        if run.ranks.main:
            epoch = run.state.best_epoch
            write_json(out / "done.json", {"best_epoch": epoch,
                                           "best_valid_knn": run.scores[epoch],
                                           "selected_by": run.cfg.select,
                                           "select_score": run.state.best,
                                           "stopped_early": run.state.stopped,
                                           "last_epoch": run.state.epoch,
                                           "patience": run.cfg.patience,
                                           "seconds": time.time() - t_start,
                                           "processes": run.ranks.world})
        distributed.barrier(run.ranks)
    return out / "best.pt"


def start(run: TuningRun) -> None:
    """Resume from state.pt (every rank from the same state), or score the untuned encoder."""
    state_file = run.out / "state.pt"
    if state_file.exists():
        run.state.load(state_file, run.device)
        generators = run.state.generators  # one per rank of the killed run
        run.gen.set_state(generators[run.ranks.rank % len(generators)]
                          .to(run.gen.get_state().device))
        if run.log:
            run.log.resume_after(run.state.epoch)
            run.scores = list(read_csv(run.out / "epochs.csv")["valid_knn"])
            if len(run.scores) != run.state.epoch + 1:
                raise UserError(f"{run.out / 'epochs.csv'}: holds {len(run.scores)} epochs' valid "
                                f"scores, state.pt {run.state.epoch + 1}; delete state.pt to "
                                "restart the run")
            if run.state.previous is None:  # a state written before it kept them
                remember_weights(run)
    elif run.ranks.main:
        t0 = time.time()
        valid = run.evaluator.score(run.backbone, run.classifier)
        run.log.resume_after(-1)
        run.log.epoch(0, loss="", **valid, seconds=0.0, clips_per_s="",
                      select_seconds=time.time() - t0)
        run.scores = [valid["valid_knn"]]
        choose_and_save_best(run, 0)


def train_one_epoch(run: TuningRun, epoch: int) -> list[float]:
    """One pass over the epoch's batches; returns each batch's loss. Each rank decodes only its
    share of every global batch."""
    cfg, state = run.cfg, run.state
    run.step_fn.train()
    with record_function("sampler"):
        sampler = make_sampler(run.train_targets, cfg.batch_size, cfg.m_per_class,
                               cfg.seed + epoch)
        batches = [run.ranks.share(batch) for batch in sampler]
    run.train.epoch = epoch  # seeds this epoch's crops
    if isinstance(run.loss_fn, CrossBatchMemory):  # state.pt holds no memory, so every epoch
        run.loss_fn.reset_queue()                  # starts empty, resumed or not
    loader = clip_batches(run.train, batches, run.workers,
                         pin_memory=run.device.startswith("cuda"))
    t0, losses, without_negatives = time.time(), [], 0
    bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, unit="batch",
               total=len(batches), disable=not run.ranks.main)
    for i, (x, idx) in enumerate(bar):
        x = x.to(run.device, non_blocking=True)
        y = run.train_targets[idx.to(run.train_targets.device)]
        with record_function("views"):
            without_negatives += not has_negative_pair(y)
            views = torch.cat([random_view(x, cfg.augment, run.gen),
                               random_view(x, cfg.augment, run.gen)])
        with record_function("forward"), torch.autocast(run.device.split(":")[0], dtype=run.amp,
                                                        enabled=run.amp is not None):
            z = run.step_fn(views)
        with record_function("loss"):
            z = distributed.gather(z.float(), run.ranks)  # the loss sees the global batch
            loss = run.loss_fn(z, distributed.gather(torch.cat([y, y]), run.ranks))
        with record_function("backward"):
            run.scaler.scale(loss / cfg.accumulate).backward()
        if (i + 1) % cfg.accumulate == 0:
            with record_function("optimiser"):
                if cfg.grad_clip > 0:  # recurrent backbones blow up without it; the head's
                    run.scaler.unscale_(state.optimizer)  # gradient is left alone: it learns
                    nn.utils.clip_grad_norm_(run.backbone.parameters(), cfg.grad_clip)
                run.scaler.step(state.optimizer)
                run.scaler.update()
                state.optimizer.zero_grad(set_to_none=True)
                state.schedule.step()
        with record_function("log"):
            losses.append(loss.item())
            clips_per_s = (i + 1) * cfg.batch_size * 2 / (time.time() - t0)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", clips_s=f"{clips_per_s:.0f}")
            if run.log:
                run.log.step(epoch, (epoch - 1) * len(batches) + i, loss=losses[-1],
                             lr=state.schedule.get_last_lr()[0], clips_per_s=clips_per_s)
    state.optimizer.zero_grad(set_to_none=True)  # a partial accumulation does not carry over
    if run.ranks.main and without_negatives > len(batches) / 2:
        log.warning("epoch %d: %d of %d batches had no negative pair (every clip shares a label "
                    "with every other): the contrastive loss learns little from them; use a "
                    "larger --batch-size or a smaller --m-per-class", epoch, without_negatives,
                    len(batches))
    return losses


def has_negative_pair(labels: Tensor) -> bool:
    """Whether two clips of the batch share no label (a negative pair for SupCon)."""
    return bool((jaccard_similarity(labels) == 0).any())


def score_valid(run: TuningRun, epoch: int, losses: list[float],
                seconds: float) -> dict[str, float]:
    """Rank 0, after an epoch that trained for `seconds`: the valid scores of the backbone alone
    (training.valid_evaluator; {} for an epoch --select-every leaves unscored), logged, and its
    valid kNN (NaN unscored) appended to run.scores."""
    cfg, t0 = run.cfg, time.time()
    scored = is_scored(epoch, cfg.epochs, cfg.select_every)
    valid = run.evaluator.score(run.backbone, run.classifier) if scored else {}
    # clips/s counts views (two per clip) over the epoch's training wall time, everything in it
    run.log.epoch(epoch, loss=float(np.mean(losses)), **valid, seconds=seconds,
                  clips_per_s=len(losses) * cfg.batch_size * 2 / seconds,
                  select_seconds=time.time() - t0 if scored else 0.0)
    tqdm.write(f"epoch {epoch}: loss {np.mean(losses):.4f}  "
               + ("  ".join(f"{k} {v:.4f}" for k, v in valid.items()) if scored
                  else f"(valid scored every {cfg.select_every} epochs)"))
    run.scores.append(valid["valid_knn"] if scored else math.nan)
    return valid


def choose_and_save_best(run: TuningRun, epoch: int) -> None:
    """Rank 0, once `epoch` is scored: decide whether to stop (--patience), let the selection
    rule choose from the scores so far, and write `best.pt` when the choice moves (always at
    epoch 0).

    state.best / best_epoch hold the rule's choice so far and the score it was chosen by (the
    smoothed one for "smoothed"). The choice moves only to this epoch or, for "smoothed", to the
    scored one before it, whose weights `remember_weights` kept."""
    cfg, state = run.cfg, run.state
    state.stopped = epoch < cfg.epochs and stalled(cfg.select, run.scores, cfg.patience)
    if state.stopped:
        log.info("epoch %d: the %s valid score has not improved for %d epochs (--patience); "
                 "stopping", epoch, cfg.select, cfg.patience)
    chosen, state.best = choose_epoch(cfg.select, run.scores,
                                      finished=epoch == cfg.epochs or state.stopped)
    if chosen != state.best_epoch or epoch == 0:
        state.best_epoch = chosen
        if chosen == epoch:
            save_best(run, epoch)
        else:
            with weights_of(run, run.state.previous):
                save_best(run, chosen)
    remember_weights(run)


def save_state(run: TuningRun, epoch: int) -> None:
    """Rank 0: write the resume point after `epoch`."""
    run.state.epoch = epoch
    run.state.save(run.out / "state.pt")


def remember_weights(run: TuningRun) -> None:
    """For "smoothed", which can choose a scored epoch only once the next one is scored: keep a
    CPU copy of the weights of the scored epoch just finished, in the state (a run resumed after
    an unscored epoch still needs them)."""
    if run.cfg.select == "smoothed":
        run.state.previous = tuple(
            {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
            for m in (run.backbone, run.head))


@contextmanager
def weights_of(run: TuningRun,
               weights: tuple[dict[str, Tensor], dict[str, Tensor]]) -> Iterator[None]:
    """Load earlier (backbone, head) weights for the block, then put the current ones back."""
    modules = (run.backbone, run.head)
    current = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in modules]
    for module, earlier in zip(modules, weights, strict=True):
        module.load_state_dict(earlier)
    try:
        yield
    finally:
        for module, now in zip(modules, current, strict=True):
            module.load_state_dict(now)


def save_best(run: TuningRun, epoch: int) -> None:
    """Write the backbone as `best.pt`, with the epoch, its valid kNN and the rule that chose it
    in the meta; a fine-tuned one keeps its classifier there too."""
    cfg = run.cfg
    meta = {"task": run.task.name, "epoch": epoch, "valid_knn": run.scores[epoch],
            "selected_by": cfg.select, "config": asdict(cfg)}
    if run.classifier is not None:  # the classifier belongs to the result; a projection not
        meta["head"] = {k: v.detach().cpu() for k, v in run.head.state_dict().items()}
    save_checkpoint(run.out / "best.pt", run.backbone, meta)

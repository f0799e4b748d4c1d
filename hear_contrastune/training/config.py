"""What defines a tuning run: the one source of every tuning default.

`TuneConfig` is what `tune`, `finetune` and `compare` run and what `config.json` records; the
CLI reads its option defaults from here, and `compare` derives each of its runs from one
`TuneConfig` with `dataclasses.replace`.
"""

import json
from dataclasses import asdict, dataclass, field, replace

from hear_contrastune.backbones import DEFAULT_BACKBONE
from hear_contrastune.data.shots import ALL_SHOTS
from hear_contrastune.data.views import AugmentConfig

TUNED_METHODS = ("contrastive", "finetune", "lpft")  # what `tune` trains
# Methods that train a classifier head (kept in the checkpoint): vanilla fine-tuning, and LP-FT
# (Kumar et al. 2022), which first fits that head as a linear probe on the frozen encoder.
CLASSIFIER_METHODS = ("finetune", "lpft")
CONTRASTIVE_LOSSES = ("supcon", "jaccard-supcon", "any-shared-supcon")
LOSSES = ("auto", *CONTRASTIVE_LOSSES, "ce", "bce")
# Autocast of the training forward pass; fp16 is CUDA-only, bf16 runs on the CPU too.
PRECISIONS = ("fp32", "bf16", "fp16")
# How the epoch kept as best.pt is chosen from the valid kNN curve (training.selection.choose_epoch)
SELECT_RULES = ("best", "last", "smoothed")
# The head's learning rate is lr * this unless set. A new classifier on a pretrained encoder
# needs a far larger step than the encoder: at 1x its cross-entropy stayed at ln(classes) for
# the whole budget (benchmarks/finetune_study.py has the valid-split study behind the value).
# LP-FT's head starts at the linear probe's optimum, so it learns at the encoder's pace, as in
# Kumar et al.'s fine-tuning stage (one learning rate for all); not studied here.
HEAD_LR_SCALE = {"contrastive": 1.0, "finetune": 100.0, "lpft": 1.0}
# Training crop of a task whose clips vary in length: long enough for several of Resemblyzer's
# 1.6 s partials and for most sound events, short enough to keep a CPU batch cheap.
VARIABLE_CLIP_SECONDS = 4.0
# The batch a fitted run aims for: 64 clips x 2 views, 4 clips of each of 16 classes (SupCon
# needs positives in the batch; more classes give more negatives). A task with fewer classes
# gets every class in every batch instead (data.samplers.fit_batch).
BATCH_SIZE = 64
M_PER_CLASS = 4


def unset_means() -> dict:
    """What an unset option resolves to: not TuneConfig fields, yet they change a run's
    result, so a record of a run's options (comparison.options) holds them too, and a changed
    constant is a changed option."""
    return {"head_lr_scale": HEAD_LR_SCALE, "batch_size": BATCH_SIZE,
            "m_per_class": M_PER_CLASS, "clip_seconds": VARIABLE_CLIP_SECONDS}


@dataclass(frozen=True)
class TuneConfig:
    """Everything that defines a tuning run; a run folder holds exactly one."""

    task_dir: str = ""
    fold: str = ""  # k-fold tasks: the test fold (heareval's roles: valid = the next fold)
    backbone: str = DEFAULT_BACKBONE
    method: str = "contrastive"
    epochs: int = 30
    # clips per batch and clips of each class (label) in it; None fits them to the task
    # (data.samplers.fit_batch): BATCH_SIZE clips of M_PER_CLASS, or, on a task with fewer
    # classes than that batch holds, every class in every batch
    batch_size: int | None = None
    m_per_class: int | None = None
    lr: float = 1e-4
    weight_decay: float = 1e-4
    # pretrained weights learn at lr * this. At 1.0, lr 1e-4, tuning Resemblyzer's LSTM was
    # unstable in one of two identical runs (valid kNN 0.69 -> 0.53); at 0.3 it was steady.
    backbone_lr_scale: float = 0.3
    head_lr_scale: float | None = None  # the head learns at lr * this; None: HEAD_LR_SCALE
    grad_clip: float = 1.0  # max gradient norm of the backbone; 0 turns clipping off
    # epochs of linear warm-up (every group's lr rising to its own) before the cosine decay;
    # 0: cosine from the first step, as before the option existed
    warmup_epochs: float = 0.0
    temperature: float = 0.1
    loss: str = "auto"
    proj_dim: int = 128
    seed: int = 0
    # few-shot: train on this many clips per class (per label, at least, for multilabel), drawn
    # by the seed (data.shots); 0: every train clip
    shots: int = ALL_SHOTS
    # training crop length in seconds; None: the task's clip length, or VARIABLE_CLIP_SECONDS
    # when clips vary in length (shorter clips are zero-padded, longer ones randomly cropped)
    clip_seconds: float | None = None
    # model selection's kNN uses at most this many train (reference) and valid clips, a seeded
    # sample, so an epoch's evaluation stays cheap on big tasks
    select_max_clips: int = 5000
    # which epoch is kept (SELECT_RULES): "best" valid kNN (epoch 0 included), the "last" one,
    # or the best of the valid curve "smoothed" by a centred 3-epoch moving average. "best"
    # until a study (benchmarks/tuning_study.py) measures otherwise
    select: str = "best"
    # score valid (and so judge the epoch, the pruner and --patience) after every this many
    # epochs; epoch 0 and the last are always scored. Scoring is ~0.25 of an epoch's time on
    # gm-program (as many whole-clip forwards as training's views, without the backward), so 2
    # cuts a run by ~12 %. 2: on every finished valid curve we have (seven gm-program runs:
    # two 30-epoch, four complete study trials, the quickstart) the even epochs' best scored
    # the same as the best of all in six and one valid clip of 540 lower in the seventh;
    # `python benchmarks/bench_tune.py --curves DIR` replays it. On the tuning study's 33
    # complete trials (5 tasks, 3 methods, every epoch scored) it kept a lower score in 10, by
    # 0.0005 on average and 0.0052 at most, for 53 % of the evaluations; every 3rd: 19, 0.0018
    # (benchmarks/results/bench_tune_curves_study.txt). 1: every epoch, as before.
    select_every: int = 2
    # stop once the selection score (the one --select chooses by) has not improved for this many
    # epochs; the learning-rate schedule still spans --epochs, so a stopped run's epochs are
    # those of the full run, and its kept epoch is the full run's unless that came later.
    # 0: never stop early (the behaviour before the option). 6: the smallest patience that kept
    # the same epoch in every valid curve we have (two 30-epoch gm-program runs at the old
    # defaults, seeds 0 and 1, kept epochs 19 and 23; patience 3-5 would have cut seed 1 short
    # of epoch 23; `python benchmarks/bench_tune.py --curves DIR`, logs and output in
    # benchmarks/results/). The tuning study ran at 6: of its 33 complete trials (5 tasks, 3
    # methods) 26 stopped early, running 717 of 990 epochs, and a patience of 5 would have
    # changed 4 kept epochs, of 4 changed 10 (bench_tune_curves_study.txt); whether more than
    # 6 would find later, better epochs those runs cannot say (the old runs above: it did not).
    patience: int = 6
    # contrastive only: a cross-batch memory of this many recent (global) embeddings, each view
    # one, extends every anchor's negatives beyond its batch (training.losses); 0: off
    xbm_size: int = 0
    accumulate: int = 1  # batches per optimiser step (each batch keeps its own negatives)
    # fp32: bf16 autocast on the CPU ran Resemblyzer's forward + backward 1.80x faster but kept
    # a lower valid kNN on both seeds of gm-program (0.709 and 0.726 against fp32's 0.728 and
    # 0.733; benchmarks/results/bench_tune.txt); the other backbones gained under 1.3x
    precision: str = "fp32"
    compile: bool = False  # torch.compile the backbone + head
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def resolved(self) -> "TuneConfig":
        """This run with its method's head learning-rate scale filled in, and the contrastive-only
        memory off for fine-tuning, as config.json records it. Left unresolved until the run
        starts, so `replace(cfg, method=...)` (compare's runs) picks the new method's values."""
        if self.method not in HEAD_LR_SCALE:
            return self
        scale = HEAD_LR_SCALE[self.method] if self.head_lr_scale is None else self.head_lr_scale
        return replace(self, head_lr_scale=scale,
                       xbm_size=self.xbm_size if self.method == "contrastive" else 0)


DEFAULTS = TuneConfig()
# The value an option had before it existed, where that differs from its default: a config
# written before the option ran with this (config.json, search.json; see held_config).
BEFORE_OPTION = {"patience": 0, "select_every": 1}


def held_config(written: dict) -> dict:
    """A recorded TuneConfig (config.json's form) completed for options added since: each
    missing one holds the value it had before it existed, so an old run is read as what it ran."""
    filled = {**json.loads(json.dumps(asdict(DEFAULTS))), **BEFORE_OPTION}
    return {**filled, **written}

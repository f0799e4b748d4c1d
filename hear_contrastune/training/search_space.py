"""What `contrastune search` varies, and why: the space, apart from Optuna, so that `--help`
and the README can say it without importing the search."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: its range (log-uniform where it spans decades) or choices,
    the methods it applies to, the TuneConfig field (CLI option) that fixes it, and why."""

    name: str
    option: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple = ()
    methods: tuple[str, ...] = ("contrastive", "finetune", "lpft")
    why: str = ""


SPACE = (
    Param("backbone_lr", "lr", 1e-6, 1e-3, log=True,
          why="the pretrained weights' rate (--lr x --backbone-lr-scale); published audio "
              "recipes span 1e-5 (AST) to 5e-4 (M2D)"),
    Param("head_lr_scale", "head_lr_scale", 0.1, 10.0, log=True,
          why="the head's rate over --lr, times each method's own scale (1 contrastive, 100 "
              "finetune, 1 LP-FT)"),
    Param("weight_decay", "weight_decay", 1e-5, 1e-1, log=True, why="AdamW's decay"),
    Param("warmup_fraction", "warmup_epochs", 0.0, 0.2,
          why="linear warm-up before the cosine decay, as a share of the epochs (EVAR warms up)"),
    Param("temperature", "temperature", 0.03, 0.3, log=True, methods=("contrastive",),
          why="SupCon's temperature"),
    Param("batch_size", "batch_size", choices=(32, 64, 128),
          why="the batch aimed for, fitted to what the task can fill (data.samplers.fit_batch)"),
    Param("m_per_class", "m_per_class", choices=(2, 4, 8),
          why="clips of each class in a batch, fitted likewise"),
    Param("xbm_batches", "xbm_size", choices=(0, 4, 16), methods=("contrastive",),
          why="a cross-batch memory of this many batches' embeddings (0: none)"),
)


def searched(method: str, fixed: dict) -> list[Param]:
    """The parameters this search varies: the method's, less those fixed on the command line."""
    return [p for p in SPACE if method in p.methods and p.option not in fixed]


def space_help() -> str:
    """What is searched and why, for --help and the README."""
    lines = []
    for p in SPACE:
        where = (f"{p.low:g}-{p.high:g}" + (" (log)" if p.log else "")) if not p.choices \
            else "one of " + ", ".join(str(c) for c in p.choices)
        only = "" if len(p.methods) == 3 else f" [{', '.join(p.methods)}]"
        lines.append(f"{p.name} {where}{only}: {p.why}")
    return "; ".join(lines)

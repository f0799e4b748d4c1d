"""A run's resume point: everything a killed run needs to go on as if it had not stopped.

One dataclass saves and loads it, so the two ends cannot drift apart. It is loaded with
`weights_only=True`: a state file holds tensors and plain values only (the view generators'
states are byte tensors), so a file the tool did not write cannot run code when read.
"""

import os
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from hear_contrastune.atomic import atomic_path
from hear_contrastune.errors import UserError


@dataclass
class TrainingState:
    """The modules that learn, with the counters of the epoch loop."""

    backbone: nn.Module
    head: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    epoch: int = 0  # last finished epoch (0: the untuned encoder)
    best: float = -1.0  # best valid score so far
    best_epoch: int = 0
    stopped: bool = False  # --patience ran out: the run ends after `epoch`, resumed or not
    generators: list[Tensor] = field(default_factory=list)  # each rank's view-generator state
    # --select smoothed: the (backbone, head) weights of the latest scored epoch, which the rule
    # may still keep once the next scored epoch is in
    previous: tuple[dict[str, Tensor], dict[str, Tensor]] | None = None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state atomically."""
        with atomic_path(path) as tmp:
            torch.save({"backbone": self.backbone.state_dict(), "head": self.head.state_dict(),
                        "optimizer": self.optimizer.state_dict(),
                        "schedule": self.schedule.state_dict(), "generators": self.generators,
                        "epoch": self.epoch, "best": self.best,
                        "best_epoch": self.best_epoch, "stopped": self.stopped,
                        "previous": self.previous}, tmp)

    def load(self, path: str | os.PathLike[str], device: str) -> None:
        """Restore the state `save` wrote, or refuse a file that is not one."""
        try:
            state = torch.load(path, map_location=device, weights_only=True)
        except Exception as e:  # torch raises many types for a file that is not a state
            raise UserError(f"{path}: not a resume state this tool wrote "
                            f"({type(e).__name__}); delete it to restart the run") from None
        self.backbone.load_state_dict(state["backbone"])
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.generators = list(state["generators"])
        self.epoch, self.best, self.best_epoch = state["epoch"], state["best"], state["best_epoch"]
        self.stopped = state.get("stopped", False)  # absent from states written before --patience
        previous = state.get("previous")  # absent before --select-every, None but for smoothed
        self.previous = None if previous is None else tuple(
            {k: v.cpu() for k, v in weights.items()} for weights in previous)

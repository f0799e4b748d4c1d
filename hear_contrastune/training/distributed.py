"""Data-parallel tuning on torch.distributed, as launched by torchrun.

Under `torchrun --nproc-per-node N contrastune tune ...` every rank draws the same global batch
(same sampler seed), takes its interleaved share of the clips, and runs backbone + head under
DistributedDataParallel (NCCL on GPUs, gloo on CPU). The contrastive loss must see the global
batch, so each rank all-gathers the embeddings *with gradients* and computes the loss of the
whole global batch. Why this gives exactly the single-process gradient: every rank computes the
same loss L; the all-gather's backward sums the N ranks' identical gradients for the local
embeddings (N x dL/dz_local), and DDP's gradient averaging divides by N again. Multi-hot labels
and Jaccard weights travel with the gathered batch, which PML's DistributedLossWrapper cannot
carry. Rank 0 alone evaluates, writes checkpoints and logs, and shows progress bars.
"""

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed._functional_collectives import all_gather_tensor_autograd

from hear_contrastune.errors import UserError


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job; a plain run is rank 0 of 1."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, indices: list[int]) -> list[int]:
        """This rank's interleaved share of a global batch (keeps m-per-class mixing per rank)."""
        return indices[self.rank :: self.world]


def init(device: str | None) -> tuple[Ranks, str]:
    """Join the process group torchrun describes (if any); return the ranks and this device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if world == 1:
        return Ranks(), device or ("cuda" if cuda else "cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    return Ranks(dist.get_rank(), dist.get_world_size()), f"cuda:{local}" if cuda else "cpu"


def check_batch(batch_size: int, ranks: Ranks) -> None:
    if batch_size % ranks.world:
        raise UserError(f"--batch-size {batch_size} must be a multiple of the "
                        f"{ranks.world} processes")


def gather(x: Tensor, ranks: Ranks) -> Tensor:
    """All ranks' rows of `x`, in rank order; gradients flow back to each rank's own rows."""
    if ranks.world == 1:
        return x
    if x.requires_grad:  # backward: reduce-scatter (sum) of the gathered rows' gradients
        return all_gather_tensor_autograd(x, gather_dim=0, group=dist.group.WORLD)
    parts = [torch.empty_like(x) for _ in range(ranks.world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()


def gather_objects(obj: Any, ranks: Ranks) -> list[Any]:
    """Every rank's `obj` (picklable, e.g. a CPU tensor), in rank order, on every rank."""
    if ranks.world == 1:
        return [obj]
    parts: list[Any] = [None] * ranks.world
    dist.all_gather_object(parts, obj)
    return parts

"""Data-parallel tuning on CPU with gloo: 2 ranks give the single-process loss and gradients on
the same global batch, and a 2-process `contrastune tune` writes one valid checkpoint."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pytorch_metric_learning.losses import SupConLoss
from torch import nn

import eval_tasks
import hear_contrastune
from hear_contrastune.training import distributed
from hear_contrastune.training.losses import JaccardSupConLoss
from hear_contrastune.validate import validate

WORLD = 2
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def global_batch(multilabel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 6, generator=gen)
    if multilabel:
        y = (torch.rand(16, 5, generator=gen) < 0.35).float()
    else:
        y = torch.randint(0, 4, (16,), generator=gen)
    return x, y


def make_loss(multilabel: bool) -> nn.Module:
    return JaccardSupConLoss(temperature=0.1) if multilabel else SupConLoss(temperature=0.1)


def single_process(multilabel: bool) -> tuple[float, torch.Tensor]:
    torch.manual_seed(1)
    model = nn.Linear(6, 8)
    x, y = global_batch(multilabel)
    # the order the ranks' rows arrive in after the gather: rank 0's share, then rank 1's
    order = [i for r in range(WORLD) for i in range(16)[r::WORLD]]
    loss = make_loss(multilabel)(model(x[order]), y[order])
    loss.backward()
    return loss.item(), model.weight.grad.clone()


def worker(rank: int, port: int, multilabel: bool, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.manual_seed(1)
    model = nn.parallel.DistributedDataParallel(nn.Linear(6, 8))
    ranks = distributed.Ranks(rank, WORLD)
    x, y = global_batch(multilabel)
    share = ranks.share(list(range(16)))
    z = distributed.gather(model(x[share]), ranks)
    loss = make_loss(multilabel)(z, distributed.gather(y[share], ranks))
    loss.backward()
    results[rank] = (loss.item(), model.module.weight.grad.clone())
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("multilabel", [False, True], ids=["supcon", "jaccard-supcon"])
def test_two_ranks_equal_one_process_on_the_global_batch(multilabel):
    expected_loss, expected_grad = single_process(multilabel)
    results = mp.Manager().dict()
    mp.spawn(worker, args=(free_port(), multilabel, results), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        loss, grad = results[rank]
        assert loss == pytest.approx(expected_loss, rel=1e-5)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-6)


def test_torchrun_two_process_tune_writes_one_valid_checkpoint(tmp_path):
    task = eval_tasks.build("gm-program", tmp_path / "tasks", size="small")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(WORLD),
           "--master-port", str(free_port()), "-m", "cli", "tune", "--task-dir", str(task),
           "--out", str(run), "--epochs", "1", "--batch-size", "8", "--m-per-class", "2"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("best checkpoint:") == 1  # rank 0 alone reports
    assert json.loads((run / "done.json").read_text())["processes"] == WORLD
    assert sorted(p.name for p in run.glob("*.pt")) == ["best.pt", "state.pt"]
    model = hear_contrastune.load_model(str(run / "best.pt"))
    emb = hear_contrastune.get_scene_embeddings(torch.rand(2, 16000) - 0.5, model)
    assert emb.shape == (2, 256)
    result = validate(str(run / "best.pt"), "cpu")
    assert result.returncode == 0, result.stderr[-2000:]

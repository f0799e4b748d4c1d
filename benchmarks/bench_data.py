"""The streaming data path: peak memory of `tune` against task size, and training throughput
against the in-memory path it replaced. Run by hand:

    python benchmarks/bench_data.py --out /tmp/bench-data [--skip-big]

1. Memory. Synthetic tasks of 30 s clips (tones in noise, 16 classes, 16-bit wav): one of N
   clips, one of 4N, and one whose float32 audio is over 8 GiB (4600 clips, 8.2 GiB; 4.4 GB of
   wav on disk). `contrastune tune` runs one epoch on each in a child process (1 s crops, model
   selection on 200 + 200 clips, one DataLoader worker); printed: each run's peak RSS (the main
   process, and its largest worker) and the ratios.
2. Throughput. On gm-program (fits in memory), the same training steps (two views, backbone and
   head forward and backward, SupCon, AdamW) fed (a) from one float32 array in memory, as
   `tune` was before streaming, and (b) by the streaming DataLoader with 0, 1 and 2 workers,
   interleaved over rounds; printed: median clips/s of each and the ratio to (a).
"""

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np
import soundfile as sf
import torch
from pytorch_metric_learning.losses import SupConLoss
from torch import nn

import eval_tasks
from hear_contrastune.backbones import build_backbone
from hear_contrastune.data.audio import read_wav
from hear_contrastune.data.loading import ClipDataset, clip_batches
from hear_contrastune.data.samplers import make_sampler
from hear_contrastune.data.task import load_task
from hear_contrastune.data.views import AugmentConfig, random_view
from hear_contrastune.training.config import DEFAULTS
from hear_contrastune.training.objective import targets_for

RATE = 16000
CHILD = """
import json, resource, runpy, sys
sys.argv = ["contrastune", *json.loads(sys.argv[1])]
try:
    runpy.run_module("cli", run_name="__main__")
except SystemExit as e:
    if e.code:
        raise
print(json.dumps({"main": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
"""


def synthetic_task(task_dir: Path, n_train: int, seconds: float, classes: int = 16) -> Path:
    """A task of `n_train` train clips (and 100 valid, 20 test) of `seconds` each: class c is a
    tone at 200 * (c + 1) Hz in white noise. Kept if already written."""
    if (task_dir / "task_metadata.json").is_file():
        return task_dir
    rng = np.random.default_rng(0)
    t = np.arange(round(seconds * RATE)) / RATE
    splits = {"train": n_train, "valid": 100, "test": 20}
    for split, n in splits.items():
        (task_dir / str(RATE) / split).mkdir(parents=True, exist_ok=True)
        labels = {}
        for i in range(n):
            c = i % classes
            clip = 0.3 * np.sin(2 * np.pi * 200 * (c + 1) * t + rng.uniform(0, 6))
            clip += 0.05 * rng.standard_normal(len(t))
            name = f"{i:05d}.wav"
            sf.write(str(task_dir / str(RATE) / split / name), clip.astype(np.float32), RATE,
                     subtype="PCM_16")
            labels[name] = [f"c{c}"]
        (task_dir / f"{split}.json").write_text(json.dumps(labels))
    (task_dir / "labelvocabulary.csv").write_text(
        "idx,label\n" + "".join(f"{c},c{c}\n" for c in range(classes)))
    (task_dir / "task_metadata.json").write_text(json.dumps({
        "task_name": task_dir.name, "embedding_type": "scene", "prediction_type": "multiclass",
        "split_mode": "trainvaltest", "sample_duration": seconds, "splits": list(splits),
        "evaluation": ["top1_acc"]}))
    return task_dir


def float32_gib(task_dir: Path) -> float:
    meta = json.loads((task_dir / "task_metadata.json").read_text())
    clips = sum(len(json.loads((task_dir / f"{s}.json").read_text())) for s in meta["splits"])
    return clips * meta["sample_duration"] * RATE * 4 / 2**30


def tune_peak_rss(task_dir: Path, out: Path) -> dict[str, int]:
    """Peak RSS of one epoch of `contrastune tune` on the task, in a fresh child process."""
    args = ["tune", "--task-dir", str(task_dir), "--out", str(out), "--epochs", "1",
            "--clip-seconds", "1", "--select-max-clips", "200", "--workers", "1"]
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)],
                          capture_output=True, text=True)
    if done.returncode:
        raise click.ClickException(f"tune failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory(out: Path, n: int, big: bool) -> None:
    tasks = {"N": synthetic_task(out / "tasks" / "n", n, 30.0),
             "4N": synthetic_task(out / "tasks" / "n4", 4 * n, 30.0)}
    if big:
        tasks["over 8 GiB"] = synthetic_task(out / "tasks" / "big", 4600 - 120, 30.0)
    peaks = {}
    for name, task_dir in tasks.items():
        run = out / "runs" / task_dir.name
        if run.exists():
            subprocess.run(["rm", "-rf", str(run)], check=True)
        peaks[name] = tune_peak_rss(task_dir, run)
        click.echo(f"{name:>10s}: {float32_gib(task_dir):6.2f} GiB of float32 audio; "
                   f"peak RSS main {peaks[name]['main'] / 2**30:.2f} GiB, "
                   f"largest worker {peaks[name]['worker'] / 2**30:.2f} GiB")
    click.echo(f"4N vs N peak RSS (main): {peaks['4N']['main'] / peaks['N']['main']:.3f}x")


def throughput(out: Path, rounds: int, batches: int) -> None:
    task = load_task(eval_tasks.build("gm-program", out / "tasks"))
    torch.manual_seed(0)
    backbone = build_backbone("resemblyzer")
    head = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 128))
    params = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=3e-5)
    loss_fn = SupConLoss(temperature=DEFAULTS.temperature)
    gen = torch.Generator().manual_seed(0)
    augment = AugmentConfig()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        views = torch.cat([random_view(x, augment, gen), random_view(x, augment, gen)])
        loss = loss_fn(head(backbone(views)), torch.cat([y, y]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    examples = task.examples("train")
    t0 = time.time()
    audio = torch.from_numpy(np.stack([read_wav(task.wav_path("train", f), RATE, 16000)
                                       for f, _ in examples]))
    click.echo(f"in-memory decode of {len(examples)} clips: {time.time() - t0:.1f} s (once)")
    dataset = ClipDataset(task, ["train"], 16000)
    targets = targets_for(task.vocabulary, dataset.labels, task.multilabel)
    plan = list(make_sampler(targets, 64, 4, 0))[:batches]

    def in_memory() -> None:
        for batch in plan:
            step(audio[batch], targets[batch])

    def streaming(workers: int) -> None:
        for x, idx in clip_batches(dataset, plan, workers):
            step(x, targets[idx])

    feeds = {"in memory": in_memory, "stream, 0 workers": lambda: streaming(0),
             "stream, 1 worker": lambda: streaming(1), "stream, 2 workers": lambda: streaming(2)}
    rates: dict[str, list[float]] = {name: [] for name in feeds}
    in_memory()  # warm-up
    for _ in range(rounds):
        for name, feed in feeds.items():
            t0 = time.perf_counter()
            feed()
            rates[name].append(len(plan) * 64 / (time.perf_counter() - t0))
    base = statistics.median(rates["in memory"])
    for name, values in rates.items():
        rate = statistics.median(values)
        click.echo(f"{name:>18s}: {rate:7.1f} clips/s  ({rate / base:.3f}x in memory)")


@click.command()
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--n", default=300, show_default=True, help="Train clips of the smaller task.")
@click.option("--skip-big", is_flag=True, help="Leave out the task over 8 GiB.")
@click.option("--rounds", default=3, show_default=True)
@click.option("--batches", default=8, show_default=True, help="Steps per throughput round.")
def main(out: Path, n: int, skip_big: bool, rounds: int, batches: int) -> None:
    torch.set_flush_denormal(True)  # as the CLI does
    start_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    click.echo(f"machine: {torch.get_num_threads()} torch threads; this process starts at "
               f"{start_gib:.2f} GiB")
    click.echo("== throughput (gm-program, batch 64 x 2 views)")
    throughput(out, rounds, batches)
    click.echo("== peak memory of one epoch of `contrastune tune`")
    memory(out, n, not skip_big)


if __name__ == "__main__":
    main()

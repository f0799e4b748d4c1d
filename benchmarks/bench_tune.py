"""How close one tuning run comes to the machine's limit, measured side by side in one run.

The limit is the bare backbone's forward + backward throughput (views/s) on a batch of the
default shape (--batch-size clips x 2 views of the default crop of the task's clips), nothing
else in the loop. Against it, in the same process and at the same threads:

  * `tune` epochs at the defaults: their training views/s as a fraction of the limit (goal
    >= 0.85), and where the rest goes (torch.profiler over one epoch, by the labels
    training/loop.py puts on each step: sampler, DataLoader decoding, views, forward, loss,
    backward, optimiser, log);
  * model selection (embedding the selection clips + the kNN) as a fraction of an epoch (goal
    <= 0.15 on gm-program), and its embedding with Resemblyzer's LSTM in CPU-sized chunks of
    partials against whole batches;
  * fp32 against bf16 autocast on the CPU, per backbone family (LSTM: resemblyzer; conv:
    crepe-tiny; transformer: tiny wav2vec2 and AST configs built in a temporary folder, as
    tests/test_backbones_hf.py builds them), and 1 against 2 torch threads for the limit.

The limit is measured before and after the epochs; both are printed, since on a shared machine
they differ, and the fraction is taken against their mean. On a machine whose load changes
between those measurements that fraction is noise; the profile's own fraction (forward +
backward over the same epoch's wall time) is measured within one epoch and is not.

    python benchmarks/bench_tune.py                       # minutes: gm-program (full build)
    python benchmarks/bench_tune.py --end-to-end          # 30-epoch runs: old vs new defaults
    python benchmarks/bench_tune.py --curves DIR [DIR..]  # replay --patience, --select-every

--end-to-end runs `tune` for --epochs (30) at the old defaults (--precision fp32 --patience 0
--select-every 1) and at the new ones, per seed, one after the other, and prints wall times and
the kept epoch's valid kNN. --curves reads the epochs.csv of finished run folders scored every
epoch and the complete trials of `contrastune search` folders' curves.csv (each DIR may hold
many, found recursively: docs/tuning-study holds the study's) and prints, per patience, which
kept epochs it would have changed, and per --select-every, how much lower the kept epoch's
valid score would have been: the evidence behind TuneConfig.patience and TuneConfig.select_every.
"""

import csv
import json
import math
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import click
import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

import eval_tasks
from hear_contrastune.backbones import build_backbone
from hear_contrastune.data.task import load_task
from hear_contrastune.data.views import random_view
from hear_contrastune.training.build import make_evaluator, training_clips
from hear_contrastune.training.config import DEFAULTS, PRECISIONS, TuneConfig
from hear_contrastune.training.loop import tune
from hear_contrastune.training.run_log import read_csv
from hear_contrastune.training.selection import choose_epoch, every, is_scored, stop_epoch

# What the loop's labels are called in the profile (training/loop.py), in the loop's order.
LABELS = {
    "sampler": "sampler",
    "decode": "enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__",
    "views": "views",
    "forward": "forward",
    "loss": "loss",
    "backward": "backward",
    "optimiser": "optimiser",
    "log": "log",
}
# Backbones per family for fp32 vs bf16, with the views per timed batch: CREPE embeds every
# 10 ms frame through its conv stack, so its batch is smaller to keep the benchmark minutes long.
FAMILIES = {"LSTM": ("resemblyzer", 128), "conv": ("crepe-tiny", 8),
            "transformer (wav2vec2)": ("wav2vec2", 128), "transformer (AST)": ("ast", 128)}


def default_views(task_dir: Path, cfg: TuneConfig) -> torch.Tensor:
    """One training batch's views as the loop makes them: the run's batch (fitted to the task as
    `tune` fits it) of crops x 2 random views."""
    task = load_task(task_dir, build_backbone(cfg.backbone).sample_rate)
    clips = training_clips(cfg, task)
    x = torch.stack([clips.train[i][0] for i in range(clips.cfg.batch_size)])
    gen = torch.Generator().manual_seed(cfg.seed)
    return torch.cat([random_view(x, cfg.augment, gen), random_view(x, cfg.augment, gen)])


def fwd_bwd_rate(backbone: torch.nn.Module, views: torch.Tensor, bf16: bool = False,
                 min_seconds: float = 10.0) -> float:
    """Views/s of backbone forward + backward alone (one untimed warm-up pass first)."""
    backbone.train()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            z = backbone(views)
        z.float().sum().backward()
        backbone.zero_grad(set_to_none=True)

    step()
    done, t0 = 0, time.perf_counter()
    while done == 0 or time.perf_counter() - t0 < min_seconds:
        step()
        done += len(views)
    return done / (time.perf_counter() - t0)


def tiny_hf(family: str, folder: Path) -> str:
    """A randomly initialised tiny wav2vec2 or AST folder, as tests/test_backbones_hf.py makes."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_backbones_hf import save_tiny

    save_tiny(family, folder / family)
    return f"hf:{folder / family}"


def precision_table(views: torch.Tensor, reps: int) -> list[tuple[str, str, float, float]]:
    """(family, backbone, fp32 views/s, bf16 views/s), fp32 and bf16 alternating `reps` times."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family, (name, n) in FAMILIES.items():
            spec = tiny_hf(name, Path(tmp)) if name in ("wav2vec2", "ast") else name
            backbone = build_backbone(spec)
            rates: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(reps):
                for bf16 in (False, True):
                    rates[bf16].append(fwd_bwd_rate(backbone, views[:n], bf16, min_seconds=5))
            rows.append((family, name, statistics.median(rates[False]),
                         statistics.median(rates[True])))
    return rows


def profile_epoch(cfg: TuneConfig, out: Path) -> dict[str, float]:
    """Seconds per label over one profiled epoch, the epoch's, and the selection after it
    (epoch 0's, which also reads every clip's header once, is left out)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        tune(replace(cfg, epochs=1), out, device="cpu", workers=0)
    events = {e.key: e for e in prof.key_averages()}
    seconds = {name: events[key].cpu_time_total / 1e6 if key in events else 0.0
               for name, key in LABELS.items()}
    seconds["select"] = [e for e in prof.events() if e.name == "select"][-1].cpu_time_total / 1e6
    seconds["epoch"] = float(read_csv(out / "epochs.csv")["seconds"][1])
    return seconds


@click.command()
@click.option("--task-dir", type=click.Path(path_type=Path), default=None,
              help="A task folder (default: gm-program, full size, built in a temporary folder).")
@click.option("--epochs", default=None, type=click.IntRange(min=1),
              help="Epochs of the timed `tune` run: 3, or with --end-to-end TuneConfig's "
                   f"({DEFAULTS.epochs}) for each run.")
@click.option("--reps", default=2, show_default=True, type=click.IntRange(min=1),
              help="fp32 / bf16 alternations per backbone family.")
@click.option("--end-to-end", is_flag=True,
              help="Time whole runs at the old defaults against the new ones instead.")
@click.option("--seeds", default="0", show_default=True, help="--end-to-end: comma-separated.")
@click.option("--precision", default=DEFAULTS.precision, show_default=True,
              type=click.Choice(PRECISIONS),
              help="The timed run's precision; with --end-to-end, the new runs'.")
@click.option("--curves", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Replay --patience and --select-every on the finished runs' epochs.csv and the "
                   "searches' curves.csv under this folder.")
def main(task_dir: Path | None, epochs: int | None, reps: int, end_to_end: bool, seeds: str,
         precision: str, curves: tuple[Path, ...]) -> None:
    torch.set_flush_denormal(True)  # as the CLI does
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if curves:
        replay_patience(curves)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        task_dir = task_dir or eval_tasks.build("gm-program", tmp / "tasks")
        cfg = TuneConfig(task_dir=str(task_dir), precision=precision)
        if end_to_end:
            compare_runs(cfg, epochs or DEFAULTS.epochs, [int(s) for s in seeds.split(",")], tmp)
        else:
            limit_and_loop(cfg, epochs or 3, reps, tmp)


def limit_and_loop(cfg: TuneConfig, epochs: int, reps: int, tmp: Path) -> None:
    views = default_views(Path(cfg.task_dir), cfg)
    backbone = build_backbone(cfg.backbone)
    print(f"\ndefault batch: {len(views) // 2} clips x 2 views of {views.shape[1]} samples, "
          f"backbone {cfg.backbone}, precision {cfg.precision}")
    bf16 = cfg.precision == "bf16"
    before = fwd_bwd_rate(backbone, views, bf16)
    tune(replace(cfg, epochs=epochs), tmp / "run", device="cpu", workers=0)
    after = fwd_bwd_rate(backbone, views, bf16)
    limit = (before + after) / 2
    log = read_csv(tmp / "run" / "epochs.csv")
    rates, train_s, select_s = log["clips_per_s"][1:], log["seconds"][1:], log["select_seconds"]
    print(f"limit (bare backbone fwd+bwd): {before:.1f} views/s before, {after:.1f} after "
          f"the epochs; mean {limit:.1f}")
    for e, rate in enumerate(rates, 1):
        print(f"  tune epoch {e}: {rate:.1f} views/s = {rate / limit:.2f} of the limit "
              f"(train {train_s[e - 1]:.1f} s, select {select_s[e]:.1f} s)")
    fraction = float(np.median(rates)) / limit
    print(f"LOOP FRACTION (median epoch / limit): {fraction:.2f}   (goal >= 0.85)")
    # one evaluation against one epoch's training, both medians; then spread over a run of
    # DEFAULTS.epochs at --select-every (epochs 1.. that are scored; epoch 0 is the baseline)
    one = float(np.median(select_s[np.isfinite(log["valid_knn"]) & (log["epoch"] > 0)]))
    train = float(np.median(train_s))
    scored = sum(is_scored(e, DEFAULTS.epochs, cfg.select_every)
                 for e in range(1, DEFAULTS.epochs + 1))
    print(f"SELECTION: one evaluation {one:.1f} s against {train:.1f} s of training per epoch "
          f"({one / (one + train):.2f} of an epoch that scores)")
    print(f"SELECTION FRACTION of a {DEFAULTS.epochs}-epoch run at --select-every "
          f"{cfg.select_every} ({scored} evaluations): "
          f"{scored * one / (scored * one + DEFAULTS.epochs * train):.2f}   (goal <= 0.15)")

    chunked, whole = selection_chunks(cfg, backbone, reps)
    if chunked:
        print(f"SELECTION EMBEDDING (alternating, median): whole batches {whole:.1f} s, the "
              f"LSTM in chunks of {backbone.cpu_chunk} partials {chunked:.1f} s: "
              f"{whole / chunked:.2f}x")

    seconds = profile_epoch(cfg, tmp / "profiled")
    print(f"\nwhere one profiled epoch's {seconds['epoch']:.1f} s of training go "
          "(torch.profiler; the profiler's own overhead included):")
    for name in LABELS:
        print(f"  {name:10s} {seconds[name]:8.3f} s  {seconds[name] / seconds['epoch']:6.1%}")
    rest = seconds["epoch"] - sum(seconds[name] for name in LABELS)
    print(f"  {'unlabelled':10s} {rest:8.3f} s  {rest / seconds['epoch']:6.1%}")
    inside = (seconds["forward"] + seconds["backward"]) / seconds["epoch"]
    print(f"LOOP FRACTION by the profile (forward + backward of backbone and head, over the same "
          f"epoch's wall time; robust to a load that changes between measurements): {inside:.2f}")
    print(f"  select     {seconds['select']:8.3f} s after the epoch "
          f"({seconds['select'] / (seconds['select'] + seconds['epoch']):.1%} of train + select)")

    threads = torch.get_num_threads()
    by_threads = {}
    for n in (1, threads, 1, threads):
        torch.set_num_threads(n)
        by_threads.setdefault(n, []).append(fwd_bwd_rate(backbone, views, min_seconds=5))
    torch.set_num_threads(threads)
    print("\nlimit by torch threads (alternating, median): "
          + ", ".join(f"{n}: {statistics.median(r):.1f} views/s" for n, r in by_threads.items()))

    print("\nfp32 vs bf16 autocast on the CPU, backbone fwd+bwd (alternating, median):")
    for family, name, fp32, bf in precision_table(views, reps):
        print(f"  {family:24s} {name:12s} fp32 {fp32:7.1f}  bf16 {bf:7.1f} views/s  "
              f"bf16/fp32 {bf / fp32:.2f}x")


def selection_chunks(cfg: TuneConfig, backbone: torch.nn.Module,
                     reps: int) -> tuple[float, float]:
    """Seconds of one model selection's embedding with the backbone's CPU chunks (Resemblyzer's
    `cpu_chunk`) and with whole batches, alternating `reps` times; (0, 0) for a backbone
    without them."""
    if not getattr(backbone, "cpu_chunk", 0):
        return 0.0, 0.0
    task = load_task(cfg.task_dir, backbone.sample_rate)
    evaluator = make_evaluator(cfg, task, training_clips(cfg, task), workers=0)
    chunk, seconds = backbone.cpu_chunk, {True: [], False: []}
    try:
        for _ in range(reps):
            for chunked in (True, False):
                backbone.cpu_chunk = chunk if chunked else 0
                t0 = time.perf_counter()
                evaluator.embed(backbone)
                seconds[chunked].append(time.perf_counter() - t0)
    finally:
        backbone.cpu_chunk = chunk
    return statistics.median(seconds[True]), statistics.median(seconds[False])


def compare_runs(cfg: TuneConfig, epochs: int, seeds: list[int], tmp: Path) -> None:
    """Whole runs: old defaults (fp32, no patience) against the new, per seed, one after the
    other on the same machine."""
    old = replace(cfg, epochs=epochs, precision="fp32", patience=0, select_every=1)
    new = replace(cfg, epochs=epochs)
    print(f"\n{epochs}-epoch runs on {Path(cfg.task_dir).name}; new defaults: precision "
          f"{new.precision}, patience {new.patience}, select-every {new.select_every}")
    rows = []
    for seed in seeds:
        for label, run_cfg in (("old", old), ("new", new)):
            out = tmp / f"{label}-seed{seed}"
            t0 = time.time()
            tune(replace(run_cfg, seed=seed), out, device="cpu", workers=0)
            wall = time.time() - t0
            done = json.loads((out / "done.json").read_text())
            rows.append((seed, label, wall, done))
            log = read_csv(out / "epochs.csv")
            train_s, select_s = float(np.sum(log["seconds"])), float(np.sum(log["select_seconds"]))
            print(f"  seed {seed} {label}: {wall:7.1f} s, epochs run {done['last_epoch']}, "
                  f"kept epoch {done['best_epoch']}, valid kNN {done['best_valid_knn']:.4f}; "
                  f"training {train_s:.0f} s, selection {select_s:.0f} s "
                  f"({select_s / (train_s + select_s):.2f} of the two)", flush=True)
    walls = {label: sum(r[2] for r in rows if r[1] == label) for label in ("old", "new")}
    knn = {label: [r[3]["best_valid_knn"] for r in rows if r[1] == label]
           for label in ("old", "new")}
    print(f"WALL new/old: {walls['new'] / walls['old']:.2f}   (goal <= 0.5)")
    print("kept valid kNN: old " + ", ".join(f"{v:.4f}" for v in knn["old"])
          + "; new " + ", ".join(f"{v:.4f}" for v in knn["new"]))


def run_curves(folders: tuple[Path, ...]) -> dict[str, tuple[str, list[float]]]:
    """Every finished valid curve under these folders, scored every epoch from epoch 0: the
    epochs.csv of run folders, and each complete trial of a search's curves.csv."""
    runs = {}
    for path in sorted({p for folder in folders for p in folder.rglob("*epochs.csv")
                        if (p.parent / "done.json").exists()  # finished runs, or a bare curve
                        or not (p.parent / "state.pt").exists()}):
        config = path.parent / "config.json"
        rule = json.loads(config.read_text())["select"] if config.is_file() else "best"
        with open(path, newline="") as f:
            scores = [float(r["valid_knn"] or "nan") for r in csv.DictReader(f)]
        if not np.isfinite(scores).all():
            print(f"{path.parent}: not scored every epoch (--select-every), left out")
            continue
        runs[str(path)] = (rule, scores)
    for path in sorted({p for folder in folders for p in folder.rglob("curves.csv")}):
        runs.update(search_curves(path))
    return runs


def search_curves(path: Path) -> dict[str, tuple[str, list[float]]]:
    """The complete trials of a search (`contrastune search`'s curves.csv, trials.csv and
    search.json). The journal holds epochs 1..N only: epoch 0, the untuned encoder, is left
    unscored (NaN) unless the trial kept it: its value is above every later epoch, or it
    stopped `--patience` epochs after epoch 0. A trial with an unscored epoch between
    (--select-every) is left out."""
    base = json.loads((path.parent / "search.json").read_text())["base"]
    rule, patience = base.get("select", "best"), base.get("patience", 0)  # older searches: none
    with open(path.parent / "trials.csv", newline="") as f:
        values = {r["trial"]: float(r["value"]) for r in csv.DictReader(f)
                  if r["state"] == "complete"}
    curves: dict[str, dict[int, float]] = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r["trial"] in values:
                curves.setdefault(r["trial"], {})[int(r["epoch"])] = float(r["valid_score"])
    runs = {}
    for trial, curve in curves.items():
        last = max(curve)
        if sorted(curve) != list(range(1, last + 1)):
            print(f"{path} trial {trial}: not scored every epoch, left out")
            continue
        kept_untuned = (values[trial] > max(curve.values())
                        or (rule != "smoothed" and last < base["epochs"] and last == patience))
        untuned = values[trial] if kept_untuned else math.nan
        runs[f"{path.parent} trial {trial}"] = (rule, [untuned, *(curve[e] for e in sorted(curve))])
    if patience and runs:
        print(f"{path.parent}: {len(runs)} complete trials ran with --patience {patience}, so "
              "they show what a smaller patience changes, not a larger")
    return runs


def replay_patience(folders: tuple[Path, ...]) -> None:
    """Per patience, how many finished runs would have kept another epoch, and epochs saved;
    per --select-every, how much lower the kept epoch's score would have been."""
    runs = run_curves(folders)
    for name, (rule, scores) in runs.items():
        kept = choose_epoch(rule, scores, finished=True)[0]
        print(f"{name}: {len(scores) - 1} epochs, {rule} keeps epoch {kept} "
              f"(valid score {scores[kept]:.4f})")
    print("\npatience  kept epochs changed  epochs run (of all)")
    for patience in range(1, min(11, max(len(s) for _, s in runs.values()))):
        changed, run_epochs, all_epochs = 0, 0, 0
        for rule, scores in runs.values():
            stop = stop_epoch(rule, scores, patience)
            kept = choose_epoch(rule, scores[:stop + 1], finished=True)[0]
            changed += kept != choose_epoch(rule, scores, finished=True)[0]
            run_epochs, all_epochs = run_epochs + stop, all_epochs + len(scores) - 1
        print(f"{patience:8d}  {changed:19d}  {run_epochs}/{all_epochs} "
              f"({run_epochs / all_epochs:.0%})")
    print("\nselect-every  kept valid kNN lower in  by (mean, max)  evaluations (of all)")
    for n in range(1, 5):
        drops, scored, all_epochs = [], 0, 0
        for rule, scores in runs.values():
            sparse = every(scores, n)
            drops.append(scores[choose_epoch(rule, scores, finished=True)[0]]
                         - scores[choose_epoch(rule, sparse, finished=True)[0]])
            # epoch 0 is always scored (a search's curves.csv does not hold it)
            scored += 1 + int(np.isfinite(sparse[1:]).sum())
            all_epochs += len(scores)
        print(f"{n:12d}  {sum(d > 0 for d in drops):13d} of {len(drops):<3d}  "
              f"{np.mean(drops):.4f}, {max(drops):.4f}  {scored}/{all_epochs} "
              f"({scored / all_epochs:.0%})")


if __name__ == "__main__":
    main()

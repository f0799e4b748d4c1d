"""Model selection in fp32 against bf16 autocast on the CPU: speed and the valid score (by hand).

    python benchmarks/bench_select_precision.py --task-dir TASK [--fold F] [--model M]

One epoch's model selection (training.valid_evaluator: embed the reference and valid clips,
the kNN) is a forward pass only, so bf16 autocast could cut it as it cuts Resemblyzer's
training step (benchmarks/bench_tune.py). Selection only ranks epochs, so what matters beside
the speed is whether bf16 moves the score it ranks by: both are printed, fp32 and bf16
alternating --reps times on the same encoder (a checkpoint, or an untuned backbone's name).
Only the embedding runs under autocast (what it would speed up); the kNN stays in fp32.
"""

import statistics
import time
from pathlib import Path

import click
import torch

from hear_contrastune.backbones.checkpoint import load_backbone
from hear_contrastune.data.task import load_task
from hear_contrastune.training.build import make_evaluator, training_clips
from hear_contrastune.training.config import TuneConfig


@click.command()
@click.option("--task-dir", required=True, type=click.Path(exists=True, file_okay=False,
                                                           path_type=Path))
@click.option("--fold", default="", help="k-fold tasks: the test fold (its roles, as tune's).")
@click.option("--model", default="resemblyzer", show_default=True,
              help="A checkpoint (best.pt) or a backbone name.")
@click.option("--reps", default=2, show_default=True, type=click.IntRange(min=1))
def main(task_dir: Path, fold: str, model: str, reps: int) -> None:
    """Print each precision's valid score and embedding seconds, and the speed ratio."""
    cfg = TuneConfig(task_dir=str(task_dir), fold=fold)
    backbone, _ = load_backbone(model)
    task = load_task(task_dir, backbone.sample_rate)  # at the rate the backbone takes, as tune
    evaluator = make_evaluator(cfg, task, training_clips(cfg, task), workers=0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {model}; "
          f"{evaluator.note}")
    seconds: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for rep in range(reps):
        for precision in seconds:
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                embeddings = evaluator.embed(backbone)
            seconds[precision].append(time.perf_counter() - t0)
            score = evaluator.scores_of(*embeddings)["valid_knn"]  # the kNN itself in fp32
            print(f"  rep {rep} {precision}: valid score {score:.4f}, "
                  f"{seconds[precision][-1]:.1f} s", flush=True)
    fp32, bf16 = (statistics.median(seconds[p]) for p in ("fp32", "bf16"))
    print(f"SELECTION bf16/fp32 speed (median): {fp32 / bf16:.2f}x")


if __name__ == "__main__":
    main()

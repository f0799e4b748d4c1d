"""Whisper's pad=none against pad=30 (issue 24): seconds to embed two suite tasks with the
frozen encoder and their valid kNN scores.

    python benchmarks/bench_whisper_pad.py --out /tmp/bench-whisper-pad [--model DIR]

Without --model a tiny random Whisper (tests/hf_tiny.py; 0.6 s window) is used, so only the
speed comparison means anything; give a downloaded Whisper folder for the scores. The score per
second is valid kNN / embedding seconds (both tasks)."""

import argparse
import json
import sys
import time
from pathlib import Path

import eval_tasks
from hear_contrastune.embed import embed_tasks
from hear_contrastune.probes.knn import run_knn_probe

TASKS = ("gm-program", "gm-pitch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", type=Path, help="a Whisper folder (default: tiny, random)")
    parser.add_argument("--size", default="small", help="suite task size")
    args = parser.parse_args()
    model = args.model
    if model is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from hf_tiny import save_whisper

        model = args.out / "tiny-whisper"
        if not (model / "config.json").is_file():
            save_whisper(model)
    for task in TASKS:
        eval_tasks.build(task, args.out / "tasks", size=args.size)
    rows = []
    for pad in ("none", "30"):
        t0 = time.perf_counter()
        dirs = embed_tasks(f"hf:{model.resolve()}?pad={pad}", args.out / "tasks",
                           args.out / "embeddings", name=f"pad-{pad}", device="cpu")
        seconds = time.perf_counter() - t0
        scores = {s["task"]: next(v["validation_score"] for v in s["result"].values()
                                  if isinstance(v, dict) and "validation_score" in v)
                  for s in run_knn_probe(dirs)}
        rows.append({"pad": pad, "embed_seconds": round(seconds, 1), "valid_knn": scores,
                     "valid_per_second": round(sum(scores.values()) / len(scores) / seconds, 4)})
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

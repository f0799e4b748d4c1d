"""`contrastune compare`: frozen vs vanilla fine-tuning vs contrastive tuning, under every probe.

For every task in a folder and every seed: the frozen encoder, `finetune` and contrastive
`tune` (Jaccard-weighted SupCon for multilabel tasks) with the same data, views, optimiser,
budget and model selection; embeddings of each; HEAR's MLP probe, the linear probe and the kNN
probe on each; the fine-tuned classifier's own test score. Every stage is skipped when its
complete output exists, so a killed or repeated run resumes where it stopped, and
`results.json` is rebuilt from those outputs each time. Layout under RUN:

    models/<task>/<method>-seed<s>/        tuning runs (best.pt, epochs.csv, steps.csv)
    embeddings/<method>-seed<s>/<task>/    heareval layout + each probe's scores
    results.json                           [{"task", "method", "seed", "probe", "metric", "score"}]
    report.md, index.html, plots/          drawn from results.json (hear_contrastune.report)

The frozen encoder has no randomness of its own: it is embedded and probed once (seed 0).
k-fold tasks are probed frozen only: tuning on their folds would train on other folds' test
clips, and per-fold tuning is not implemented.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from hear_contrastune.atomic import write_json
from hear_contrastune.embed import embed_tasks, task_dirs
from hear_contrastune.embedding_files import open_embedded_task, read_split
from hear_contrastune.hear_eval import hear_probe, test_score
from hear_contrastune.knn_probe import run_knn_probe
from hear_contrastune.linear_probe import run_linear_probe
from hear_contrastune.probe_protocol import label_matrix, score_all, score_functions
from hear_contrastune.report import write_report
from hear_contrastune.task import load_task
from hear_contrastune.tune import Classifier, TuneConfig, tune

METHODS = ("frozen", "finetune", "contrastive")
PROBES = ("hear", "linear", "knn")


@dataclass(frozen=True)
class CompareConfig:
    """What a comparison runs; tuning options are shared by both tuned methods."""

    tasks_dir: Path
    backbone: str
    seeds: int = 1
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-4
    grid: str = "default"  # heareval's grid, for the HEAR and linear probes
    probes: tuple[str, ...] = PROBES
    methods: tuple[str, ...] = METHODS


def head_score(model_file: Path, emb_task_dir: Path) -> dict[str, float]:
    """Test scores of the fine-tuned classifier itself, on its own test embeddings."""
    head = torch.load(model_file, map_location="cpu", weights_only=True)["meta"]["head"]
    task = open_embedded_task(emb_task_dir)
    emb, labels = read_split(task, "test")
    classifier = Classifier(emb.shape[1], len(task.vocabulary), 1.0)
    classifier.load_state_dict(head)  # the scale is a buffer: restored with the weights
    with torch.no_grad():
        logits = classifier(torch.from_numpy(emb))
    probs = torch.sigmoid(logits) if task.multilabel else torch.softmax(logits, dim=1)
    return score_all(score_functions(task), probs.numpy(), label_matrix(labels, task.vocabulary))


def probe(emb_task_dir: Path, probes: tuple[str, ...], grid: str) -> dict[str, float]:
    """Each requested probe's primary test score for one embeddings folder (cached on disk)."""
    scores = {}
    if "hear" in probes:
        scores["hear"] = test_score(hear_probe(emb_task_dir, grid))
    if "linear" in probes:
        scores["linear"] = test_score(run_linear_probe([emb_task_dir], grid=grid)[0]["result"])
    if "knn" in probes:
        scores["knn"] = test_score(run_knn_probe([emb_task_dir])[0]["result"])
    return scores


def compare(cfg: CompareConfig, run: Path, device: str | None = None) -> list[dict[str, Any]]:
    """Run (or resume) every stage; write and return results.json's records."""
    run = Path(run)
    records = []
    for task_dir in task_dirs(Path(cfg.tasks_dir)):
        task = load_task(task_dir)
        metric = task.metadata["evaluation"][0]
        kfold = task.metadata["split_mode"] != "trainvaltest"
        for method in cfg.methods:
            if method != "frozen" and kfold:
                click.echo(f"{task.name}: k-fold task, probing the frozen encoder only")
                continue
            for seed in range(1 if method == "frozen" else cfg.seeds):
                label = f"{method}-seed{seed}"
                click.echo(f"== {task.name} / {label}")
                model = cfg.backbone
                if method != "frozen":
                    tune_cfg = TuneConfig(task_dir=str(task_dir), backbone=cfg.backbone,
                                          method=method, epochs=cfg.epochs, seed=seed,
                                          batch_size=cfg.batch_size, lr=cfg.lr)
                    model = str(tune(tune_cfg, run / "models" / task_dir.name / label, device))
                emb_dir = embed_tasks(model, task_dir, run / "embeddings", label, device)[0]
                scores = probe(emb_dir, cfg.probes, cfg.grid)
                if method == "finetune":
                    scores["head"] = head_score(Path(model), emb_dir)["test_score"]
                records += [{"task": task.name, "method": method, "seed": seed, "probe": p,
                             "metric": metric, "score": float(s)} for p, s in scores.items()]
    write_json(run / "results.json", records)
    report_md, report_html = write_report(run)
    click.echo(f"report: {report_md}  {report_html}")
    return records


def summary_table(records: list[dict[str, Any]]) -> str:
    """Mean test score per (method, task, probe) over seeds, as plain text."""
    tasks = sorted({r["task"] for r in records})
    probes = [p for p in (*PROBES, "head") if any(r["probe"] == p for r in records)]
    lines = ["method       " + "".join(f"{t[:14] + '/' + p:>22s}" for t in tasks for p in probes)]
    for method in METHODS:
        cells = []
        for t in tasks:
            for p in probes:
                vals = [r["score"] for r in records
                        if (r["method"], r["task"], r["probe"]) == (method, t, p)]
                cells.append(f"{np.mean(vals):22.3f}" if vals else f"{'-':>22s}")
        lines.append(f"{method:13s}" + "".join(cells))
    return "\n".join(lines)

"""`contrastune compare`: frozen vs vanilla fine-tuning vs contrastive tuning, under every probe.

For every task in a folder and every seed: the frozen encoder, `finetune` and contrastive
`tune` (Jaccard-weighted SupCon for multilabel tasks), each derived from one `TuneConfig` so
they share data, views, optimiser, budget and model selection; embeddings of each; HEAR's MLP
probe, the linear probe and the kNN probe on each; the fine-tuned classifier's own test score.
Every stage is skipped when its complete output exists, so a killed or repeated run resumes
where it stopped, and results.json is rebuilt from those outputs each time. Where everything
goes is comparison.layout's business.

The frozen encoder has no randomness of its own: it is embedded and probed once (seed 0).
k-fold tasks are probed frozen only: tuning on their folds would train on other folds' test
clips, and per-fold tuning is not implemented.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from hear_contrastune.comparison.layout import (
    HEAD,
    METHODS,
    PROBES,
    RESULTS_FILE,
    embeddings_root,
    model_dir,
    run_label,
)
from hear_contrastune.comparison.report import write_report
from hear_contrastune.comparison.results import Record, write_results
from hear_contrastune.data.embeddings import open_embedded_task, read_split
from hear_contrastune.data.task import load_task
from hear_contrastune.embed import embed_tasks, task_dirs
from hear_contrastune.probes.hear_mlp import DEFAULT_GRID, hear_probe, test_score
from hear_contrastune.probes.knn import run_knn_probe
from hear_contrastune.probes.linear import run_linear_probe
from hear_contrastune.probes.protocol import label_matrix, score_all, score_functions
from hear_contrastune.training.config import DEFAULTS, TuneConfig
from hear_contrastune.training.loop import tune
from hear_contrastune.training.objective import Classifier


@dataclass(frozen=True)
class CompareConfig:
    """What a comparison runs. `tuning` is every tuned run's configuration; each run replaces
    its task, method and seed."""

    tasks_dir: Path
    tuning: TuneConfig = DEFAULTS
    seeds: int = 1
    grid: str = DEFAULT_GRID  # heareval's grid, for the HEAR and linear probes
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


def compare(cfg: CompareConfig, run: Path, device: str | None = None,
            say: Callable[[str], None] = lambda _: None) -> list[Record]:
    """Run (or resume) every stage; write and return results.json's records. `say` hears one
    line per stage."""
    run = Path(run)
    records = []
    for task_dir in task_dirs(Path(cfg.tasks_dir)):
        task = load_task(task_dir)
        metric = task.evaluation[0]
        for method in cfg.methods:
            if method != "frozen" and task.kfold:
                say(f"{task.name}: k-fold task, probing the frozen encoder only")
                continue
            for seed in range(1 if method == "frozen" else cfg.seeds):
                label = run_label(method, seed)
                say(f"== {task.name} / {label}")
                model = cfg.tuning.backbone
                if method != "frozen":
                    # --loss names a contrastive loss; fine-tuning takes its task's own
                    loss = cfg.tuning.loss if method == "contrastive" else "auto"
                    tune_cfg = replace(cfg.tuning, task_dir=str(task_dir), method=method,
                                       seed=seed, loss=loss)
                    model = str(tune(tune_cfg, model_dir(run, task_dir.name, method, seed),
                                     device))
                emb_dir = embed_tasks(model, task_dir, embeddings_root(run), label, device)[0]
                scores = probe(emb_dir, cfg.probes, cfg.grid)
                if method == "finetune":
                    scores[HEAD] = head_score(Path(model), emb_dir)["test_score"]
                records += [Record(task.name, method, seed, p, metric, float(s))
                            for p, s in scores.items()]
    write_results(run / RESULTS_FILE, records)
    report_md, report_html = write_report(run)
    say(f"report: {report_md}  {report_html}")
    return records

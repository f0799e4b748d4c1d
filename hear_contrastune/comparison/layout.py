"""The names, paths and vocabularies of a comparison run: the one module that knows them.

    RUN/
      models/<task folder>/<method>-seed<s>/     tuning runs (best.pt, epochs.csv, steps.csv)
      embeddings/<method>-seed<s>/<task folder>/ heareval layout + each probe's scores
      results.json                               one record per (task, method, seed, probe)
      report.md, index.html, plots/              drawn from the above (comparison.report)

`compare` writes these paths and the report reads them back through the same functions, so the
two cannot disagree on a name.
"""

import re
from pathlib import Path

METHODS = ("frozen", "finetune", "contrastive")  # also the order methods are shown in
TUNED_METHODS = ("finetune", "contrastive")  # the ones `tune` trains (training.config.METHODS)
PROBES = ("hear", "linear", "knn")
HEAD = "head"  # the fine-tuned classifier's own score, reported beside the probes
SCORES = (*PROBES, HEAD)  # every score a record can hold, in the order they are shown
TITLES = {
    "hear": "HEAR MLP probe (heareval)",
    "linear": "linear probe",
    "knn": "kNN probe",
    HEAD: "fine-tuned classifier head",
}
SHORT_TITLES = {"hear": "HEAR MLP", "linear": "linear", "knn": "kNN", HEAD: "classifier head"}

RESULTS_FILE = "results.json"
MODELS_DIR = "models"
EMBEDDINGS_DIR = "embeddings"
_LABEL = re.compile(r"^(?P<method>.+)-seed(?P<seed>\d+)$")


def run_label(method: str, seed: int) -> str:
    """The folder name of one (method, seed): `<method>-seed<seed>`."""
    return f"{method}-seed{seed}"


def parse_run_label(name: str) -> tuple[str, int] | None:
    """(method, seed) of a `run_label` folder name, or None for any other name."""
    m = _LABEL.match(name)
    return (m["method"], int(m["seed"])) if m else None


def model_dir(run: Path, task_folder: str, method: str, seed: int) -> Path:
    """Where one tuning run of a task lives."""
    return run / MODELS_DIR / task_folder / run_label(method, seed)


def embeddings_root(run: Path) -> Path:
    """The folder of every (method, seed)'s embeddings."""
    return run / EMBEDDINGS_DIR


def method_key(method: str) -> tuple[int, str]:
    """frozen, finetune, contrastive first, in that order; anything else after, by name."""
    return (METHODS.index(method) if method in METHODS else len(METHODS), method)


def score_key(probe: str) -> tuple[int, str]:
    """The probes in SCORES order; anything else after, by name."""
    return (SCORES.index(probe) if probe in SCORES else len(SCORES), probe)

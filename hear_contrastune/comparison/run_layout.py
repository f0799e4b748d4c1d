"""The names, paths and vocabularies of a comparison run: the one module that knows them.

    RUN/
      models/<task folder>/<label>/              tuning runs (best.pt, epochs.csv, steps.csv)
      embeddings/<label>/<task folder>/          heareval layout (+ each probe's scores for a
                                                 train/valid/test task)
      folds/<label>/<task folder>/<fold>/        k-fold tasks: one fold's train/valid/test view
                                                 of the embeddings, with each probe's scores
      shots/<label>/<task folder>[/<fold>]/      few-shot runs: the view with train cut to the
                                                 seed's draw (data.shots), with each probe's scores
      search/<task folder>/<method>/             `--search N`: each tuned method's search
                                                 (hear_contrastune.search), whose best.json
                                                 every run of the method on the task uses
      results.json                               one record per (task, method, seed, fold, probe)
      report.md, index.html, plots/              drawn from the above (comparison.report)

A label is `<method>-seed<s>`, and `<method>-seed<s>-<fold>` for a model tuned per fold of a
k-fold task (the frozen encoder embeds a k-fold task once for all its folds); a few-shot run
(`--shots N`: N train clips per class, drawn by the seed) has `-<N>shot` after the seed.

`compare` writes these paths and the report reads them back through the same functions, so the
two cannot disagree on a name.
"""

import re
from pathlib import Path
from typing import NamedTuple

from hear_contrastune.data.shots import ALL_SHOTS

# every method compare runs, in the order they are shown
COMPARED_METHODS = ("frozen", "finetune", "lpft", "contrastive")
FINETUNE_METHODS = ("finetune", "lpft")  # the baselines contrastive tuning is judged against
PROBES = ("hear", "linear", "logistic", "knn")  # every probe compare can run
# what it runs unless asked: the converged linear probe, not heareval's fixed-budget one
DEFAULT_PROBES = ("hear", "logistic", "knn")
HEAD = "head"  # the fine-tuned classifier's own score, reported beside the probes
SCORES = (*PROBES, HEAD)  # every score a record can hold, in the order they are shown
TITLES = {
    "hear": "HEAR MLP probe (heareval)",
    "linear": "heareval's linear probe (Adam, fixed budget)",
    "logistic": "linear probe (logistic regression, L-BFGS to convergence)",
    "knn": "kNN probe",
    HEAD: "fine-tuned classifier head",
}
SHORT_TITLES = {"hear": "HEAR MLP", "linear": "heareval linear", "logistic": "linear",
                "knn": "kNN",
                HEAD: "classifier head"}

RESULTS_FILE = "results.json"
MODELS_DIR = "models"
EMBEDDINGS_DIR = "embeddings"
FOLDS_DIR = "folds"
SHOTS_DIR = "shots"
SEARCH_DIR = "search"
_LABEL = re.compile(
    r"^(?P<method>.+?)-seed(?P<seed>\d+)(?:-(?P<shots>\d+)shot)?(?:-(?P<fold>.+))?$")


class Label(NamedTuple):
    """What a run folder's name says: method, seed, fold ("" if none), shots (0: all clips)."""

    method: str
    seed: int
    fold: str = ""
    shots: int = ALL_SHOTS


def run_label(method: str, seed: int, fold: str = "", shots: int = ALL_SHOTS) -> str:
    """The folder name of one (method, seed[, shots][, fold]) model."""
    return (f"{method}-seed{seed}" + (f"-{shots}shot" if shots else "")
            + (f"-{fold}" if fold else ""))


def parse_run_label(name: str) -> Label | None:
    """The Label of a `run_label` folder name, or None for any other name."""
    m = _LABEL.match(name)
    if m is None:
        return None
    return Label(m["method"], int(m["seed"]), m["fold"] or "", int(m["shots"] or ALL_SHOTS))


def model_dir(run: Path, task_folder: str, method: str, seed: int, fold: str = "",
              shots: int = ALL_SHOTS) -> Path:
    """Where one tuning run of a task lives."""
    return run / MODELS_DIR / task_folder / run_label(method, seed, fold, shots)


def search_dir(run: Path, task_folder: str, method: str) -> Path:
    """Where the search of one tuned method on one task lives."""
    return run / SEARCH_DIR / task_folder / method


def embeddings_root(run: Path) -> Path:
    """The folder of every model's embeddings."""
    return run / EMBEDDINGS_DIR


def fold_dir(run: Path, label: str, task_folder: str, fold: str) -> Path:
    """Where one fold's train/valid/test view of a k-fold task's embeddings lives."""
    return run / FOLDS_DIR / label / task_folder / fold


def shots_dir(run: Path, label: str, task_folder: str, fold: str = "") -> Path:
    """Where one few-shot view of a task's embeddings (of one fold, for k-fold) lives."""
    return run / SHOTS_DIR / label / task_folder / fold


def method_key(method: str) -> tuple[int, str]:
    """COMPARED_METHODS first, in that order; anything else after, by name."""
    order = COMPARED_METHODS
    return (order.index(method) if method in order else len(order), method)


def score_key(probe: str) -> tuple[int, str]:
    """The probes in SCORES order; anything else after, by name."""
    return (SCORES.index(probe) if probe in SCORES else len(SCORES), probe)

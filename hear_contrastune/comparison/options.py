"""A comparison's options, and which of them change its results.

results.json records the options of the `compare` that wrote it. Two runs' records can be
merged into one report, and a run folder's records reused by a later `compare`, only when the
runs agree on every option that changes a record's score. The options that only choose WHICH
records exist (tasks, methods, seeds, folds, shots, probes) may differ: each record of one run
is the record the other would have computed (a seed's run does not depend on how many seeds
there are, a method's on which others run, a fold's on which other folds run).
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hear_contrastune.comparison.run_layout import COMPARED_METHODS, DEFAULT_PROBES
from hear_contrastune.estimators.logistic_fit import DEFAULT_C_GRID, MAX_ITER, TOL
from hear_contrastune.probes.hear_mlp import DEFAULT_GRID
from hear_contrastune.probes.knn import DEFAULT_K_GRID
from hear_contrastune.training.config import BEFORE_OPTION, DEFAULTS, TuneConfig, unset_means


@dataclass(frozen=True)
class CompareConfig:
    """What a comparison runs. `tuning` is every tuned run's configuration; each run replaces
    its task, method and seed."""

    tasks_dir: Path
    tuning: TuneConfig = DEFAULTS
    seeds: int = 3
    grid: str = DEFAULT_GRID  # heareval's grid, for the HEAR and linear probes
    probes: tuple[str, ...] = DEFAULT_PROBES
    methods: tuple[str, ...] = COMPARED_METHODS
    folds: tuple[str, ...] = ()  # k-fold tasks: the test folds to run (names or indices); all
    shots: tuple[int, ...] = (0,)  # few-shot settings, train clips per class (0: all clips)
    # trials of `contrastune search` per tuned method and task before its runs (0: none, the
    # tuning as given); `search_fixed` names the tuning options the search must not vary
    search: int = 0
    search_fixed: tuple[str, ...] = ()


# compare's options that only select which (task, shots, method, seed, fold, probe) are run
SELECTION = ("tasks_dir", "seeds", "methods", "probes", "folds", "shots")
# tuning options each run sets for itself (and tuning.task_dir, a path: the task's content is
# checked by its key instead)
PER_RUN = tuple(f"tuning.{name}" for name in ("task_dir", "method", "seed", "fold", "shots"))


def options_doc(cfg: CompareConfig) -> dict[str, Any]:
    """The options as results.json holds them (JSON types: tuples become lists, paths
    strings), with the constants that decide a score beside them: what an unset tuning
    option means, and the probes' fixed grids and solver limits. Editing one of those (as
    setting new defaults might) makes an earlier run's records another run's, not reusable
    nor mergeable with the new ones."""
    return json.loads(json.dumps({**asdict(cfg), "constants": constants()}, default=str))


def constants() -> dict[str, Any]:
    """The code's constants that change a record's score (a results.json without them, written
    before they were recorded, is read as having today's)."""
    return {"tuning": unset_means(), "knn_k_grid": DEFAULT_K_GRID,
            "logistic": {"c_grid": DEFAULT_C_GRID, "tol": TOL, "max_iter": MAX_ITER}}


def flatten(options: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested options (the tuning, its augmentation) as {"tuning.lr": ..., ...}."""
    flat: dict[str, Any] = {}
    for name, value in options.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def result_options(options: dict[str, Any]) -> dict[str, Any]:
    """The flattened options that change a record's score, an option missing from an older
    results.json taking the value it had before it existed (training.config.BEFORE_OPTION,
    else its default: what that run ran with); `search_fixed` only counts under a search, and
    as a set (it lists the options typed on the command line)."""
    defaults = {**flatten(options_doc(CompareConfig(tasks_dir=Path()))),
                **{f"tuning.{name}": value for name, value in BEFORE_OPTION.items()}}
    flat = {**defaults, **flatten(options)}
    kept = {k: v for k, v in flat.items() if k not in SELECTION and k not in PER_RUN}
    fixed = kept.pop("search_fixed")
    if kept.get("search"):
        kept["search_fixed"] = sorted(fixed)
    return kept


def first_difference(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """The first option (by name) that changes results and differs between two results.json
    option sets, as "name (A vs B)"; None when they agree on all of them."""
    ra, rb = result_options(a), result_options(b)
    for name in sorted(ra.keys() | rb.keys()):
        if ra.get(name) != rb.get(name):
            return f"{name} ({json.dumps(ra.get(name))} vs {json.dumps(rb.get(name))})"
    return None

"""`contrastune search`: a pruned, seeded hyperparameter search on valid, with Optuna.

The tuning defaults were set on one task, and a fair comparison tunes every method with the
same effort; a grid that trains every configuration to the end is a day of CPU. Here a seeded
TPE sampler proposes configurations and a successive-halving pruner, fed each epoch's valid
selection score, stops a trial that lags the others at its rung. Only valid is read: a trial's
value is the score its selection rule kept (`done.json`), and nothing opens the test split.

    DIR/search.json      what is searched: task (by content), fold, method, seed, fixed options
    DIR/study.journal    Optuna's journal: every trial, its parameters, its epoch scores
    DIR/trials/NNNN/     each trial an ordinary `tune` run folder
    DIR/trials.csv, DIR/curves.csv, DIR/best.json, DIR/search.png    rewritten after every trial

Any number of processes (on machines sharing DIR) running the same command join one study: a
trial is asked for under a lock, so exactly `trials` finish, and each proposal is a function of
the seed and the study so far, not of the process. A trial whose process was killed is retried
with the same parameters in its own folder, so its run resumes where it stopped, keeping the
rungs it had passed (a kill neither judges finished epochs again nor leaves a copy of the
killed trial competing at its rungs: RetriedOnce).
"""

import csv
import io
import json
import logging
import math
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import optuna
from tqdm import tqdm

from hear_contrastune.atomic import atomic_path, read_json_or_none, write_json, write_text
from hear_contrastune.data.samplers import fit_batch
from hear_contrastune.data.task import load_task
from hear_contrastune.errors import UserError
from hear_contrastune.lock import exclusive
from hear_contrastune.outputs import check_output_dir
from hear_contrastune.training.build import training_clips
from hear_contrastune.training.config import (
    BATCH_SIZE,
    HEAD_LR_SCALE,
    M_PER_CLASS,
    TuneConfig,
    held_config,
)
from hear_contrastune.training.loop import tune
from hear_contrastune.training.search_space import Param, searched

log = logging.getLogger(__name__)
SEARCH_FILE, JOURNAL_FILE, TRIALS_DIR = "search.json", "study.journal", "trials"
ASK_LOCK = ".ask.lock"  # held while a process reads the study and asks for its next trial
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
# Successive halving: rungs at MIN_RESOURCE_FRACTION of the epochs, then x REDUCTION_FACTOR;
# a trial continues past a rung only in the top 1 / REDUCTION_FACTOR of the trials there.
REDUCTION_FACTOR = 3
MIN_RESOURCE_FRACTION = 0.1


@dataclass(frozen=True)
class Search:
    """One study: a base configuration (task, fold, method, seed, and the options fixed on the
    command line) and the folder it lives in."""

    base: TuneConfig
    fixed: dict  # TuneConfig field -> value, given on the command line: not searched
    out: Path
    trials: int

    @property
    def params(self) -> list[Param]:
        return searched(self.base.method, self.fixed)

    def identity(self, task_key: str) -> dict:
        """What makes two commands the same study (the trial count may grow between them)."""
        base = {k: v for k, v in json.loads(json.dumps(asdict(self.base))).items()
                if k != "task_dir"}
        return json.loads(json.dumps({  # as search.json holds it
            "task_key": task_key, "base": base, "fixed": sorted(self.fixed),
            "space": [asdict(p) for p in self.params], "reduction_factor": REDUCTION_FACTOR}))


def trial_config(search: Search, trial: optuna.trial.BaseTrial, targets) -> TuneConfig:
    """The TuneConfig a trial runs: the base, with each searched parameter suggested."""
    s = {}
    for p in search.params:
        if p.choices:
            s[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        else:
            s[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
    return with_params(search.base, s, targets)


def with_params(cfg: TuneConfig, params: dict, targets) -> TuneConfig:
    """`cfg` with search-space parameters (training.search_space, by name) set as the options
    they stand for: the backbone's rate through --lr, the head's scale times the method's own,
    the warm-up as a share of the epochs, the batch aimed for and fitted to the task's
    `targets`, the memory in batches. A trial's parameters and the tuning study's suggestion
    (benchmarks/defaults_check.py) become a run the same way."""
    changes: dict = {}
    if "backbone_lr" in params:
        if cfg.backbone_lr_scale <= 0:
            raise UserError("--backbone-lr-scale 0 freezes the backbone: fix --lr to search")
        changes["lr"] = params["backbone_lr"] / cfg.backbone_lr_scale
    if "head_lr_scale" in params:
        changes["head_lr_scale"] = params["head_lr_scale"] * HEAD_LR_SCALE[cfg.method]
    for name in ("weight_decay", "temperature"):
        if name in params:
            changes[name] = params[name]
    if "warmup_fraction" in params:
        changes["warmup_epochs"] = round(params["warmup_fraction"] * cfg.epochs, 3)
    if "batch_size" in params or "m_per_class" in params:  # aimed for, then fitted to the task
        shape = fit_batch(targets, None, None,
                          params.get("batch_size", cfg.batch_size or BATCH_SIZE),
                          params.get("m_per_class", cfg.m_per_class or M_PER_CLASS))
        changes["batch_size"], changes["m_per_class"] = shape.batch_size, shape.m
    if params.get("xbm_batches"):
        batch = changes.get("batch_size", cfg.batch_size)
        changes["xbm_size"] = params["xbm_batches"] * 2 * batch
    elif "xbm_batches" in params:
        changes["xbm_size"] = 0
    return replace(cfg, **changes)


def study_for(search: Search, task_key: str) -> optuna.Study:
    """Create DIR's study, or join it if it is this same search; refuse another search's."""
    identity = search.identity(task_key)
    held = read_json_or_none(search.out / SEARCH_FILE)
    if held is None:
        write_json(search.out / SEARCH_FILE, identity)
    else:
        differ = identity_differs(held, identity)
        if differ:
            raise UserError(f"--out {search.out}: holds another search (differs in "
                            f"{', '.join(differ)}); choose another --out")
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(search.out / JOURNAL_FILE)))
    return optuna.create_study(study_name="search", storage=storage, direction="maximize",
                               pruner=rung_pruner(search.base.epochs), load_if_exists=True)


def identity_differs(held: dict, identity: dict) -> list[str]:
    """What a recorded search (search.json) differs in from this one (`Search.identity`), a
    base option named as base.NAME; [] when they are the same study. A search begun before an
    option existed ran with its earlier value (held_config)."""
    base = {k: v for k, v in held_config(held.get("base", {})).items() if k != "task_dir"}
    differ = [k for k in identity if k != "base" and held.get(k) != identity[k]]
    differ += [f"base.{k}" for k in identity["base"] if base.get(k) != identity["base"][k]]
    return sorted(differ)


def rung_pruner(epochs: int) -> optuna.pruners.BasePruner:
    """Successive halving with rungs at MIN_RESOURCE_FRACTION of the epochs, x REDUCTION_FACTOR
    each, over the trials that did not fail."""
    return RetriedOnce(optuna.pruners.SuccessiveHalvingPruner(
        min_resource=max(1, round(MIN_RESOURCE_FRACTION * epochs)),
        reduction_factor=REDUCTION_FACTOR))


class RetriedOnce(optuna.pruners.BasePruner):
    """A pruner that sees the study without its failed trials.

    Optuna's successive halving compares a trial at a rung with every trial that reached it,
    failed ones included. A trial killed with its process fails and is retried in its folder
    (retry_orphans), which replays the folder's epochs: the killed attempt would stay among the
    rivals at every rung it reached, a copy of the retry's own score, once per kill. Leaving
    failed trials out counts each folder once; the retry carries its rungs (carry_rungs)."""

    def __init__(self, pruner: optuna.pruners.BasePruner) -> None:
        self._pruner = pruner

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return self._pruner.prune(_WithoutFailed(study), trial)


class _WithoutFailed:
    """A study whose get_trials leaves failed trials out; everything else is the study's."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def get_trials(self, deepcopy: bool = True, states=None) -> list[optuna.trial.FrozenTrial]:
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states)
                if t.state != optuna.trial.TrialState.FAIL]

    def __getattr__(self, name: str):
        return getattr(self._study, name)


def carry_rungs(study: optuna.Study, trial: optuna.Trial) -> None:
    """Give a retried trial the rungs its folder's killed attempts reached, with their scores,
    so replaying the folder's epochs does not judge them again (against rivals that came
    later: finished work would be pruned for when its process was killed). Successive halving
    keeps a trial's rungs in its system attrs (completed_rung_N), which Optuna's public API
    cannot set; the pruner itself sets them through the study's storage, and so does this."""
    folder = trial.user_attrs.get("folder")
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        if t.user_attrs.get("folder") == folder:
            for key, value in t.system_attrs.items():
                if key.startswith("completed_rung_"):
                    study._storage.set_trial_system_attr(trial._trial_id, key, value)


def proposal_sampler(seed: int, asked: int, trials: int) -> optuna.samplers.TPESampler:
    """TPE seeded by (seed, trials asked so far): a proposal depends on the study, not on which
    process asks, so two processes never draw the same random start. Random starts: a third of
    the budget, 3 to 10 trials."""
    return optuna.samplers.TPESampler(seed=seed * 100_003 + asked,
                                      n_startup_trials=min(10, max(3, trials // 3)))


def run_search(search: Search, device: str | None, workers: int,
               say: Callable[[str], None] = lambda _: None,
               written: Callable[[], None] = lambda: None) -> dict:
    """Join (or start) the study and run trials until `trials` have finished; the best.
    `written` is called after the outputs are rewritten (after every trial), for a caller that
    copies them away as they grow; it holds the ask lock, so no trial is asked or told
    meanwhile (running trials may still append their epoch scores to the journal)."""
    cfg = search.base
    task = load_task(cfg.task_dir)
    check_output_dir(search.out, "--out", [task.path])
    targets = training_clips(cfg, task).targets  # checks the base run, fits trial batches
    search.out.mkdir(parents=True, exist_ok=True)
    with exclusive(search.out, name=ASK_LOCK, wait=True):
        study = study_for(search, task.content_key())
    bar = tqdm(total=search.trials, desc="search", unit="trial")
    while True:
        with ExitStack() as owned:
            with exclusive(search.out, name=ASK_LOCK, wait=True):
                retry_orphans(search, study)
                finished = len(study.get_trials(states=FINISHED))
                running = len(study.get_trials(states=(optuna.trial.TrialState.RUNNING,)))
                bar.update(finished - bar.n)
                if finished + running >= search.trials:
                    break
                study.sampler = proposal_sampler(cfg.seed, len(study.trials), search.trials)
                trial = study.ask()
                folder = search.out / TRIALS_DIR / trial.user_attrs.get(
                    "folder", f"{trial.number:04d}")
                trial.set_user_attr("folder", folder.name)
                # held while this process runs the trial: others see it is alive
                owned.enter_context(exclusive(folder.parent, name=f".{folder.name}.lock"))
            run_trial(search, study, trial, folder, targets, device, workers, say)
        with exclusive(search.out, name=ASK_LOCK, wait=True):
            write_outputs(search, study)
            written()
    bar.close()
    with exclusive(search.out, name=ASK_LOCK, wait=True):
        best = write_outputs(search, study)
        written()
        return best


def run_trial(search: Search, study: optuna.Study, trial: optuna.Trial, folder: Path, targets,
              device: str | None, workers: int, say: Callable[[str], None]) -> None:
    """Train one trial's run, reporting each epoch's valid score to the pruner; tell the study
    how it ended. A retried trial reports the epochs its folder already holds first."""
    cfg = trial_config(search, trial, targets)
    trial.set_user_attr("config", tuning_options(json.loads(json.dumps(asdict(cfg)))))
    say(f"trial {trial.number} ({folder.name}): "
        + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in trial.params.items()))

    def on_epoch(epoch: int, score: float) -> None:
        trial.report(score, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()

    carry_rungs(study, trial)
    try:
        for epoch, score in logged_scores(folder):
            on_epoch(epoch, score)
        tune(cfg, folder, device, workers, on_epoch)
    except optuna.TrialPruned:
        trial.set_user_attr("compute_seconds", compute_seconds(folder))
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        say(f"trial {trial.number}: pruned")
        return
    except Exception:  # Ctrl-C and SIGTERM leave it running: the rerun resumes it
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    value = json.loads((folder / "done.json").read_text())["select_score"]
    trial.set_user_attr("compute_seconds", compute_seconds(folder))
    study.tell(trial, value)
    say(f"trial {trial.number}: valid {value:.4f}")


def logged_epochs(folder: Path) -> list[dict[str, str]]:
    """The rows of a trial folder's epochs.csv (none if it has none)."""
    path = folder / "epochs.csv"
    return list(csv.DictReader(io.StringIO(path.read_text()))) if path.is_file() else []


def logged_scores(folder: Path) -> list[tuple[int, float]]:
    """(epoch, valid score) of the epochs a trial's folder already finished and scored (epoch 0
    is the untuned encoder, not a rung; --select-every leaves some epochs unscored), if the run
    has a resume point."""
    if not (folder / "state.pt").exists():
        return []
    return [(int(r["epoch"]), float(r["valid_knn"])) for r in logged_epochs(folder)
            if int(r["epoch"]) > 0 and r["valid_knn"]]


def compute_seconds(folder: Path) -> float:
    """The seconds a trial's epochs trained and scored, from its log: its cost, where the
    trial's wall time (ask to tell) also counts a paused machine or a killed, resumed process."""
    return round(sum(float(r["seconds"] or 0) + float(r["select_seconds"] or 0)
                     for r in logged_epochs(folder)), 1)


def retry_orphans(search: Search, study: optuna.Study) -> None:
    """A running trial whose process is gone (its owner lock is free) failed: queue its
    parameters again, in its folder, so the next trial asked resumes it."""
    trials_dir = search.out / TRIALS_DIR
    for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
        name = t.user_attrs.get("folder", f"{t.number:04d}")
        try:
            with exclusive(trials_dir, name=f".{name}.lock"):
                pass
        except UserError:
            continue  # its process is alive
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"folder": name})
        log.info("trial %d (%s): its process ended; retrying it where it stopped", t.number, name)


def write_outputs(search: Search, study: optuna.Study) -> dict:
    """trials.csv, curves.csv, best.json and search.png from the study as it stands; the best
    (or {})."""
    trials = study.get_trials(deepcopy=False)
    names = [p.name for p in search.params]
    rows = []
    for t in trials:
        steps = sorted(t.intermediate_values)
        rows.append({"trial": t.number, "folder": t.user_attrs.get("folder", ""),
                     "state": t.state.name.lower(),
                     "value": "" if t.value is None else f"{t.value:.6f}",
                     "last_epoch": steps[-1] if steps else 0,
                     "last_score": f"{t.intermediate_values[steps[-1]]:.6f}" if steps else "",
                     "seconds": f"{t.duration.total_seconds():.1f}" if t.duration else "",
                     "compute_seconds": t.user_attrs.get("compute_seconds", ""),
                     **{n: t.params.get(n, "") for n in names}})
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["trial", "folder", "state", "value", "last_epoch",
                                              "last_score", "seconds", "compute_seconds",
                                              *names])
    writer.writeheader()
    writer.writerows(rows)
    write_text(search.out / "trials.csv", text.getvalue())
    write_curves(trials, search.out / "curves.csv")
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return {}
    best = max(complete, key=lambda t: (t.value, -t.number))
    tuning = best.user_attrs.get("config") or tuning_options(json.loads(  # journals before it
        (search.out / TRIALS_DIR / best.user_attrs["folder"] / "config.json").read_text()))
    doc = {"method": search.base.method, "trial": best.number, "valid_score": best.value,
           "params": best.params, "config": tuning,
           "budget": {"trials": len([t for t in trials if t.state in FINISHED]),
                      "complete": len(complete),
                      "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
                      # a retried trial replays its folder's epochs: count finished ones only
                      "epochs_trained": sum(max(t.intermediate_values, default=0)
                                            for t in trials if t.state in FINISHED),
                      "seconds": round(sum(t.duration.total_seconds() for t in trials
                                           if t.duration), 1),
                      "compute_seconds": round(sum(t.user_attrs.get("compute_seconds", 0)
                                                   for t in trials), 1)}}
    write_json(search.out / "best.json", doc)
    plot_search(search, study, search.out / "search.png")
    return doc


def write_curves(trials: list[optuna.trial.FrozenTrial], path: Path) -> None:
    """Every trial's valid score at each scored epoch, one row each: the learning curves (a
    trial that rose and then collapsed, one the pruner cut), kept with the journal where the
    trial folders' epochs.csv are not."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["trial", "folder", "state", "epoch", "valid_score"])
    for t in trials:
        folder, state = t.user_attrs.get("folder", ""), t.state.name.lower()
        writer.writerows([t.number, folder, state, epoch, f"{score:.6f}"]
                         for epoch, score in sorted(t.intermediate_values.items()))
    write_text(path, text.getvalue())


def tuning_options(run_cfg: dict) -> dict:
    """A run's tuning options: what best.json hands to `tune --config` (not which task, fold,
    seed, method or shots it ran). Kept in the journal too, so best.json can be written where
    the trial folders are gone (a search resumed on another machine from its journal)."""
    return {f.name: run_cfg[f.name] for f in fields(TuneConfig)
            if f.name not in ("task_dir", "fold", "seed", "method", "shots")}


def plot_search(search: Search, study: optuna.Study, path: Path) -> None:
    """Valid score per trial (pruned trials at their last score, marked), every trial's valid
    curve over its epochs (where a high learning rate rose and then collapsed shows), and each
    searched parameter's importance (fANOVA over the complete trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = study.get_trials(deepcopy=False)
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4))
    complete = [(t.number, t.value) for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [(t.number, t.intermediate_values[max(t.intermediate_values)]) for t in trials
              if t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values]
    if complete:
        left.scatter(*zip(*complete, strict=True), label="complete", color="tab:blue")
        best, running = [], -math.inf
        for n, v in sorted(complete):
            running = max(running, v)
            best.append((n, running))
        left.step(*zip(*best, strict=True), where="post", color="tab:blue", alpha=0.5,
                  label="best so far")
    if pruned:
        left.scatter(*zip(*pruned, strict=True), marker="x", color="tab:red",
                     label="pruned (last score)")
    left.set(xlabel="trial", ylabel="valid score (selection)",
             title=f"{search.base.method} on {Path(search.base.task_dir).name}")
    left.legend(loc="best")
    finished = {optuna.trial.TrialState.COMPLETE: ("tab:blue", 1.0),
                optuna.trial.TrialState.PRUNED: ("tab:red", 0.4)}
    for t in trials:
        if t.state in finished and t.intermediate_values:
            color, alpha = finished[t.state]
            middle.plot(*zip(*sorted(t.intermediate_values.items()), strict=True),
                        color=color, alpha=alpha, linewidth=1)
    middle.set(xlabel="epoch", ylabel="valid score",
               title="curves (complete blue, pruned red)")
    importances = {}
    if len(complete) >= 3:
        try:
            importances = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        except (RuntimeError, ValueError):
            importances = {}
    if importances:
        names = list(importances)[::-1]
        right.barh(names, [importances[n] for n in names], color="tab:green")
        right.set(xlabel="importance (fANOVA)", title="what mattered")
    else:
        right.text(0.5, 0.5, "importances need 3 complete trials\nwith varying parameters",
                   ha="center", va="center")
        right.set_axis_off()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)

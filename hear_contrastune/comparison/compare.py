"""`contrastune compare`: frozen vs vanilla fine-tuning vs contrastive tuning, under every probe.

For every task in a folder and every seed: the frozen encoder, `finetune`, LP-FT and
contrastive `tune` (Jaccard-weighted SupCon for multilabel tasks), each derived from one
`TuneConfig` so they share data, views, optimiser, budget and model selection; embeddings of
each; HEAR's MLP probe, the linear probe and the kNN probe on each; the fine-tuned classifiers'
own test score. With `shots`, all of it again per few-shot setting: each seed draws N train
clips per class (data.shots), the same for every method, which trains and is probed on those
alone (valid and test stay whole); the frozen encoder is then probed once per seed's draw.
Every stage is skipped when its complete output exists, so a killed or repeated run resumes
where it stopped. Before that, a step whose records results.json already holds, for these
options and this task content, with their predictions files, is not run at all
(comparison.reuse): a folder holding only those small files (a checkout of a run made on
another machine) resumes too. results.json is rewritten after every step run, marked finished
at the end. Where everything goes is comparison.run_layout's business.

The frozen encoder has no randomness of its own: it is embedded and probed once (seed 0).
A k-fold task gets one tuned model per fold and method and seed, with heareval's roles (test
fold k, valid fold k+1, train on the rest); each fold is probed on a train/valid/test view of
its own model's embeddings, and the task's score is the mean over folds, as heareval reports
it. `folds` may pick a subset for a quick run; the report then says which folds it covers.
"""

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch

from hear_contrastune.comparison.options import CompareConfig, options_doc
from hear_contrastune.comparison.report import report_is_current, write_report
from hear_contrastune.comparison.results import Record, ResultsFile, read_results, write_results
from hear_contrastune.comparison.reuse import Progress, Unit, read_progress
from hear_contrastune.comparison.run_layout import (
    EMBEDDINGS_DIR,
    FOLDS_DIR,
    HEAD,
    MODELS_DIR,
    RESULTS_FILE,
    SEARCH_DIR,
    SHOTS_DIR,
    embeddings_root,
    fold_dir,
    model_dir,
    run_label,
    search_dir,
    shots_dir,
)
from hear_contrastune.data.embeddings import fold_view, open_embedded_task, read_split
from hear_contrastune.data.hear_format import HearFolder, fold_roles
from hear_contrastune.data.loading import DEFAULT_WORKERS
from hear_contrastune.data.shots import (
    ALL_SHOTS,
    SHOTS_FILE,
    draw_train_clips,
    read_draw,
    shots_view,
    write_draw,
)
from hear_contrastune.data.task import Task, load_task
from hear_contrastune.embed import embed_tasks, task_dirs
from hear_contrastune.errors import UserError
from hear_contrastune.lock import exclusive
from hear_contrastune.outputs import check_output_dir
from hear_contrastune.probes.hear_mlp import hear_probe, test_score, valid_score
from hear_contrastune.probes.knn import run_knn_probe
from hear_contrastune.probes.linear import run_linear_probe
from hear_contrastune.probes.logistic import run_logistic_probe
from hear_contrastune.probes.protocol import label_matrix, score_all, score_functions
from hear_contrastune.search import Search, run_search
from hear_contrastune.training.build import check_tuning
from hear_contrastune.training.config import CLASSIFIER_METHODS, TuneConfig
from hear_contrastune.training.loop import tune
from hear_contrastune.training.objective import Classifier


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


class ProbeScore(NamedTuple):
    """A probe's primary test and valid scores on one embeddings folder, and where its
    per-clip test predictions are (probes.predictions)."""

    test: float
    valid: float
    predictions: Path


def run_probes(emb_task_dir: Path, probes: tuple[str, ...], grid: str) -> dict[str, ProbeScore]:
    """Each requested probe's scores and predictions for one embeddings folder (cached on
    disk)."""
    docs = {}
    if "hear" in probes:
        docs["hear"] = hear_probe(emb_task_dir, grid)
    if "linear" in probes:
        docs["linear"] = run_linear_probe([emb_task_dir], grid=grid)[0]["result"]
    if "logistic" in probes:
        docs["logistic"] = run_logistic_probe([emb_task_dir])[0]["result"]
    if "knn" in probes:
        docs["knn"] = run_knn_probe([emb_task_dir])[0]["result"]
    return {name: ProbeScore(test_score(doc), valid_score(doc),
                             Path(emb_task_dir) / doc["predictions"])
            for name, doc in docs.items()}


def scored_record(task: HearFolder, method: str, seed: int, fold: str, n_folds: int,
                  probe_name: str, score: ProbeScore | float, run: Path, shots: int = ALL_SHOTS
                  ) -> Record:
    """The Record of one score: a probe's (with its valid score and predictions file, relative
    to the run folder) or a bare test score (the classifier head's)."""
    if not isinstance(score, ProbeScore):
        return Record(task.name, method, seed, probe_name, task.evaluation[0], float(score),
                      fold, n_folds, shots)
    predictions = os.path.relpath(Path(score.predictions).resolve(), Path(run).resolve())
    return Record(task.name, method, seed, probe_name, task.evaluation[0], float(score.test),
                  fold, n_folds, shots, float(score.valid), predictions)


def compare(cfg: CompareConfig, run: Path, device: str | None = None,
            workers: int = DEFAULT_WORKERS,
            say: Callable[[str], None] = lambda _: None) -> list[Record]:
    """Run (or resume) every stage; write and return results.json's records. `say` hears one
    line per stage."""
    run = Path(run)
    tasks = task_dirs(Path(cfg.tasks_dir))
    for output in (MODELS_DIR, EMBEDDINGS_DIR, FOLDS_DIR, SHOTS_DIR, SEARCH_DIR, "plots"):
        check_output_dir(run / output, "--out", tasks)
    check_every_run(cfg, tasks)
    with exclusive(run):
        options = options_doc(cfg)
        before = None
        if (run / RESULTS_FILE).is_file():
            try:
                before = read_results(run / RESULTS_FILE)
            except UserError as e:  # compare's own output, damaged: computed again
                say(f"{e}: nothing reused from it")
        progress = read_progress(run, before, options, say)
        steps = plan(cfg, tasks)
        by_name = {s.task.name: s.task for s in steps}
        keys = {name: task.content_key() for name, task in by_name.items()}
        for name in progress.other_contents(keys):
            say(f"{run / RESULTS_FILE}: task {name}'s contents differ from those its records "
                "were computed on (content key: metadata, labels, audio bytes): none of its "
                "steps is reused")
        records = run_all(cfg, run, steps, progress, keys, device, workers, say,
                          save=lambda recs: write_results(
                              run / RESULTS_FILE, ResultsFile(recs, options, keys, False)))
        results = ResultsFile(records, options, keys, True)
        write_results(run / RESULTS_FILE, results)  # finished (a step run saved it unfinished)
        if results == before and report_is_current(run):
            # a checkout's report was drawn with the models and embeddings it lacks
            say("nothing changed since the report was written: kept (`contrastune report RUN "
                "--out DIR` draws it again)")
            return records
        report_md, report_html = write_report(run)
    say(f"report: {report_md}  {report_html}")
    return records


def check_every_run(cfg: CompareConfig, tasks: list[Path]) -> None:
    """Make every tuning run's own checks (options, folds, few-shot draws, batch shape) before
    the first stage, so a run that cannot start fails the comparison in one line now, not
    hours in."""
    tuned = [method for method in cfg.methods if method != "frozen"]
    if not tuned:
        return
    for task_dir in tasks:
        task = load_task(task_dir)
        for fold in chosen_folds(task, cfg.folds):
            for shots in cfg.shots:
                # the batch depends on the labels and a few-shot draw (a seed's), not the method
                for seed in range(cfg.seeds) if shots else [0]:
                    try:
                        check_tuning(replace(cfg.tuning, task_dir=str(task_dir), fold=fold,
                                             method=tuned[0], seed=seed, shots=shots))
                    except UserError as e:
                        where = (f" fold {fold}" if fold else "") + (
                            f" ({shots} shots, seed {seed})" if shots else "")
                        raise UserError(f"{task_dir}{where}: {e}") from None


class Step(NamedTuple):
    """One (task, shots, method, seed, fold): a tuned model (or the frozen encoder's view) and
    its probes."""

    task_dir: Path
    task: Task
    shots: int
    method: str
    seed: int
    fold: str
    n_folds: int

    @property
    def unit(self) -> Unit:
        return self.task.name, self.shots, self.method, self.seed, self.fold

    @property
    def label(self) -> str:
        return run_label(self.method, self.seed, self.fold, self.shots)


def plan(cfg: CompareConfig, tasks: list[Path]) -> list[Step]:
    """Every step of the comparison, in the order they run and results.json lists them."""
    steps = []
    for task_dir in tasks:
        task = load_task(task_dir)
        n_folds = len(fold_roles(task)) if task.kfold else 0
        for shots in cfg.shots:
            for method in cfg.methods:
                # the frozen encoder has no seed of its own; a few-shot draw has
                for seed in range(1 if method == "frozen" and not shots else cfg.seeds):
                    steps += [Step(task_dir, task, shots, method, seed, fold, n_folds)
                              for fold in chosen_folds(task, cfg.folds)]
    return steps


def probes_of(cfg: CompareConfig, step: Step) -> tuple[str, ...]:
    """The scores a step records: each probe's, and a fine-tuned classifier's own."""
    return (*cfg.probes, *([HEAD] if step.method in CLASSIFIER_METHODS else []))


def run_all(cfg: CompareConfig, run: Path, steps: list[Step], progress: Progress,
            keys: dict[str, str], device: str | None, workers: int,
            say: Callable[[str], None],
            save: Callable[[list[Record]], None]) -> list[Record]:
    """Every step, reused from results.json when `progress` holds it (comparison.reuse), else
    run with each stage skipped when its output is complete; `save` gets the records so far
    (with the held ones of steps not reached yet) after each step run. The records."""
    done: list[list[Record] | None] = [None] * len(steps)
    frozen: dict[Path, Path] = {}  # task -> its frozen embeddings, for every fold, seed, shots
    tunings: dict[tuple[Path, str], TuneConfig] = {}
    for i, step in enumerate(steps):
        kept = progress.reuse(step.unit, keys[step.task.name], probes_of(cfg, step))
        if kept is not None:
            say(f"reused from results.json: {step.task.name} / {step.label} "
                f"({', '.join(r.probe for r in kept)})")
            done[i] = kept
            continue
        if step.method == "frozen" and step.task_dir not in frozen:
            say(f"== {step.task.name} / {run_label('frozen', 0)}")
            frozen[step.task_dir] = embed_tasks(cfg.tuning.backbone, step.task_dir,
                                                embeddings_root(run), run_label("frozen", 0),
                                                device, workers, replace=True)[0]
        if step.method != "frozen" and (step.task_dir, step.method) not in tunings:
            tunings[step.task_dir, step.method] = method_tuning(
                cfg, run, step.task_dir, step.method, chosen_folds(step.task, cfg.folds)[0],
                device, workers, say)
        done[i] = run_fold(cfg, run, step, frozen.get(step.task_dir),
                           tunings.get((step.task_dir, step.method)), device, workers, say)
        save([r for s, recs in zip(steps, done, strict=True)
              for r in (recs if recs is not None
                        else progress.held(s.unit, keys[s.task.name], probes_of(cfg, s)))])
    return [r for recs in done for r in recs or []]


def method_tuning(cfg: CompareConfig, run: Path, task_dir: Path, method: str, fold: str,
                  device: str | None, workers: int, say: Callable[[str], None]) -> TuneConfig:
    """The tuning every run of `method` on this task uses: compare's own, or, with `search`,
    the configuration a search of that many trials found on valid (seed 0, the same sampler
    seed and pruner for every method; a k-fold task is searched on `fold`'s roles)."""
    # --loss names a contrastive loss; fine-tuning takes its task's own
    loss = cfg.tuning.loss if method == "contrastive" else "auto"
    base = replace(cfg.tuning, task_dir=str(task_dir), method=method, loss=loss)
    if not cfg.search:
        return base
    out = search_dir(run, task_dir.name, method)
    say(f"== {task_dir.name} / search {method}: {cfg.search} trials"
        + (f" on fold {fold}'s roles" if fold else ""))
    fixed = {name: getattr(cfg.tuning, name) for name in cfg.search_fixed}
    best = run_search(Search(replace(base, fold=fold, seed=0), fixed, out, cfg.search),
                      device, workers, say)
    if not best:
        raise UserError(f"{out}: no trial of the search finished unpruned")
    return replace(base, **{k: v for k, v in best["config"].items() if k != "augment"},
                   augment=base.augment)


def run_fold(cfg: CompareConfig, run: Path, step: Step, frozen_dir: Path | None,
             tuning: TuneConfig | None, device: str | None, workers: int,
             say: Callable[[str], None]) -> list[Record]:
    """One step: tune unless frozen (with `tuning`), embed, cut the fold's and the few-shot
    draw's view, probe; its records."""
    task_dir, method, seed, fold, shots = (step.task_dir, step.method, step.seed, step.fold,
                                           step.shots)
    model, emb_dir = cfg.tuning.backbone, frozen_dir
    if method != "frozen":
        say(f"== {step.task.name} / {step.label}")
        assert tuning is not None
        tune_cfg = replace(tuning, fold=fold, seed=seed, shots=shots)
        model = str(tune(tune_cfg, model_dir(run, task_dir.name, method, seed, fold, shots),
                         device, workers))
        emb_dir = embed_tasks(model, task_dir, embeddings_root(run), step.label, device,
                              workers, replace=True)[0]
    assert emb_dir is not None
    # the frozen embedding's fold views serve every seed; a tuned model's are its own
    view_label = run_label(method, 0) if method == "frozen" else run_label(method, seed, "",
                                                                           shots)
    probe_dir = emb_dir if not fold else fold_view(
        open_embedded_task(emb_dir), fold, fold_dir(run, view_label, task_dir.name, fold))
    if shots:
        probe_dir = shots_view(open_embedded_task(probe_dir),
                               read_draw(draw_file(run, step)), shots, seed,
                               shots_dir(run, run_label(method, seed, "", shots), task_dir.name,
                                         fold))
    scores: dict[str, ProbeScore | float] = dict(run_probes(probe_dir, cfg.probes, cfg.grid))
    if method in CLASSIFIER_METHODS:
        scores[HEAD] = head_score(Path(model), probe_dir)["test_score"]
    return [scored_record(step.task, method, seed, fold, step.n_folds, p, s, run, shots)
            for p, s in scores.items()]


def draw_file(run: Path, step: Step) -> Path:
    """A few-shot step's draw: the one its tuning run recorded, or, for the frozen encoder
    (no tuning run), one drawn here and recorded in its model folder."""
    path = model_dir(run, step.task_dir.name, step.method, step.seed, step.fold,
                     step.shots) / SHOTS_FILE
    if step.method == "frozen":
        clips, kept = draw_train_clips(step.task, step.fold, step.shots, step.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_draw(path, [clips.names[i] for i in kept], step.shots, step.seed)
    return path


def chosen_folds(task: Task, wanted: tuple[str, ...]) -> list[str]:
    """The test folds to run: all of a k-fold task's, or `wanted` (by name, e.g. fold00, or by
    index); [""] for a train/valid/test task."""
    if not task.kfold:
        return [""]
    folds = [role["test"][0] for role in fold_roles(task)]
    if not wanted:
        return folds
    chosen = []
    for w in wanted:
        name = folds[int(w)] if w.isdigit() and int(w) < len(folds) else w
        if name not in folds:
            raise UserError(f"--folds {','.join(wanted)}: {w!r} is not a fold of {task.path} "
                            f"({', '.join(folds)})")
        chosen.append(name)
    return list(dict.fromkeys(chosen))

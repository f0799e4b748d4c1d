"""`contrastune search` on a small real task: it prunes, writes a best.json that `tune --config`
runs, reads no test split, and two processes on one study finish exactly the trials asked for,
none twice."""

import csv
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from cli_here import contrastune_here
from kill import kill_once_written

import eval_tasks
from hear_contrastune.errors import UserError
from hear_contrastune.search import Search, carry_rungs, rung_pruner, study_for
from hear_contrastune.training.config import TuneConfig

ROOT = Path(__file__).resolve().parents[1]
TRIAL = ("--epochs", "2", "--select-every", "1", "--device", "cpu")  # a rung at epoch 1


def contrastune(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    return out + err


@pytest.fixture(scope="module")
def full_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return eval_tasks.build("gm-program", tmp_path_factory.mktemp("tasks"), size="small")


@pytest.fixture(scope="module")
def task(full_task: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small gm-program task without its test audio: a search must never need it."""
    task_dir = Path(shutil.copytree(full_task, tmp_path_factory.mktemp("no-test") / full_task.name))
    shutil.rmtree(task_dir / "16000" / "test")
    return task_dir


def trials(search: Path) -> list[dict]:
    return list(csv.DictReader((search / "trials.csv").open()))


def finished_here(*args: str) -> str:
    """`contrastune ARGS` in this process (cli_here): the two processes below are the separate
    processes this file needs."""
    done = contrastune_here(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_search_prunes_and_its_best_config_tunes(task, tmp_path):
    search = tmp_path / "search"
    log = finished_here("search", "--task-dir", str(task), "--out", str(search),
                        "--trials", "4", *TRIAL)
    rows = trials(search)
    assert [r["state"] for r in rows].count("pruned") >= 1, rows
    assert len(rows) == 4 and all(r["state"] in ("complete", "pruned") for r in rows)
    best = json.loads((search / "best.json").read_text())
    complete = [r for r in rows if r["state"] == "complete"]
    assert best["valid_score"] == max(float(r["value"]) for r in complete)
    assert best["budget"]["trials"] == 4 and (search / "search.png").stat().st_size > 10_000
    # a trial's cost is its logged epochs' seconds: below its wall time, above nothing
    assert all(0 < float(r["compute_seconds"]) <= float(r["seconds"]) for r in rows), rows
    assert best["budget"]["compute_seconds"] == pytest.approx(
        sum(float(r["compute_seconds"]) for r in rows), abs=0.2)
    # a pruned trial stopped at its rung: fewer epochs than the budget
    pruned = next(r for r in rows if r["state"] == "pruned")
    assert int(pruned["last_epoch"]) < 2
    # curves.csv holds each trial's scored epochs, as its own epochs.csv logged them
    curves = list(csv.DictReader((search / "curves.csv").open()))
    for r in rows:
        logged = [(int(e["epoch"]), round(float(e["valid_knn"]), 6)) for e in csv.DictReader(
            (search / "trials" / r["folder"] / "epochs.csv").open())
                  if int(e["epoch"]) > 0 and e["valid_knn"]]
        assert [(int(c["epoch"]), float(c["valid_score"])) for c in curves
                if c["trial"] == r["trial"]] == logged, r["trial"]
        assert logged[-1][0] == int(r["last_epoch"])
    assert "trial 3" in log
    run = tmp_path / "refit"
    finished_here("tune", "--config", str(search / "best.json"), "--task-dir", str(task),
                  "--out", str(run), "--epochs", "1", "--device", "cpu")
    held = json.loads((run / "config.json").read_text())
    for key in ("lr", "temperature", "weight_decay", "batch_size", "m_per_class", "xbm_size"):
        assert held[key] == best["config"][key], key
    assert held["epochs"] == 1  # the command line wins over the file
    # a second search command with other fixed options on the same folder is refused
    other = contrastune_here("search", "--task-dir", str(task), "--out", str(search),
                             "--trials", "4", "--temperature", "0.2", *TRIAL)
    assert other.returncode == 2 and "holds another search" in other.stderr

    # two processes join the same study and take it to 6 trials: exactly 6 finish, each in
    # its own folder, none trained twice
    both = [contrastune("search", "--task-dir", str(task), "--out", str(search), "--trials",
                        "6", *TRIAL) for _ in range(2)]
    for proc in both:
        finish(proc)
    rows = trials(search)
    assert len(rows) == 6 and all(r["state"] in ("complete", "pruned") for r in rows)
    assert len({r["folder"] for r in rows}) == 6
    for row in rows:
        epochs = [line.split(",")[0] for line in
                  (search / "trials" / row["folder"] / "epochs.csv").read_text().splitlines()[1:]]
        assert len(epochs) == len(set(epochs)), row  # one writer per trial folder


def test_compare_search_trains_every_seed_with_what_the_search_found(full_task, tmp_path):
    run = tmp_path / "cmp"
    finish(contrastune("compare", "--tasks-dir", str(full_task), "--out", str(run), "--methods",
                       "finetune,contrastive", "--seeds", "1", "--probes", "knn", "--search",
                       "2", "--epochs", "1", "--temperature", "0.2", "--device", "cpu"))
    for method in ("finetune", "contrastive"):
        best = json.loads((run / "search" / "gm-program" / method / "best.json").read_text())
        assert best["budget"]["trials"] == 2
        held = json.loads((run / "models" / "gm-program" / f"{method}-seed0" / "config.json")
                          .read_text())
        for key in ("lr", "head_lr_scale", "weight_decay", "warmup_epochs", "batch_size"):
            assert held[key] == best["config"][key], (method, key)
        assert "temperature" not in best["params"]  # given on the command line: fixed
    assert held["temperature"] == 0.2
    report = (run / "report.md").read_text()
    assert "## Hyperparameter search" in report and "2 (" in report


def test_a_killed_search_resumes_its_trial_where_it_stopped(task, tmp_path):
    search = tmp_path / "search"
    args = ("search", "--task-dir", str(task), "--out", str(search), "--trials", "2",
            "--epochs", "3", "--select-every", "1", "--device", "cpu")
    epochs = search / "trials" / "0000" / "epochs.csv"
    # killed while epoch 2 is scored: epoch 1 was saved and reported to the study before it
    assert kill_once_written([sys.executable, "-m", "cli", *args], ROOT, epochs,
                             holding="\n2,"), "the first trial finished before it could be killed"
    finish(contrastune(*args))
    rows = trials(search)
    assert [r["state"] for r in rows][0] == "fail"  # the killed process's trial
    assert int(rows[0]["last_epoch"]) >= 1  # it had reported epoch 1
    retried = [r for r in rows[1:] if r["folder"] == "0000"]
    assert len(retried) == 1 and retried[0]["state"] in ("complete", "pruned")
    assert {k: v for k, v in retried[0].items() if k in ("backbone_lr", "temperature")} == \
        {k: v for k, v in rows[0].items() if k in ("backbone_lr", "temperature")}
    logged = [line.split(",")[0] for line in epochs.read_text().splitlines()[1:]]
    assert logged == sorted(set(logged), key=int)  # resumed, not retrained: no epoch twice
    assert sum(r["state"] in ("complete", "pruned") for r in rows) == 2
    # the retry replays the killed attempt's epochs: they count once, in the finished trials
    best = json.loads((search / "best.json").read_text())
    assert best["budget"]["epochs_trained"] == sum(
        int(r["last_epoch"]) for r in rows if r["state"] in ("complete", "pruned"))


def judged(study: optuna.Study, folder: str, scores: dict[int, float]) -> optuna.Trial:
    """A trial in `folder` that reports these epoch scores, each judged by the pruner as
    run_trial judges them; pruned (told so) at the first epoch the pruner stops."""
    trial = study.ask()
    trial.set_user_attr("folder", folder)
    carry_rungs(study, trial)
    for epoch, score in scores.items():
        trial.report(score, epoch)
        if trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            break
    return trial


def state(study: optuna.Study, trial: optuna.Trial) -> optuna.trial.TrialState:
    return study.get_trials(deepcopy=False)[trial.number].state


def test_a_retried_trial_keeps_the_rungs_it_passed_and_its_killed_attempt_does_not_compete():
    study = optuna.create_study(direction="maximize", pruner=rung_pruner(10))  # rungs 1, 3, 9
    first = judged(study, "0000", {1: 0.5, 2: 0.55})  # alone at rung 1: goes on
    study.tell(first, state=optuna.trial.TrialState.FAIL)  # its process was killed at epoch 2
    for n in (1, 2, 3):
        assert state(study, judged(study, f"000{n}", {1: 0.9})) == optuna.trial.TrialState.RUNNING
    # the retry replays epochs 1-2: rung 1 was passed before the rivals came, so it is not
    # judged there again (it would need 0.9 now); it goes on to rung 3 as its first attempt did
    retry = judged(study, "0000", {1: 0.5, 2: 0.55, 3: 0.95})
    assert state(study, retry) == optuna.trial.TrialState.RUNNING
    # a failed trial that reached a rung is no rival there: two crashed trials at 0.99 would
    # make a newcomer at 0.9 need 0.99 (8 at the rung: the top 2 go on)
    for n in (5, 6):
        study.tell(judged(study, f"000{n}", {1: 0.99}), state=optuna.trial.TrialState.FAIL)
    newcomer = judged(study, "0007", {1: 0.9})  # among 0.5 (the retry's), 0.9 x 3: top third
    assert state(study, newcomer) == optuna.trial.TrialState.RUNNING


def test_a_search_begun_before_an_option_existed_is_joined_as_what_it_ran(tmp_path):
    """search.json written before --select-every: its trials scored every epoch."""
    base = TuneConfig(task_dir="t", method="contrastive", epochs=4)
    search = Search(replace(base, select_every=1), {}, tmp_path, trials=2)
    identity = search.identity("key")
    del identity["base"]["select_every"]
    (tmp_path / "search.json").write_text(json.dumps(identity))
    study_for(search, "key")  # joined
    with pytest.raises(UserError, match="differs in base"):
        study_for(replace(search, base=replace(base, select_every=2)), "key")


def test_the_tuning_study_resumes_on_a_new_machine_from_its_kept_journal(tmp_path):
    """The study copies each search's journal to KEEP after every trial; a machine that starts
    from KEEP alone (no OUT: no trial folders, the task rebuilt with new mtimes) keeps the
    finished trials and trains the one that was running again (asked anew, it gets the same
    parameters: a proposal is a function of the seed and the trials asked before it)."""
    out, keep = tmp_path / "out", tmp_path / "keep"
    cmd = [sys.executable, "benchmarks/tuning_study.py", "--out", str(out), "--keep", str(keep),
           "--size", "small", "--epochs", "2", "--trials", "2", "--tasks", "gm-program",
           "--methods", "contrastive"]
    search = out / "search" / "gm-program" / "contrastive"
    assert kill_once_written(cmd, ROOT, search / "trials" / "0001" / "state.pt"), \
        "the second trial finished before it could be killed"
    kept = keep / "gm-program" / "contrastive"
    first = trials(kept)
    assert [r["state"] for r in first] == ["complete"]  # copied after trial 0, before trial 1
    killed = json.loads((search / "trials" / "0001" / "config.json").read_text())
    shutil.rmtree(out)
    finish(subprocess.Popen(cmd, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE))
    rows = trials(kept)
    assert rows[0] == first[0]  # the finished trial stands, not trained again
    assert not (search / "trials" / "0000").exists()
    assert len(rows) == 2 and rows[1]["folder"] == "0001"
    again = json.loads((search / "trials" / "0001" / "config.json").read_text())
    assert {k: again[k] for k in ("lr", "temperature", "batch_size")} == \
        {k: killed[k] for k in ("lr", "temperature", "batch_size")}
    assert again["task_key"] == killed["task_key"]  # the rebuilt task: the same bytes
    assert rows[1]["state"] in ("complete", "pruned")
    assert json.loads((kept / "best.json").read_text())["budget"]["trials"] == 2
    assert "| gm-program | contrastive |" in (keep / "summary.md").read_text()

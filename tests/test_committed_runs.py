"""Comparison runs kept as their small files (results.json, predictions, report), as a long
comparison commits them one task at a time: `contrastune report` merges several into the
verdict one run over every task gives, and `compare` resumes from them without redoing a
finished step. Real compare runs on two tiny tasks."""

import fnmatch
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
import eval_tasks
from hear_contrastune.comparison.compare import CompareConfig, compare
from hear_contrastune.comparison.options import first_difference, options_doc
from hear_contrastune.comparison.report import drawn_from, write_merged_report
from hear_contrastune.comparison.results import load_results, read_results
from hear_contrastune.comparison.reuse import read_progress
from hear_contrastune.data.embeddings import PROBE_PREDICTIONS
from hear_contrastune.data.shots import ALL_SHOTS
from hear_contrastune.data.task import load_task
from hear_contrastune.errors import UserError
from hear_contrastune.probes.predictions import read_predictions
from hear_contrastune.training.config import DEFAULTS

TASKS = ("gm-program", "gm-pitch")
# "last": the tuned model, not the untuned epoch 0 that one epoch's valid kNN may prefer, so
# the methods' scores differ and the verdict has something to agree on
CFG = dict(seeds=1, probes=("knn",), methods=("frozen", "finetune", "contrastive"),
           tuning=replace(DEFAULTS, epochs=1, batch_size=8, select="last"))
# what a checkout of a committed run holds: no checkpoints, embeddings or fold views
COMMITTED = ("results.json", "report.md", "index.html", "*.npz", "*predicted-scores.json")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One compare run per task, and one over both."""
    root = tmp_path_factory.mktemp("runs")
    for task in TASKS:
        eval_tasks.build(task, root / "tasks", size="small")
    out = {}
    for name, tasks_dir in [*((t, root / "tasks" / t) for t in TASKS), ("both", root / "tasks")]:
        compare(CompareConfig(tasks_dir=tasks_dir, **CFG), root / name, device="cpu",
                workers=0)
        out[name] = root / name
    out["tasks"] = root / "tasks"
    return out


def section(md: str, title: str) -> str:
    """A report section: from its `## title` heading to the next `## `."""
    return re.search(rf"^## {re.escape(title)}.*?(?=^## )", md, re.S | re.M).group(0)


def test_report_of_two_runs_gives_the_verdict_of_one_run_over_both(runs, tmp_path):
    md, page = write_merged_report([runs[t] for t in TASKS], tmp_path / "merged")
    merged, single = md.read_text(), (runs["both"] / "report.md").read_text()
    verdict = section(single, "Verdict")
    assert section(merged, "Verdict") == verdict
    assert section(merged, "Probe scores") == section(single, "Probe scores")
    assert all(t in verdict for t in TASKS)
    assert re.search(r"[+-]0\.\d*[1-9]", verdict)  # differences to agree on, not all zero
    assert "Merged from 2 compare runs" in merged and page.is_file()
    # the predictions are read where each run keeps them: the report folder has none
    assert not list((tmp_path / "merged").rglob("*predictions.npz"))


def test_report_merges_runs_differing_only_in_what_they_select(runs, tmp_path):
    """A copy of a run that says it ran more seeds and another probe list holds the same
    records: merged with the original, each record is taken once."""
    other = tmp_path / "other"
    shutil.copytree(runs["gm-program"], other)
    doc = json.loads((other / "results.json").read_text())
    doc["options"].update(seeds=3, probes=["knn", "logistic"], tasks_dir="elsewhere")
    (other / "results.json").write_text(json.dumps(doc))
    md, _ = write_merged_report([runs["gm-program"], other], tmp_path / "merged")
    assert section(md.read_text(), "Verdict") == section(
        (runs["gm-program"] / "report.md").read_text(), "Verdict")


def edited(run: Path, tmp_path: Path, edit) -> Path:
    """A copy of `run` whose results.json `edit` changed."""
    copy = tmp_path / f"edited-{len(list(tmp_path.iterdir()))}"
    shutil.copytree(run, copy)
    doc = json.loads((copy / "results.json").read_text())
    edit(doc)
    (copy / "results.json").write_text(json.dumps(doc))
    return copy


def test_report_refuses_what_cannot_be_merged_in_one_line(runs, tmp_path):
    a, b = runs["gm-program"], runs["gm-pitch"]
    out = tmp_path / "out"
    cases = [  # (run, edit of a copy of it, what the one line names)
        (a, lambda d: d["options"]["tuning"].update(lr=1e-3), "tuning.lr"),
        (a, lambda d: d["options"]["tuning"]["augment"].update(speed=0.0),
         "tuning.augment.speed"),
        (a, lambda d: d["options"].update(grid="fast"), "grid"),
        # a constant an unset option resolves to, edited between runs (new defaults)
        (a, lambda d: d["options"]["constants"]["tuning"].update(batch_size=128),
         "constants.tuning.batch_size"),
        (a, lambda d: d.update(finished=False), "has not finished"),
        (b, lambda d: d["task_keys"].update({"gm-pitch": "sha256:0"}), "other contents"),
        (a, lambda d: d["records"][0].update(score=d["records"][0]["score"] + 0.5),
         "scored otherwise"),
    ]
    for run, edit, message in cases:
        with pytest.raises(UserError, match=message):
            write_merged_report([run, edited(run, tmp_path, edit)], out)
    with pytest.raises(UserError, match="given twice"):
        write_merged_report([a, b, a], out)
    lost = edited(a, tmp_path, lambda d: None)
    next(lost.rglob("*predictions.npz")).unlink()  # a chunk committed without its .npz
    with pytest.raises(UserError, match="missing, the predictions of task"):
        write_merged_report([lost, b], out)
    for bad_out in (a, a / "sub", runs["both"]):  # an input, inside one, another run
        with pytest.raises(UserError, match="--out"):
            write_merged_report([a, b], bad_out)
    assert not out.exists() and not (a / "sub").exists()
    result = CliRunner().invoke(cli.main, ["report", str(a), str(edited(
        b, tmp_path, lambda d: d["options"]["tuning"].update(epochs=2))), "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()
    assert result.output.count("\n") == 1 and "tuning.epochs (1 vs 2)" in result.output
    # a folder holding the runs in subfolders may take the report, as docs/suite-verdict does
    assert write_merged_report([a, b], a.parent)[0] == a.parent / "report.md"


def checkout(run: Path, dest: Path) -> Path:
    """Only the files a commit of `run` keeps (COMMITTED), in their places."""
    for pattern in COMMITTED:
        for path in run.rglob(pattern):
            (dest / path.relative_to(run)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / path.relative_to(run))
    return dest


def test_compare_resumes_from_committed_files_without_redoing_a_step(runs, tmp_path):
    run = checkout(runs["gm-program"], tmp_path / "checkout")
    assert not (run / "models").exists() and not list(run.rglob("*.embeddings.npy"))
    cfg = CompareConfig(tasks_dir=runs["tasks"] / "gm-program", **CFG)
    said: list[str] = []
    records = compare(cfg, run, device="cpu", workers=0, say=said.append)
    assert records == load_results(runs["gm-program"] / "results.json")
    assert not (run / "models").exists() and not list(run.rglob("*.embeddings.npy"))
    reused = [line for line in said if line.startswith("reused from results.json")]
    assert len(reused) == 3 and not [line for line in said if line.startswith("==")]
    assert json.loads((run / "results.json").read_text())["finished"] is True

    # a subset of the methods (a selection) reuses too; results.json then holds that subset
    fewer = replace(cfg, methods=("frozen", "contrastive"))
    assert {r.method for r in compare(fewer, run, device="cpu", workers=0)} == {
        "frozen", "contrastive"}
    assert not (run / "models").exists()

    # another option, or other task contents, reuse nothing
    held = options_doc(cfg)
    said.clear()
    other = options_doc(replace(cfg, tuning=replace(cfg.tuning, epochs=2)))
    assert read_progress(run, read_results(run / "results.json"), other,
                         said.append).records == {}
    assert "tuning.epochs (1 vs 2)" in said[0]
    progress = read_progress(run, read_results(run / "results.json"), held)
    unit = ("gm-program", 0, "contrastive", 0, "")
    key = progress.task_keys["gm-program"]
    assert progress.reuse(unit, key, ("knn",)) is not None
    assert progress.reuse(unit, "sha256:other", ("knn",)) is None
    assert progress.reuse(unit, key, ("knn", "logistic")) is None  # a probe not run yet

    # a step whose predictions file is gone runs again (here the frozen encoder's, cheap), in
    # a folder that kept the embeddings' model file but not the embeddings: embedded again
    frozen = run / "embeddings" / "frozen-seed0" / "gm-program"
    for npz in frozen.glob("*.npz"):
        npz.unlink()
    shutil.copy2(runs["gm-program"] / frozen.relative_to(run) / "embedding-model.json", frozen)
    said.clear()
    again = compare(fewer, run, device="cpu", workers=0, say=said.append)
    assert "== gm-program / frozen-seed0" in said
    assert [r.score for r in again] == [r.score for r in records if r.method != "finetune"]
    assert not (run / "models").exists()
    assert json.loads((run / "results.json").read_text())["finished"] is True
    assert (frozen / "train.embeddings.npy").is_file()

    # a damaged results.json is compare's own output: said, and the steps run again
    (run / "results.json").write_text("{not json")
    said.clear()
    frozen_only = compare(replace(cfg, methods=("frozen",)), run, device="cpu", workers=0,
                          say=said.append)
    assert "not valid JSON" in said[0] and "== gm-program / frozen-seed0" in said
    assert frozen_only == [r for r in records if r.method == "frozen"]


def test_a_report_older_than_its_results_is_drawn_again(runs, tmp_path):
    """A compare killed between writing its finished results.json and its report leaves the
    report of an earlier state beside them: the rerun draws it again, where a report drawn from
    these very results is kept (a checkout's report has the plots its models made)."""
    run = checkout(runs["gm-program"], tmp_path / "checkout")
    cfg = CompareConfig(tasks_dir=runs["tasks"] / "gm-program", **CFG)
    md, mark = run / "report.md", drawn_from(run / "results.json")
    assert md.read_text().rstrip().endswith(mark)
    said: list[str] = []
    compare(cfg, run, device="cpu", workers=0, say=said.append)
    assert any(line.startswith("nothing changed since the report") for line in said)

    md.write_text(md.read_text().replace(mark, "<!-- drawn from results.json sha256:0 -->"))
    said.clear()
    compare(cfg, run, device="cpu", workers=0, say=said.append)
    assert not any(line.startswith("nothing changed since the report") for line in said)
    assert md.read_text().rstrip().endswith(mark)


def test_a_few_shot_rerun_of_a_checkout_keeps_what_its_reused_records_point_to(runs, tmp_path):
    """The frozen encoder's embeddings serve every shots setting: a checkout rerun with more
    shots embeds them again for the new setting, and the all-clips records it reused keep
    their predictions files (they were replaced with the folder once), in either order."""
    held = [r for r in load_results(runs["gm-program"] / "results.json") if r.method == "frozen"]
    for shots in [(4, ALL_SHOTS), (ALL_SHOTS, 4)]:
        run = checkout(runs["gm-program"], tmp_path / f"checkout-{shots[0]}")
        cfg = CompareConfig(tasks_dir=runs["tasks"] / "gm-program",
                            **{**CFG, "methods": ("frozen",)}, shots=shots)
        said: list[str] = []
        records = compare(cfg, run, device="cpu", workers=0, say=said.append)
        assert [r for r in records if r.shots == ALL_SHOTS] == held
        assert [line for line in said if line.startswith("reused from results.json")]
        assert {r.shots for r in records} == {4, ALL_SHOTS}
        for r in records:
            read_predictions(run / r.predictions)  # every record's file is there and reads
        assert (run / "embeddings" / "frozen-seed0" / "gm-program" /
                "train.embeddings.npy").is_file()  # embedded again, for 4 shots


def test_a_task_with_other_contents_is_said_to_run_again(runs, tmp_path):
    """A checkout resumed where the task was built otherwise (another espeak-ng, say) reuses
    none of that task's steps, and says so rather than retraining in silence."""
    run = edited(runs["gm-program"], tmp_path,
                 lambda d: d["task_keys"].update({"gm-program": "sha256:0"}))
    said: list[str] = []
    compare(CompareConfig(tasks_dir=runs["tasks"] / "gm-program",
                          **{**CFG, "methods": ("frozen",)}), run, device="cpu", workers=0,
            say=said.append)
    assert [line for line in said if "task gm-program's contents differ" in line]
    assert "== gm-program / frozen-seed0" in said


def test_a_run_cut_short_resumes_elsewhere_from_its_committed_files(runs, tmp_path):
    """results.json is rewritten after every step: a run stopped before its last step,
    carried over as committed files only, runs just that step, and gives the same records as
    the run that was never stopped."""
    cfg = CompareConfig(tasks_dir=runs["tasks"] / "gm-program", **CFG)

    def stop_at_contrastive(line: str) -> None:
        if line == "== gm-program / contrastive-seed0":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compare(cfg, tmp_path / "cut", device="cpu", workers=0, say=stop_at_contrastive)
    doc = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert doc["finished"] is False
    assert {r["method"] for r in doc["records"]} == {"frozen", "finetune"}
    with pytest.raises(UserError, match="has not finished"):
        write_merged_report([tmp_path / "cut"], tmp_path / "report")

    run = checkout(tmp_path / "cut", tmp_path / "checkout")
    said: list[str] = []
    records = compare(cfg, run, device="cpu", workers=0, say=said.append)
    assert [line for line in said if line.startswith("==")] == [
        "== gm-program / contrastive-seed0"]
    assert [p.name for p in (run / "models" / "gm-program").iterdir()] == ["contrastive-seed0"]
    assert records == load_results(runs["gm-program"] / "results.json")


def test_content_key_is_the_same_for_a_rebuilt_task_and_changes_with_its_audio(tmp_path):
    """A task rebuilt elsewhere (new paths, new mtimes) keeps its key, so a checkout's
    records are reused there; one changed audio sample does not."""
    a = load_task(eval_tasks.build("gm-program", tmp_path / "a", size="small"))
    b_dir = eval_tasks.build("gm-program", tmp_path / "b", size="small")
    assert a.content_key() == load_task(b_dir).content_key()
    wav = b_dir / "16000" / "train" / load_task(b_dir).examples("train")[0][0]
    data = wav.read_bytes()
    wav.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert a.content_key() != load_task(b_dir).content_key()


def test_an_older_results_json_is_read_as_what_it_ran():
    """results.json written before --select-every: its runs scored every epoch."""
    now = options_doc(CompareConfig(tasks_dir=Path()))
    older = json.loads(json.dumps(now))
    del older["tuning"]["select_every"]
    assert first_difference(older, now) == "tuning.select_every (1 vs 2)"
    now["tuning"]["select_every"] = 1
    assert first_difference(older, now) is None
    del older["constants"]  # written before the constants were recorded: today's
    assert first_difference(older, now) is None


def test_every_probes_predictions_file_is_one_an_embeddings_folder_carries():
    from hear_contrastune.probes import hear_mlp, knn, linear, logistic

    names = [m.PREDICTIONS_NAME for m in (hear_mlp, knn, linear, logistic)]
    assert all(fnmatch.fnmatch(name, PROBE_PREDICTIONS) for name in names), names

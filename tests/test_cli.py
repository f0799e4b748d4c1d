"""User mistakes at the command line: one line on stderr naming the problem, exit status 2,
no traceback, and no output that looks complete. `tune` and `embed` are each run once as a
fresh process, as a user runs them; the other cases run the same command in this process."""

import json
import os
import subprocess
import sys

import pytest
import soundfile as sf
from cli_here import contrastune_here

import eval_tasks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def contrastune_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True,
                          text=True)


contrastune = contrastune_here


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return eval_tasks.build("gm-program", tmp_path_factory.mktemp("tasks"), size="small")


def test_task_dir_without_metadata(tmp_path):
    out = tmp_path / "run"
    result = contrastune_process("tune", "--task-dir", str(tmp_path), "--out", str(out))
    assert_one_line_error(result, "task_metadata.json")
    assert not out.exists()


def test_label_missing_from_the_vocabulary(task, tmp_path):
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(task), str(broken)], check=True)
    split = json.loads((broken / "train.json").read_text())
    split[next(iter(split))] = ["Kazoo"]
    (broken / "train.json").write_text(json.dumps(split))
    assert_one_line_error(contrastune("tune", "--task-dir", str(broken), "--out",
                                      str(tmp_path / "run")), "train.json", "Kazoo")


def test_wav_at_the_wrong_rate(task, tmp_path):
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(task), str(broken)], check=True)
    wav = next((broken / "16000" / "valid").glob("*.wav"))
    audio, _ = sf.read(wav)
    sf.write(wav, audio, 22050)
    out = tmp_path / "emb"
    result = contrastune_process("embed", "--model", "resemblyzer", "--tasks-dir", str(broken),
                                 "--out", str(out))
    assert_one_line_error(result, wav.name, "22050")
    assert not (out / "resemblyzer" / "broken").exists()  # no half-written task folder


def test_unreadable_checkpoint_and_unknown_backbone(tmp_path, task):
    bad = tmp_path / "best.pt"
    bad.write_text("not a checkpoint")
    assert_one_line_error(contrastune("embed", "--model", str(bad), "--tasks-dir", str(task)),
                          "best.pt", "not a readable checkpoint")
    assert_one_line_error(contrastune("tune", "--task-dir", str(task), "--out",
                                      str(tmp_path / "r"), "--backbone", "wav2vec9"), "wav2vec9")


def test_output_dir_holding_another_run(task, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"task_dir": "elsewhere", "lr": 1.0}))
    assert_one_line_error(contrastune("tune", "--task-dir", str(task), "--out", str(run),
                                      "--batch-size", "8", "--m-per-class", "2"),
                          "already holds a different run")

"""What a user can get wrong, and what the tool must never do: mix stale results with new ones,
run code from a file, delete an input, or leave an output that looks complete.

Each case is run as the user would, through the `contrastune` command where it has one."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import eval_tasks
import hear_contrastune
from hear_contrastune.data.embeddings import open_embedded_task, read_split
from hear_contrastune.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SMALL_RUN = ("--epochs", "1", "--batch-size", "8", "--m-per-class", "2", "--device", "cpu")


def contrastune(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True,
                          text=True, **kw)


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    for needle in needles:
        assert needle in line, line
    return line


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return eval_tasks.build("gm-program", tmp_path_factory.mktemp("tasks"), size="small")


@pytest.fixture
def task(built: Path, tmp_path: Path) -> Path:
    """A private copy of the small task that a test may edit."""
    return Path(shutil.copytree(built, tmp_path / "tasks" / "gm-program"))


def relabel_a_clip(task_dir: Path) -> None:
    """Edit the task as a re-import would: one valid clip gets another class."""
    split = json.loads((task_dir / "valid.json").read_text())
    first = next(iter(split))
    split[first] = ["Violin"] if split[first] != ["Violin"] else ["Flute"]
    (task_dir / "valid.json").write_text(json.dumps(split))


def test_tune_resumes_a_moved_task_but_refuses_an_edited_one(task, tmp_path):
    run = tmp_path / "run"
    args = ("tune", "--task-dir", str(task), "--out", str(run), *SMALL_RUN)
    assert contrastune(*args).returncode == 0
    # the same contents at another path (a moved or copied task folder) are the same run
    moved = shutil.copytree(task, tmp_path / "elsewhere" / "gm-program")  # keeps mtimes
    again = contrastune("tune", "--task-dir", str(moved), "--out", str(run), *SMALL_RUN)
    assert again.returncode == 0 and "best checkpoint" in again.stdout
    relabel_a_clip(task)
    one_line_error(contrastune(*args), str(run), "other task contents")


def test_embed_embeds_again_when_the_task_changes(task, tmp_path):
    out = tmp_path / "emb"
    args = ("embed", "--model", "resemblyzer", "--tasks-dir", str(task.parent), "--out", str(out))
    assert contrastune(*args).returncode == 0
    folder = out / "resemblyzer" / "gm-program"
    before = read_split(open_embedded_task(folder), "valid")
    # a new class, and one valid clip moved to it (3 -> more classes, as a re-import would)
    (task / "labelvocabulary.csv").write_text(
        (task / "labelvocabulary.csv").read_text() + "4,Kazoo\n")
    split = json.loads((task / "valid.json").read_text())
    split[next(iter(split))] = ["Kazoo"]
    (task / "valid.json").write_text(json.dumps(split))
    assert contrastune(*args).returncode == 0
    after_task = open_embedded_task(folder)
    _, labels = read_split(after_task, "valid")
    assert "Kazoo" in after_task.vocabulary and ["Kazoo"] in labels
    assert labels != before[1]


def test_embed_refuses_to_overwrite_its_input(task, tmp_path):
    wavs = sorted((task / "16000").rglob("*.wav"))
    # tasks dir tasks/, output named so that OUT/NAME/<task> is the task folder itself
    result = contrastune("embed", "--model", "resemblyzer", "--tasks-dir", str(task),
                         "--out", str(task.parent.parent), "--name", "tasks")
    one_line_error(result, "overlaps the input")
    assert sorted((task / "16000").rglob("*.wav")) == wavs


def test_outputs_that_cannot_be_written_fail_before_any_work(task, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    one_line_error(contrastune("tune", "--task-dir", str(task), "--out", str(a_file),
                               *SMALL_RUN), "exists and is not a directory")
    one_line_error(contrastune("embed", "--model", "resemblyzer", "--tasks-dir", str(task),
                               "--out", str(a_file / "below")), "not writable")
    assert a_file.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder(task, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    one_line_error(contrastune("tune", "--task-dir", str(task), "--out", str(locked / "run"),
                               *SMALL_RUN), "not writable")


def test_a_full_disk_is_one_line_and_the_rerun_recovers(task, tmp_path):
    out = tmp_path / "emb"
    cmd = [sys.executable, "-m", "cli", "embed", "--model", "resemblyzer", "--tasks-dir",
           str(task), "--out", str(out)]
    full = subprocess.run(["bash", "-c", 'ulimit -f 8 && exec "$@"', "_", *cmd], cwd=ROOT,
                          capture_output=True, text=True)  # 8 KiB per file at most
    one_line_error(full, "resume")
    assert not (out / "resemblyzer" / "gm-program").exists()  # nothing that looks complete
    assert subprocess.run(cmd, cwd=ROOT, capture_output=True).returncode == 0
    assert (out / "resemblyzer" / "gm-program" / "embedding-model.json").is_file()


def test_invalid_options_write_nothing_and_the_corrected_command_runs(task, tmp_path):
    run = tmp_path / "run"
    one_line_error(contrastune("tune", "--task-dir", str(task), "--out", str(run),
                               "--batch-size", "4", "--m-per-class", "4"), "one class per batch")
    one_line_error(contrastune("tune", "--task-dir", str(task), "--out", str(run),
                               "--backbone", "nonsense"), "nonsense")
    assert not run.exists()
    assert contrastune("tune", "--task-dir", str(task), "--out", str(run),
                       *SMALL_RUN).returncode == 0


def test_an_empty_split_is_one_line_everywhere(task, tmp_path):
    (task / "valid.json").write_text("{}")
    check = contrastune("tasks", "check", str(task))
    assert check.returncode == 2 and "valid.json: lists no clips" in check.stdout
    one_line_error(contrastune("tune", "--task-dir", str(task), "--out", str(tmp_path / "r"),
                               *SMALL_RUN), "valid.json", "lists no clips")
    one_line_error(contrastune("embed", "--model", "resemblyzer", "--tasks-dir", str(task),
                               "--out", str(tmp_path / "e")), "valid.json", "lists no clips")


class Payload:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_crafted_resume_state_is_refused_without_running_it(task, tmp_path):
    run, marker = tmp_path / "run", tmp_path / "ran"
    args = ("tune", "--task-dir", str(task), "--out", str(run), "--epochs", "2",
            "--batch-size", "8", "--m-per-class", "2", "--device", "cpu")
    assert contrastune(*args).returncode == 0
    (run / "done.json").unlink()
    torch.save({"backbone": Payload(marker)}, run / "state.pt")
    one_line_error(contrastune(*args), "state.pt", "not a resume state")
    assert not marker.exists()


def test_crafted_labels_are_refused_without_running_them(tmp_path):
    from probe_fixtures import multiclass_task

    task_dir = multiclass_task(tmp_path / "t", {"train": 8, "valid": 4, "test": 4})
    marker = tmp_path / "ran"
    (task_dir / "test.target-labels.pkl").write_bytes(pickle.dumps([Payload(marker)] * 4))
    result = contrastune("knn-probe", str(task_dir))
    one_line_error(result, "test.target-labels.pkl", "refused without running it")
    assert not marker.exists()
    with pytest.raises(UserError):
        read_split(open_embedded_task(task_dir), "test")
    assert not marker.exists()


def test_hear_api_input_follows_the_spec(tone_batch):
    model = hear_contrastune.load_model("resemblyzer")
    audio = torch.from_numpy(tone_batch)
    pcm = (audio * 32767).round().to(torch.int16)
    torch.testing.assert_close(hear_contrastune.get_scene_embeddings(pcm, model),
                               hear_contrastune.get_scene_embeddings(pcm / 32768.0, model))
    assert hear_contrastune.get_scene_embeddings(audio[:0], model).shape == (0, 256)
    bad = audio.clone()
    bad[1, 100] = float("nan")
    for audio_in, message in ((bad, "NaN or inf"), (audio[:, :0], "0 samples"),
                              (audio.to(torch.int8), "must be float")):
        with pytest.raises(ValueError, match=message):
            hear_contrastune.get_scene_embeddings(audio_in, model)


def test_sigterm_ends_the_heareval_child(task, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "cli", "compare", "--tasks-dir",
                             str(task.parent), "--out", str(tmp_path / "run"), "--methods",
                             "frozen", "--probes", "hear", "--grid", "faster"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = None
    deadline = time.time() + 120
    while child is None and time.time() < deadline and proc.poll() is None:
        child = next((pid for pid in _children(proc.pid)
                      if b"hear_contrastune.probes.hear_mlp" in _cmdline(pid)), None)
        time.sleep(0.2)
    assert child is not None, "our heareval runner child never started"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    for _ in range(50):
        if not Path(f"/proc/{child}").exists() or b"Z" in _state(child):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the heareval runner outlived the killed compare")
    assert proc.returncode != 0


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return b"Z"


def test_wav_written_as_float_with_nan_is_not_embedded(task, tmp_path):
    wav = next((task / "16000" / "test").glob("*.wav"))
    audio, rate = sf.read(str(wav), dtype="float32")
    audio[10] = np.nan
    sf.write(str(wav), audio, rate, subtype="FLOAT")
    result = contrastune("embed", "--model", "resemblyzer", "--tasks-dir", str(task),
                         "--out", str(tmp_path / "e"))
    one_line_error(result, "NaN or inf")

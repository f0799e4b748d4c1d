"""What a user can get wrong, and what the tool must never do: mix stale results with new ones,
run code from a file, delete an input, or leave an output that looks complete.

Each case is run as the user would, through the `contrastune` command where it has one: in this
process (cli_here) unless only a separate process shows it (a signal, a ulimit, a lock another
process holds); `tasks import`, `tasks check` and `knn-probe` keep one subprocess run each."""

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
from cli_here import contrastune_here

import eval_tasks
import hear_contrastune
from hear_contrastune.data.embeddings import open_embedded_task, read_split
from hear_contrastune.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SMALL_RUN = ("--epochs", "1", "--batch-size", "8", "--m-per-class", "2", "--device", "cpu")


def contrastune_process(*args: str, **kw) -> subprocess.CompletedProcess:
    """`contrastune ARGS` as a fresh process: for what only a process shows."""
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True,
                          text=True, **kw)


contrastune = contrastune_here


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
    check = contrastune_process("tasks", "check", str(task))
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
    result = contrastune_process("knn-probe", str(task_dir))
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


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` and its bytes: to show that a command changed no input."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def tone_folder(root: Path, classes: int, per_class: int) -> Path:
    """A folder of class folders of 1 s tones (a pitch per class, a random timbre per clip):
    the `tasks import` input of a small task with that many classes."""
    rng = np.random.default_rng(classes)
    t = np.arange(16000) / 16000
    for c in range(classes):
        (root / f"c{c:02d}").mkdir(parents=True)
        for k in range(per_class):
            f0 = 150 * 2 ** (c / 4)
            tone = sum(rng.uniform(0.2, 1) * np.sin(2 * np.pi * f0 * h * t) / h
                       for h in (1, 2, 3))
            clip = 0.3 * tone * np.exp(-rng.uniform(1, 4) * t) + 0.01 * rng.standard_normal(t.size)
            sf.write(str(root / f"c{c:02d}" / f"n{k}.wav"), clip.astype(np.float32), 16000)
    return root


@pytest.fixture(scope="module")
def few_class_tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Imported tasks of 4, 10 and 15 classes (7 clips each: 5 train, 1 valid, 1 test)."""
    tasks = tmp_path_factory.mktemp("few-class")
    for classes in (4, 10, 15):
        source = tone_folder(tmp_path_factory.mktemp("src") / "src", classes, 7)
        result = contrastune("tasks", "import", str(source), "--out", str(tasks),
                             "--name", f"tones{classes}")
        assert result.returncode == 0, result.stderr[-2000:]
    return tasks


def test_compare_defaults_fit_the_batch_to_every_task(few_class_tasks, tmp_path):
    """Default batch options on 4-, 10- and 15-class tasks: compare runs, each run's log says
    how its batches were made; explicit options that cannot work stop it before any stage."""
    run = tmp_path / "run"
    result = contrastune_process("compare", "--tasks-dir", str(few_class_tasks), "--out",
                                 str(run), "--epochs", "1", "--seeds", "1", "--methods",
                                 "contrastive", "--probes", "knn", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    for note in ("batches of 20 clips: 5 from each of the 4 classes",
                 "batches of 50 clips: 5 from each of the 10 classes",
                 "batches of 60 clips: 4 from each of the 15 classes"):
        assert note in result.stderr, note
    records = json.loads((run / "results.json").read_text())["records"]
    assert {r["task"] for r in records} == {"tones4", "tones10", "tones15"}
    before = snapshot(few_class_tasks)
    refused = tmp_path / "refused"
    one_line_error(contrastune("compare", "--tasks-dir", str(few_class_tasks), "--out",
                               str(refused), "--epochs", "1", "--batch-size", "64",
                               "--m-per-class", "4", "--device", "cpu"),
                   str(few_class_tasks / "tones10"), "--batch-size 64 is larger than the 50")
    one_line_error(contrastune("compare", "--tasks-dir", str(few_class_tasks / "tones15"),
                               "--out", str(refused), "--batch-size", "64", "--m-per-class",
                               "4", "--methods", "frozen,contrastive", "--device", "cpu"),
                   "m=4 clips × 15 classes cannot fill a batch of 64")
    assert not refused.exists() and snapshot(few_class_tasks) == before


@pytest.mark.parametrize("clip", ["../../../../etc/passwd", "/etc/passwd", "OUTSIDE",
                                  "../valid/VALID"])
def test_clip_names_stay_inside_their_split(task, tmp_path, clip):
    """A train.json key naming a file outside the task, or a valid clip, is refused by every
    command in one line naming the file and the key, before any output."""
    outside = tmp_path / "outside.wav"  # a real wav elsewhere on the machine
    shutil.copy(next((task / "16000" / "test").glob("*.wav")), outside)
    valid_clip = next(iter(json.loads((task / "valid.json").read_text())))
    clip = clip.replace("OUTSIDE", str(outside)).replace("VALID", valid_clip)
    split = json.loads((task / "train.json").read_text())
    split[clip] = split.pop(next(iter(split)))
    (task / "train.json").write_text(json.dumps(split))
    before = snapshot(task)
    check = contrastune("tasks", "check", str(task))
    assert check.returncode == 2 and f"train.json: clip {clip!r} is not a file inside" in \
        check.stdout
    for args in (("tune", "--task-dir", str(task), "--out", str(tmp_path / "run"), *SMALL_RUN),
                 ("embed", "--model", "resemblyzer", "--tasks-dir", str(task), "--out",
                  str(tmp_path / "emb"))):
        one_line_error(contrastune(*args), str(task / "train.json"), repr(clip))
    assert not (tmp_path / "run").exists() and not (tmp_path / "emb").exists()
    assert snapshot(task) == before


def test_a_quoted_label_works_and_an_unquoted_comma_is_refused(task, tmp_path):
    vocab = task / "labelvocabulary.csv"
    quoted = vocab.read_text().replace(",Violin\n", ',"Violin, solo"\n')
    for split in ("train", "valid", "test"):
        path = task / f"{split}.json"
        path.write_text(path.read_text().replace('"Violin"', '"Violin, solo"'))
    vocab.write_text(quoted)
    check = contrastune("tasks", "check", str(task))
    assert check.returncode == 0, check.stdout
    out = tmp_path / "emb"
    assert contrastune("embed", "--model", "resemblyzer", "--tasks-dir", str(task), "--out",
                       str(out)).returncode == 0
    assert "Violin, solo" in open_embedded_task(out / "resemblyzer" / "gm-program").vocabulary
    vocab.write_text(quoted.replace('"Violin, solo"', "Violin, solo"))  # as pandas shifts it
    check = contrastune("tasks", "check", str(task))
    assert check.returncode == 2 and "labelvocabulary.csv: row" in check.stdout
    one_line_error(contrastune("tune", "--task-dir", str(task), "--out", str(tmp_path / "run"),
                               *SMALL_RUN), "labelvocabulary.csv", "3 fields")
    assert not (tmp_path / "run").exists()


HOLD = """
import sys, time
from pathlib import Path
from hear_contrastune.lock import exclusive
with exclusive(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def test_one_writer_per_folder_and_a_killed_holder_blocks_nothing(task, tmp_path):
    """While another process holds a run, compare or embeddings folder, a second command on it
    stops in one line naming that process; once the holder is killed (-9), the same command
    runs."""
    run, cmp_run, emb = tmp_path / "run", tmp_path / "cmp", tmp_path / "emb"
    commands = {
        run: ("tune", "--task-dir", str(task), "--out", str(run), *SMALL_RUN),
        cmp_run: ("compare", "--tasks-dir", str(task), "--out", str(cmp_run), "--methods",
                  "frozen", "--probes", "knn"),
        emb / "resemblyzer": ("embed", "--model", "resemblyzer", "--tasks-dir", str(task),
                              "--out", str(emb)),
    }
    for folder, args in commands.items():
        holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=ROOT,
                                  stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "held"
        one_line_error(contrastune(*args), str(folder), f"in use by process {holder.pid}")
        holder.kill()
        holder.wait()
        result = contrastune(*args)
        assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((run / "done.json").read_text())["best_epoch"] in (0, 1)
    epochs = (run / "epochs.csv").read_text().splitlines()
    assert len(epochs) == 3  # header, epoch 0, epoch 1: one writer


def test_a_crop_that_cannot_fit_in_memory_is_refused_up_front(task, tmp_path):
    run = tmp_path / "run"
    line = one_line_error(contrastune("tune", "--task-dir", str(task), "--out", str(run),
                                      "--clip-seconds", "100000", "--device", "cpu"),
                          "--clip-seconds 100000", "GiB of audio alone")
    assert "free" in line and not run.exists()


def test_hear_api_takes_numpy_and_agrees_on_empty_batches(tone_batch):
    model = hear_contrastune.load_model("resemblyzer")
    torch.testing.assert_close(hear_contrastune.get_scene_embeddings(tone_batch, model),
                               hear_contrastune.get_scene_embeddings(
                                   torch.from_numpy(tone_batch), model))
    emb, times = hear_contrastune.get_timestamp_embeddings(tone_batch, model)
    assert emb.shape[:2] == times.shape and emb.shape[0] == len(tone_batch)
    with pytest.raises(TypeError, match="torch.Tensor"):
        hear_contrastune.get_scene_embeddings(tone_batch.tolist(), model)
    empty = tone_batch[:0]
    assert hear_contrastune.get_scene_embeddings(empty, model).shape == (0, 256)
    emb, times = hear_contrastune.get_timestamp_embeddings(empty, model)
    assert emb.shape == (0, 0, model.timestamp_embedding_size) and times.shape == (0, 0)


def test_import_of_awkward_inputs_skips_each_with_its_reason(tmp_path):
    """tasks import of a corrupt, a 0-byte, a 48 kHz stereo, a non-audio and a nested file,
    and a class of one file: the task is made from what is usable, and the summary names the
    rest; a CSV listing missing paths skips them by name."""
    source = tone_folder(tmp_path / "src", 3, 6)
    stereo = np.stack([np.sin(np.arange(48000) / 7), np.cos(np.arange(48000) / 9)], axis=1)
    sf.write(str(source / "c00" / "stereo48k.wav"), (0.3 * stereo).astype(np.float32), 48000)
    (source / "c00" / "deep" / "er").mkdir(parents=True)
    shutil.copy(source / "c00" / "n0.wav", source / "c00" / "deep" / "er" / "nested.wav")
    (source / "c01" / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" * 8)
    (source / "c01" / "zero.wav").write_bytes(b"")
    (source / "c02" / "readme.txt").write_text("not audio\n")
    (source / "lonely").mkdir()
    shutil.copy(source / "c00" / "n1.wav", source / "lonely" / "only.wav")
    before = snapshot(source)
    result = contrastune_process("tasks", "import", str(source), "--out",
                                 str(tmp_path / "tasks"))
    assert result.returncode == 0, result.stderr[-2000:]
    for part in ("c01/corrupt.wav", "c01/zero.wav", "empty file (0 bytes)", "c02/readme.txt",
                 "lonely (1)"):
        assert part in result.stdout, (part, result.stdout)
    task = tmp_path / "tasks" / "src"
    listed = {f for s in ("train", "valid", "test")
              for f in json.loads((task / f"{s}.json").read_text())}
    assert any("stereo48k" in f for f in listed) and any("nested" in f for f in listed)
    assert contrastune("tasks", "check", str(task)).returncode == 0
    assert snapshot(source) == before
    rows = "".join(f"{p},{p.parent.name}\n" for p in sorted(source.glob("c0*/n*.wav")))
    (tmp_path / "list.csv").write_text(rows + "gone/missing.wav,c00\n")
    result = contrastune("tasks", "import", str(tmp_path / "list.csv"), "--out",
                         str(tmp_path / "tasks2"))
    assert result.returncode == 0 and "gone/missing.wav" in result.stdout, result.stdout

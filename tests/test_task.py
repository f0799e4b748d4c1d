"""hear_contrastune.data.task and data.audio on a real rendered task: reading it, and one-line
errors for each way a task directory can be broken."""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import eval_tasks
from hear_contrastune.data.audio import load_split_audio, read_wav
from hear_contrastune.data.task import load_task
from hear_contrastune.errors import UserError


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return eval_tasks.build("gm-program", tmp_path_factory.mktemp("tasks"), size="small")


@pytest.fixture
def task_copy(built: Path, tmp_path: Path) -> Path:
    """A private copy of the small task that a test may break."""
    return Path(shutil.copytree(built, tmp_path / "task"))


def test_load_task_reads_metadata_vocabulary_and_splits(built: Path) -> None:
    task = load_task(built)
    assert task.name == "gm-program"
    assert task.prediction_type == "multiclass"
    assert task.sample_rate == 16000 and task.duration == 1.0
    assert task.splits == ["train", "valid", "test"]
    assert task.vocabulary == ["Acoustic Grand Piano", "Violin", "Trumpet", "Flute"]
    for split in task.splits:
        examples = task.examples(split)
        assert [f for f, _ in examples] == sorted(f for f, _ in examples)
        assert len(examples) == 16
        for filename, labels in examples:
            assert len(labels) == 1 and labels[0] in task.vocabulary
            assert task.wav_path(split, filename) == built / "16000" / split / filename
            assert task.wav_path(split, filename).is_file()


def test_unknown_split_is_a_user_error(built: Path) -> None:
    with pytest.raises(UserError, match="no split 'fold00'"):
        load_task(built).examples("fold00")


def test_load_split_audio_matches_examples(built: Path) -> None:
    task = load_task(built)
    audio, labels = load_split_audio(task, "test")
    assert audio.dtype == np.float32 and audio.shape == (16, 16000)
    assert labels == [lab for _, lab in task.examples("test")]
    first = task.wav_path("test", task.examples("test")[0][0])
    np.testing.assert_array_equal(audio[0], sf.read(str(first), dtype="float32")[0])
    assert (np.abs(audio).max(axis=1) > 0.1).all()


def test_read_wav_pads_and_trims(built: Path) -> None:
    wav = next((built / "16000" / "train").iterdir())
    full = read_wav(wav, 16000)
    assert full.shape == (16000,) and full.dtype == np.float32
    np.testing.assert_array_equal(read_wav(wav, 16000, 1000), full[:1000])
    padded = read_wav(wav, 16000, 17000)
    np.testing.assert_array_equal(padded[:16000], full)
    assert not padded[16000:].any()


def test_read_wav_rejects_wrong_rate_stereo_and_garbage(tmp_path: Path) -> None:
    sf.write(str(tmp_path / "fast.wav"), np.zeros(100, np.float32), 22050)
    sf.write(str(tmp_path / "stereo.wav"), np.zeros((100, 2), np.float32), 16000)
    (tmp_path / "text.wav").write_text("not audio")
    cases = {
        "fast.wav": "22050 Hz, expected 16000 Hz",
        "stereo.wav": "2 channels, expected mono",
        "text.wav": "cannot read audio",
        "absent.wav": "missing",
    }
    for name, message in cases.items():
        with pytest.raises(UserError, match=message) as e:
            read_wav(tmp_path / name, 16000)
        assert str(tmp_path / name) in str(e.value) and "\n" not in str(e.value)


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _first_key(d: dict) -> str:
    return next(iter(d))


BREAKAGES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # name: (how to break the task, the file the message must name, what it must say)
    "no metadata": (
        lambda t: (t / "task_metadata.json").unlink(),
        "task_metadata.json", "missing",
    ),
    "bad json": (
        lambda t: (t / "task_metadata.json").write_text("{\n  'task_name':"),
        "task_metadata.json", "not valid JSON",
    ),
    "missing key": (
        lambda t: _edit_json(t / "task_metadata.json", lambda m: m.pop("sample_duration")),
        "task_metadata.json", "missing key 'sample_duration'",
    ),
    "event task": (
        lambda t: _edit_json(t / "task_metadata.json", lambda m: m.update(embedding_type="event")),
        "task_metadata.json", "only scene tasks",
    ),
    "bad prediction type": (
        lambda t: _edit_json(t / "task_metadata.json", lambda m: m.update(prediction_type="x")),
        "task_metadata.json", "prediction_type 'x'",
    ),
    "no vocabulary": (
        lambda t: (t / "labelvocabulary.csv").unlink(),
        "labelvocabulary.csv", "missing",
    ),
    "bad vocabulary": (
        lambda t: (t / "labelvocabulary.csv").write_text("idx,label\nzero,Violin\n"),
        "labelvocabulary.csv", "idx,label",
    ),
    "duplicate label": (
        lambda t: (t / "labelvocabulary.csv").write_text("idx,label\n0,Violin\n1,Violin\n"),
        "labelvocabulary.csv", "appears twice",
    ),
    "split json missing": (
        lambda t: (t / "valid.json").unlink(),
        "valid.json", "missing",
    ),
    "unknown label": (
        lambda t: _edit_json(t / "test.json", lambda d: d.update({_first_key(d): ["Kazoo"]})),
        "test.json", "'Kazoo' is not in labelvocabulary.csv",
    ),
    "two labels in multiclass": (
        lambda t: _edit_json(
            t / "train.json", lambda d: d.update({_first_key(d): ["Violin", "Flute"]})
        ),
        "train.json", "2 labels in a multiclass task",
    ),
    "no audio at this rate": (
        lambda t: (t / "16000").rename(t / "48000"),
        "16000", "found: 48000",
    ),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_load_task_errors_are_one_line_naming_the_file(task_copy: Path, breakage: str) -> None:
    break_it, filename, message = BREAKAGES[breakage]
    break_it(task_copy)
    with pytest.raises(UserError) as e:
        load_task(task_copy)
    text = str(e.value)
    assert "\n" not in text
    assert str(task_copy / filename) in text
    assert message in text


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such directory"):
        load_task(tmp_path / "nope")

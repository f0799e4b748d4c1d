"""hear_contrastune.data.task and data.audio on a real rendered task: reading it, and one-line
errors for each way a task directory can be broken."""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import eval_tasks
from hear_contrastune.data.audio import read_wav
from hear_contrastune.data.hear_format import heareval_labels
from hear_contrastune.data.loading import ClipDataset
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


def test_clip_dataset_streams_whole_clips_in_examples_order(built: Path) -> None:
    task = load_task(built)
    clips = ClipDataset(task, ["test"])
    assert len(clips) == 16 and clips.labels == [lab for _, lab in task.examples("test")]
    audio, index = clips[0]
    first = task.wav_path("test", task.examples("test")[0][0])
    assert index == 0 and audio.dtype == torch.float32 and audio.shape == (16000,)
    np.testing.assert_array_equal(audio.numpy(), sf.read(str(first), dtype="float32")[0])
    assert clips.lengths() == [16000] * 16


def test_training_crops_are_seeded_by_clip_and_epoch(tmp_path: Path) -> None:
    task_dir = _varlen_task(tmp_path, [0.5, 3.0])
    task = load_task(task_dir)
    assert task.duration is None and task.num_samples is None
    crops = ClipDataset(task, ["train"], num_samples=16000, seed=3)
    short, long = crops[0][0].numpy(), crops[1][0].numpy()
    whole = ClipDataset(task, ["train"])
    assert whole.lengths() == [8000, 48000] and whole[1][0].shape == (48000,)
    np.testing.assert_array_equal(short[:8000], whole[0][0].numpy())  # padded at the end
    assert not short[8000:].any()
    full = whole[1][0].numpy()
    start = int(np.flatnonzero(full == long[0])[0])  # the crop is a window of the clip
    np.testing.assert_array_equal(long, full[start:start + 16000])
    np.testing.assert_array_equal(crops[1][0].numpy(), long)  # same epoch: same crop
    crops.epoch = 1
    assert not np.array_equal(crops[1][0].numpy(), long)  # next epoch: another one


def test_audio_at_the_backbones_rate(tmp_path: Path) -> None:
    """A task with only 16 kHz audio feeds a 48 kHz backbone resampled clips; a task with a
    48 kHz folder feeds it that folder, as heareval reads `<model.sample_rate>/`."""
    task_dir = _varlen_task(tmp_path, [1.0, 1.0])
    task = load_task(task_dir, 48000)
    assert (task.audio_rate, task.sample_rate) == (16000, 48000)
    assert "resampled on the fly to 48000 Hz" in task.audio_note
    clip = ClipDataset(task, ["train"])[0][0].numpy()
    assert clip.shape == (48000,)
    peak = np.abs(np.fft.rfft(clip)).argmax() * 48000 / len(clip)
    assert abs(peak - 440) < 2  # the tone is still at 440 Hz: the clip really is at 48 kHz
    (task_dir / "48000" / "train").mkdir(parents=True)
    for wav in (task_dir / "16000" / "train").iterdir():
        sf.write(str(task_dir / "48000" / "train" / wav.name), clip, 48000)
    assert load_task(task_dir, 48000).audio_rate == 48000
    assert load_task(task_dir, 22050).audio_rate == 48000  # resampled down, not up


def _varlen_task(tmp_path: Path, seconds: list[float]) -> Path:
    """A one-split task of 440 Hz tones of the given lengths, sample_duration null."""
    task_dir = tmp_path / "varlen"
    (task_dir / "16000" / "train").mkdir(parents=True)
    labels = {}
    for i, s in enumerate(seconds):
        t = np.arange(round(s * 16000)) / 16000
        tone = 0.5 * np.sin(2 * np.pi * 440 * t) * (1 + t)  # rising: every crop is unique
        sf.write(str(task_dir / "16000" / "train" / f"{i}.wav"), tone.astype(np.float32), 16000,
                 subtype="FLOAT")
        labels[f"{i}.wav"] = ["tone"]
    (task_dir / "train.json").write_text(json.dumps(labels))
    (task_dir / "labelvocabulary.csv").write_text("idx,label\n0,tone\n")
    (task_dir / "task_metadata.json").write_text(json.dumps({
        "task_name": "varlen", "embedding_type": "scene", "prediction_type": "multiclass",
        "split_mode": "trainvaltest", "sample_duration": None, "splits": ["train"],
        "evaluation": ["top1_acc"]}))
    return task_dir


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
        "labelvocabulary.csv", "'zero' is not a whole number",
    ),
    "unquoted comma in a label": (  # heareval's pandas would shift the columns
        lambda t: _append_label(t, "a,b"), "labelvocabulary.csv", "3 fields",
    ),
    "labels pandas reads as numbers": (  # a column of numbers: '01' becomes 1
        lambda t: (t / "labelvocabulary.csv").write_text("idx,label\n0,01\n1,02\n2,03\n"),
        "labelvocabulary.csv", "'01' is read by heareval (pandas) as '1'",
    ),
    "a label pandas reads as NaN": (
        lambda t: _append_label(t, "NA"), "labelvocabulary.csv", "as 'nan'",
    ),
    "a clip outside the task": (
        lambda t: _rename_first(t / "train.json", "../../../../etc/passwd"),
        "train.json", "'../../../../etc/passwd' is not a file inside",
    ),
    "an absolute clip path": (
        lambda t: _rename_first(t / "train.json", "/etc/passwd"), "train.json", "'/etc/passwd'",
    ),
    "a clip of another split": (  # valid leaking into train
        lambda t: _rename_first(t / "train.json", "../valid/" + _first_key(
            json.loads((t / "valid.json").read_text()))),
        "train.json", "'../valid/",
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
    "no audio folder": (
        lambda t: shutil.rmtree(t / "16000"),
        "", "no audio folder",
    ),
}


def _append_label(task_dir: Path, row: str) -> None:
    vocab = task_dir / "labelvocabulary.csv"
    n = len(vocab.read_text().splitlines()) - 1
    vocab.write_text(vocab.read_text() + f"{n},{row}\n")


def _rename_first(split_file: Path, new_name: str) -> None:
    data = json.loads(split_file.read_text())
    first = _first_key(data)
    data[new_name] = data.pop(first)
    split_file.write_text(json.dumps(data))


def test_a_quoted_label_reads_as_heareval_reads_it(task_copy: Path) -> None:
    """A label holding a comma, quoted as CSV quotes it, is one label for us and for pandas."""
    vocab = task_copy / "labelvocabulary.csv"
    vocab.write_text(vocab.read_text().replace(",Violin\n", ',"Violin, solo"\n'))
    _edit_json(task_copy / "train.json", lambda d: d.update(
        {k: ["Violin, solo"] for k, v in d.items() if v == ["Violin"]}))
    for split in ("valid", "test"):
        _edit_json(task_copy / f"{split}.json", lambda d: d.update(
            {k: ["Violin, solo"] for k, v in d.items() if v == ["Violin"]}))
    task = load_task(task_copy)
    assert "Violin, solo" in task.vocabulary
    assert heareval_labels(vocab.read_text()) == task.vocabulary


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

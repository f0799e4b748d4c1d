"""eval_tasks.importer on real audio: notes rendered with the soundfont and written the ways a
user's files come (44.1 kHz stereo, FLAC, names that collide across classes, a corrupt file,
an empty one, a silent one), imported as folder-per-class, CSV multilabel and k-fold tasks."""

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from eval_tasks.check import check_task
from eval_tasks.importer import KEEP_LENGTH, import_task
from eval_tasks.soundfont import Note, Renderer
from eval_tasks.splits import split_counts, stratify_multilabel
from hear_contrastune.data.task import load_task
from hear_contrastune.errors import UserError

CLASSES = {"piano": 0, "violin": 40, "flute": 73}


def _tree_bytes(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def _sources(task_dir: Path) -> dict[str, tuple[str, str]]:
    """sources.csv as {source: (split, filename)}."""
    with open(task_dir / "sources.csv", newline="") as f:
        return {r["source"]: (r["split"], r["filename"]) for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes of nine notes each: n0-n7 last 1.0-1.7 s (n0, n3, n6 at 44.1 kHz stereo,
    the rest 16 kHz mono), plus same.flac (1.25 s) in every class. Also a class with one
    file, a corrupt file, an empty file, a silent file and a file outside any class."""
    root = tmp_path_factory.mktemp("source")
    r16, r44 = Renderer(16000), Renderer(44100)
    for cls, program in CLASSES.items():
        (root / cls).mkdir()
        for k in range(8):
            note = (Note(program, 60 + k, 100, 0.0, 0.5),)
            if k % 3 == 0:
                x = r44.clip(note, 44100 + 4410 * k, -6.0)
                sf.write(str(root / cls / f"n{k}.wav"), np.stack([x, 0.5 * x], axis=1), 44100)
            else:
                sf.write(str(root / cls / f"n{k}.wav"), r16.clip(note, 16000 + 1600 * k, -6.0),
                         16000)
        flac = r16.clip((Note(program, 64, 90, 0.0, 0.5),), 20000, -3.0)
        sf.write(str(root / cls / "same.flac"), flac, 16000, format="FLAC")
    (root / "piano" / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" * 8)
    (root / "piano" / "empty.wav").write_bytes(b"")
    sf.write(str(root / "violin" / "quiet.wav"), np.zeros(16000, np.float32), 16000)
    (root / "rare").mkdir()
    sf.write(str(root / "rare" / "n0.wav"), r16.clip((Note(9, 70, 100, 0, 0.5),), 16000, -3.0),
             16000)
    (root / "notes.txt").write_text("not audio\n")
    return root


@pytest.fixture(scope="module")
def imported(source: Path, tmp_path_factory: pytest.TempPathFactory):
    return import_task(source, tmp_path_factory.mktemp("tasks"))


def test_folder_import_counts_skips_and_drops(imported, source: Path) -> None:
    s = imported
    assert s.task_dir.name == source.name and s.prediction_type == "multiclass"
    assert s.classes == sorted(CLASSES) and s.split_mode == "trainvaltest"
    # Median of the 29 readable lengths (27 kept, the silent one, the rare one) is 1.3 s.
    assert s.sample_duration == 1.3 and s.duration_source == "median"
    assert s.clips == {"train": 21, "valid": 3, "test": 3}
    reasons = dict(s.skipped)
    assert set(reasons) == {"notes.txt", "piano/broken.wav", "piano/empty.wav", "violin/quiet.wav"}
    assert reasons["notes.txt"] == "not in a class folder"
    assert reasons["piano/broken.wav"].startswith("cannot read audio")
    assert reasons["piano/empty.wav"] == "empty file (0 bytes)"
    assert reasons["violin/quiet.wav"].startswith("silent")
    assert s.dropped_classes == {"rare": 1}
    assert (s.trimmed, s.padded) == (12, 12)  # 1.4-1.7 s cut; 1.0-1.25 s padded; 1.3 s as is
    text = str(s)
    for part in ("train 21, valid 3, test 3", "skipped 4 files", "piano/empty.wav", "rare (1)"):
        assert part in text, text


def test_folder_import_is_a_sound_stratified_task(imported, source: Path) -> None:
    task_dir = imported.task_dir
    assert check_task(task_dir) == []
    task = load_task(task_dir)
    meta = task.metadata
    assert meta["evaluation"] == ["top1_acc"] and meta["sample_duration"] == 1.3
    assert meta["dropped_classes"] == {"rare": 1}
    for split in task.splits:
        per_class = Counter(labels[0] for _, labels in task.examples(split))
        assert set(per_class) == set(CLASSES)  # every class in every split ...
        assert len(set(per_class.values())) == 1  # ... in equal numbers (7 / 1 / 1)
        for filename, _ in task.examples(split):
            info = sf.info(str(task.wav_path(split, filename)))
            assert (info.samplerate, info.channels, info.frames) == (16000, 1, 20800)
            assert info.subtype == "PCM_16"
    # Colliding source names get distinct outputs, and sources.csv maps each one back.
    sources = _sources(task_dir)
    assert len(sources) == 27
    outputs = [sources[f"{c}/same.flac"][1] for c in CLASSES]
    assert len(set(outputs)) == 3 and all(o.endswith("_same.wav") for o in outputs)
    for src, (split, filename) in sources.items():
        assert json.loads((task_dir / f"{split}.json").read_text())[filename] == [src.split("/")[0]]


def test_import_downmixes_and_resamples_with_torchaudio(imported, source: Path) -> None:
    """A 44.1 kHz stereo file becomes the mean of its channels, resampled and cut."""
    split, filename = _sources(imported.task_dir)["violin/n6.wav"]
    out, rate = sf.read(str(imported.task_dir / "16000" / split / filename), dtype="float32")
    stereo, sr = sf.read(str(source / "violin" / "n6.wav"), dtype="float32")
    expected = torchaudio.functional.resample(torch.from_numpy(stereo.mean(axis=1)), sr, 16000)
    assert rate == 16000 and len(expected) > len(out) == 20800
    np.testing.assert_allclose(out, expected[:20800].numpy(), atol=2e-4)
    split, filename = _sources(imported.task_dir)["flute/n0.wav"]  # 1.0 s: padded with zeros
    out, _ = sf.read(str(imported.task_dir / "16000" / split / filename), dtype="float32")
    assert np.abs(out[:16000]).max() > 0.1 and not out[16000:].any()


def test_import_is_deterministic(imported, source: Path, tmp_path: Path) -> None:
    again = import_task(source, tmp_path / "again")
    assert _tree_bytes(again.task_dir) == _tree_bytes(imported.task_dir)
    other = import_task(source, tmp_path / "other", seed=1)
    assert _sources(other.task_dir).keys() == _sources(again.task_dir).keys()
    assert _sources(other.task_dir) != _sources(again.task_dir)  # other clips held out


def test_import_replaces_an_old_task_but_nothing_else(
    imported, source: Path, tmp_path: Path
) -> None:
    first = import_task(source, tmp_path, name="mine", duration=0.5)
    assert load_task(first.task_dir).duration == 0.5 and first.duration_source == "given"
    second = import_task(source, tmp_path, name="mine")
    assert load_task(second.task_dir).duration == 1.3
    (tmp_path / "keep").mkdir()
    with pytest.raises(UserError, match="exists and is not a HEAR task"):
        import_task(source, tmp_path, name="keep")
    with pytest.raises(UserError, match="must go outside the source"):
        import_task(source, source, name="task")  # would become a class folder next time
    with pytest.raises(UserError, match="must go outside the source"):
        import_task(source / "piano", source.parent, name=source.name)  # would delete it


def test_csv_multilabel_import(source: Path, tmp_path: Path) -> None:
    rows = ["path,labels"]
    for cls in CLASSES:
        family = {"piano": "keys", "violin": "strings", "flute": "wind"}[cls]
        for k in range(8):
            labels = f"{cls};{family}" if k % 2 else cls  # every other clip has two labels
            rows.append(f"{source / cls / f'n{k}.wav'},{labels}")
    rows += [
        f"{source}/flute/same.flac, flute ; loud ",  # spaces around labels are dropped
        "gone.wav,flute",  # relative to the CSV's folder, and missing
        f"{source}/piano/broken.wav,piano",
    ]
    table = tmp_path / "My Labels.csv"
    table.write_text("\n".join(rows) + "\n")
    s = import_task(table, tmp_path / "out")
    assert s.task_dir == tmp_path / "out" / "my-labels"
    assert s.prediction_type == "multilabel"
    assert s.classes == ["flute", "keys", "piano", "strings", "violin", "wind"]
    assert s.dropped_classes == {"loud": 1} and s.unlabelled_clips == 0
    assert dict(s.skipped).keys() == {"gone.wav", f"{source}/piano/broken.wav"}
    assert dict(s.skipped)["gone.wav"] == "missing"
    assert sum(s.clips.values()) == 25 and s.missing_from_splits == {}
    assert check_task(s.task_dir) == []
    task = load_task(s.task_dir)
    assert task.metadata["evaluation"] == ["mAP", "d_prime", "aucroc"]
    for split in task.splits:
        present = {x for _, labels in task.examples(split) for x in labels}
        assert present == set(s.classes), split
    by_file = {f: labels for sp in task.splits for f, labels in task.examples(sp)}
    assert sorted(len(v) for v in by_file.values()).count(2) == 12


CSV_ERRORS = [  # (rows, with {s} for the source folder; what the error must say)
    ("{s}/piano/n0.wav,piano\n{s}/piano/n1.wav,piano,extra\n", r"bad.csv:2: expected 2 columns"),
    ("{s}/piano/n0.wav,piano\n{s}/piano/n0.wav,violin\n",
     r"bad.csv:2: .* already listed on line 1"),
    ("{s}/piano/n0.wav,01\n{s}/piano/n1.wav,02\n",
     r"bad.csv: label '01' is read by heareval \(pandas\) as '1'"),
    ("{s}/piano/n0.wav, ; \n", r"bad.csv:1: needs a path and at least one label"),
    ("{s}/piano/n0.wav,piano\n{s}/piano/n1.wav,piano\n",
     r"0 class\(es\) with at least 3 usable clips"),
]


@pytest.mark.parametrize(("rows", "message"), CSV_ERRORS)
def test_csv_errors_name_the_line(source: Path, tmp_path: Path, rows: str, message: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(rows.format(s=source))
    with pytest.raises(UserError, match=message):
        import_task(bad, tmp_path / "out")


def test_kfold_import(source: Path, tmp_path: Path) -> None:
    s = import_task(source, tmp_path, name="folds", split="kfold", folds=3, duration=1.0)
    assert s.clips == {"fold00": 9, "fold01": 9, "fold02": 9}
    task = load_task(s.task_dir)
    assert task.metadata["split_mode"] == "new_split_kfold" and task.metadata["nfolds"] == 3
    for fold in task.splits:
        assert Counter(labels[0] for _, labels in task.examples(fold)) == {c: 3 for c in CLASSES}
    assert check_task(s.task_dir) == []
    assert (s.trimmed, s.padded) == (24, 0)
    with pytest.raises(UserError, match="folds 2: need 3 to 99"):
        import_task(source, tmp_path, name="x", split="kfold", folds=2)


def test_bad_options_and_sources_are_user_errors(source: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file or folder"):
        import_task(tmp_path / "nope", tmp_path)
    with pytest.raises(UserError, match="expected a folder of class folders or a .csv"):
        import_task(source / "notes.txt", tmp_path)
    with pytest.raises(UserError, match="split 'random'"):
        import_task(source, tmp_path, split="random")
    with pytest.raises(UserError, match="each must be above 0 and together below 1"):
        import_task(source, tmp_path, valid_fraction=0.5, test_fraction=0.5)
    with pytest.raises(UserError, match="duration -1"):
        import_task(source, tmp_path, duration=-1)
    with pytest.raises(UserError, match="task name"):
        import_task(source, tmp_path, name="a/b")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(UserError, match="no audio files found"):
        import_task(tmp_path / "empty", tmp_path / "out")


def test_split_counts_reach_every_split() -> None:
    assert split_counts(3, [0.7, 0.15, 0.15]) == [1, 1, 1]
    assert split_counts(9, [0.7, 0.15, 0.15]) == [7, 1, 1]
    assert split_counts(100, [0.7, 0.15, 0.15]) == [70, 15, 15]
    assert split_counts(4, [0.2, 0.4, 0.4]) == [1, 1, 2]  # train keeps at least one
    with pytest.raises(ValueError):
        split_counts(2, [0.7, 0.15, 0.15])


def test_stratify_multilabel_keeps_each_label_near_its_quota() -> None:
    rng = np.random.default_rng(0)
    vocab = [f"l{i}" for i in range(8)]
    weights = np.linspace(1, 8, 8) / np.linspace(1, 8, 8).sum()
    label_sets = [
        tuple(rng.choice(vocab, size=int(rng.integers(1, 4)), replace=False, p=weights))
        for _ in range(600)
    ]
    fractions = [0.7, 0.15, 0.15]
    split = stratify_multilabel(label_sets, fractions, np.random.default_rng(1))
    sizes = np.bincount(split, minlength=3) / len(split)
    np.testing.assert_allclose(sizes, fractions, atol=0.02)
    for label in vocab:
        idx = [i for i, s in enumerate(label_sets) if label in s]
        share = np.bincount([split[i] for i in idx], minlength=3) / len(idx)
        np.testing.assert_allclose(share, fractions, atol=0.03)
    assert split == stratify_multilabel(label_sets, fractions, np.random.default_rng(1))


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_heareval_reads_imported_tasks(imported, source: Path, tmp_path: Path) -> None:
    from heareval.predictions.task_predictions import (
        get_splits_from_metadata,
        label_vocab_nlabels,
    )

    folds = import_task(source, tmp_path, name="folds", split="kfold", folds=4)
    for task_dir, n_splits in ((imported.task_dir, 1), (folds.task_dir, 4)):
        meta = json.loads((task_dir / "task_metadata.json").read_text())
        _, nlabels = label_vocab_nlabels(task_dir)
        assert nlabels == len(CLASSES)
        assert len(get_splits_from_metadata(meta)) == n_splits


def test_import_keeping_every_clips_length(imported, source: Path, tmp_path: Path) -> None:
    """duration 'none': sample_duration null, each clip at its own (resampled) length."""
    s = import_task(source, tmp_path, name="varlen", duration=KEEP_LENGTH)
    assert s.sample_duration is None and s.duration_source == "kept"
    assert (s.trimmed, s.padded) == (0, 0) and s.clips == imported.clips
    assert "kept at their own length, 1-1.7 s (sample_duration null)" in str(s), str(s)
    task = load_task(s.task_dir)
    assert task.metadata["sample_duration"] is None and task.num_samples is None
    assert check_task(s.task_dir) == []
    sources = _sources(s.task_dir)
    for src, (split, filename) in sources.items():
        out, rate = sf.read(str(s.task_dir / "16000" / split / filename), dtype="float32")
        original = sf.info(str(source / src))
        assert rate == 16000 and len(out) == -(-original.frames * 16000 // original.samplerate)
        if original.samplerate == 16000:  # nothing resampled: the samples themselves
            expected, _ = sf.read(str(source / src), dtype="float32")
            np.testing.assert_allclose(out, expected, atol=1 / 32768)
    assert len({sf.info(str(p)).frames for p in (s.task_dir / "16000").rglob("*.wav")}) == 9
    again = import_task(source, tmp_path / "again", name="varlen", duration=KEEP_LENGTH)
    assert _tree_bytes(again.task_dir) == _tree_bytes(s.task_dir)
    with pytest.raises(UserError, match="duration 'long': expected seconds > 0 or 'none'"):
        import_task(source, tmp_path, name="x", duration="long")


def test_import_skips_files_holding_nan_or_inf(source: Path, tmp_path: Path) -> None:
    """A float wav with NaN or inf samples would be written as full-scale noise: it is
    skipped and counted as undecodable, like a corrupt file."""
    root = tmp_path / "src"
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for k in range(1, 4):
            (root / cls / f"n{k}.wav").write_bytes((source / cls / f"n{k}.wav").read_bytes())
    x, _ = sf.read(str(source / "piano" / "n1.wav"), dtype="float32")
    x[100] = np.nan
    sf.write(str(root / "piano" / "nan.wav"), x, 16000, subtype="FLOAT")
    x[100] = np.inf
    sf.write(str(root / "violin" / "inf.wav"), x, 16000, subtype="FLOAT")
    for duration in (None, KEEP_LENGTH):
        s = import_task(root, tmp_path / "out", duration=duration)
        assert dict(s.skipped) == {
            "piano/nan.wav": "cannot decode (NaN or infinite samples)",
            "violin/inf.wav": "cannot decode (NaN or infinite samples)",
        }
        assert "skipped 2 files: 2 cannot decode" in str(s)
        assert sum(s.clips.values()) == 9 and check_task(s.task_dir) == []

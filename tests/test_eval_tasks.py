"""The offline task builders: real renders of the `small` sizes, checked for hearpreprocess's
layout, byte-for-byte determinism, held-out splits, and check_task catching planted faults.

espeak-word needs the espeak-ng program (scripts/setup.sh installs it); without it, its tests
skip and the other tasks are still built and checked."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import eval_tasks
from eval_tasks import espeak, espeak_word, gm, gm_tags_varlen
from eval_tasks.check import check_task
from eval_tasks.layout import Clip, TaskPlan, is_complete, write_task
from eval_tasks.soundfont import Note, Phrase, Renderer
from hear_contrastune.data.task import load_task
from hear_contrastune.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
HEAREVAL_KEYS = {
    "task_name", "version", "embedding_type", "prediction_type", "split_mode",
    "sample_duration", "evaluation", "download_urls", "default_mode", "sample_rate", "splits",
}


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tasks")


HAVE_ESPEAK = shutil.which("espeak-ng") is not None
needs_espeak = pytest.mark.skipif(
    not HAVE_ESPEAK, reason="espeak-ng not installed (apt-get install -y espeak-ng)"
)


@pytest.fixture(scope="module")
def small(out_dir: Path) -> dict[str, Path]:
    """Every registered task, built at size `small` with seed 0 (espeak-word only where
    espeak-ng is installed)."""
    return {
        name: eval_tasks.build(name, out_dir, size="small")
        for name in eval_tasks.TASKS
        if HAVE_ESPEAK or name != espeak_word.NAME
    }


def _tree_bytes(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def _key(filename: str) -> int:
    return int(re.search(r"_k(\d{3})", filename).group(1))


def test_registry_lists_every_task_with_a_description() -> None:
    listed = eval_tasks.list_tasks()
    assert [n for n, _ in listed] == list(eval_tasks.TASKS)
    assert listed[0][0] == "gm-program"
    assert all(d and "\n" not in d for _, d in listed)


def test_unknown_task_or_size_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown task 'nope'.*gm-program"):
        eval_tasks.build("nope", tmp_path)
    with pytest.raises(UserError, match="unknown size 'huge'"):
        eval_tasks.build("gm-program", tmp_path, size="huge")


def test_small_tasks_have_hearpreprocess_layout_and_pass_check(small: dict[str, Path]) -> None:
    for name, path in small.items():
        assert path.name == name
        assert eval_tasks.is_built(name, path.parent, "small")  # metadata survives JSON
        meta = json.loads((path / "task_metadata.json").read_text())
        assert HEAREVAL_KEYS <= set(meta), name
        assert meta["embedding_type"] == "scene" and meta["sample_rate"] == 16000
        assert meta["mode"] == "small" and meta["default_mode"] == "full"
        assert (path / "labelvocabulary.csv").read_text().startswith("idx,label\n")
        for split in meta["splits"]:
            listed = json.loads((path / f"{split}.json").read_text())
            assert sorted(p.name for p in (path / "16000" / split).iterdir()) == sorted(listed)
        assert check_task(path) == [], name
        wav = next((path / "16000" / meta["splits"][0]).iterdir())
        info = sf.info(str(wav))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        if meta["sample_duration"] is not None:  # else each clip has its own length
            assert info.frames == round(meta["sample_duration"] * 16000)


def test_gm_program_small_contents(small: dict[str, Path]) -> None:
    task = load_task(small["gm-program"])
    assert task.metadata["evaluation"] == ["top1_acc"]
    assert task.metadata["split_mode"] == "trainvaltest"
    assert len(task.vocabulary) == len(gm.SMALL_PROGRAMS)
    for split in task.splits:
        labels = [lab[0] for _, lab in task.examples(split)]
        assert sorted(set(labels)) == sorted(task.vocabulary)  # every class in every split


def test_gm_program_held_out_keys_are_disjoint_but_cover_the_range(
    small: dict[str, Path],
) -> None:
    task = load_task(small["gm-program"])
    keys = {s: {_key(f) for f, _ in task.examples(s)} for s in task.splits}
    assert keys["train"].isdisjoint(keys["valid"] | keys["test"])
    assert keys["valid"].isdisjoint(keys["test"])
    assert {s: sorted(k) for s, k in keys.items()} == task.metadata["split_keys"]
    # The full plan, without rendering it: 12 keys a split over C3-B5, all 12 pitch classes.
    full = eval_tasks.plan_task("gm-program", "full")
    full_keys = full.metadata["split_keys"]
    for split, ks in full_keys.items():
        assert len(ks) == 12 and {k % 12 for k in ks} == set(range(12))
        assert min(ks) < 51 and max(ks) > 80, split  # each split spans the whole range
        planned = {n.pitch for c in full.clips if c.split == split for n in c.sounds}
        assert planned == set(ks)
    assert not set(full_keys["train"]) & (set(full_keys["valid"]) | set(full_keys["test"]))


def test_gm_program_full_plan_size() -> None:
    full = eval_tasks.plan_task("gm-program", "full")
    assert len(full.vocabulary) >= 40
    assert len({gm.family(p) for p in gm.PROGRAM_POOL}) == 15
    for split in ("train", "valid", "test"):
        per_class: dict[str, int] = {}
        for c in full.clips:
            if c.split == split:
                per_class[c.labels[0]] = per_class.get(c.labels[0], 0) + 1
        assert set(per_class.values()) == {12} and len(per_class) == len(full.vocabulary)
    velocities = [c.sounds[0].velocity for c in full.clips]
    assert min(velocities) < 50 and max(velocities) > 115


def test_build_is_deterministic_byte_for_byte(small: dict[str, Path], tmp_path: Path) -> None:
    again = eval_tasks.build("gm-program", tmp_path / "again", size="small", seed=0)
    assert _tree_bytes(again) == _tree_bytes(small["gm-program"])
    other = eval_tasks.build("gm-program", tmp_path / "other", size="small", seed=1)
    other_bytes, same_bytes = _tree_bytes(other), _tree_bytes(again)
    assert other_bytes.keys() == same_bytes.keys()  # same clips planned ...
    assert other_bytes != same_bytes  # ... rendered with other velocities, timings, levels


def test_complete_build_is_skipped_and_incomplete_one_rebuilt(small: dict[str, Path]) -> None:
    path = small["gm-program"]
    out = path.parent
    wav = next((path / "16000" / "test").iterdir())
    stamp = wav.stat().st_mtime_ns
    assert eval_tasks.is_built("gm-program", out, "small")
    eval_tasks.build("gm-program", out, size="small")
    assert wav.stat().st_mtime_ns == stamp  # nothing rewritten
    content = wav.read_bytes()
    wav.unlink()
    assert not eval_tasks.is_built("gm-program", out, "small")
    eval_tasks.build("gm-program", out, size="small")
    assert wav.read_bytes() == content
    assert not eval_tasks.is_built("gm-program", out, "small", seed=7)  # another seed: rebuild


def test_two_processes_building_one_task_render_it_once(tmp_path: Path) -> None:
    """Two tuning-study processes start together: the second waits for the first's build and
    keeps it, rather than replacing the folder the first is already reading."""
    code = ("import sys, eval_tasks; "
            "eval_tasks.build('gm-program', sys.argv[1], size='small')")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    logs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert sum("render gm-program" in err for _, err in logs) == 1, logs
    assert eval_tasks.is_built("gm-program", tmp_path, "small")


def test_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    """A build that dies mid-render (here: a key the synth rejects) leaves no task folder
    and no temporary folder, and an old complete task at that path survives untouched."""
    good = eval_tasks.plan_task("gm-program", "small")
    bad_note = Note(0, 200, 100, 0.0, 0.5)
    bad = TaskPlan(good.metadata, good.vocabulary, [*good.clips, Clip(
        "test", "zz_bad.wav", ("Violin",), (bad_note,), -3.0)])
    with pytest.raises(ValueError, match="cannot play key 200"):
        write_task(tmp_path / "gm-program", bad)
    assert list(tmp_path.iterdir()) == []
    write_task(tmp_path / "gm-program", good)
    before = _tree_bytes(tmp_path / "gm-program")
    with pytest.raises(ValueError):
        write_task(tmp_path / "gm-program", bad)
    assert [p.name for p in tmp_path.iterdir()] == ["gm-program"]
    assert _tree_bytes(tmp_path / "gm-program") == before
    assert is_complete(tmp_path / "gm-program", good)


def test_renderer_resets_between_notes() -> None:
    """A note renders the same after a long-release pad as on a fresh synth."""
    fresh = Renderer().note(0, 60, 100, 8000, 16000)
    r = Renderer()
    r.note(89, 72, 127, 16000, 16000)  # warm pad, still sounding when cut
    np.testing.assert_array_equal(r.note(0, 60, 100, 8000, 16000), fresh)


def test_chosen_programs_sound_at_range_ends_and_soft() -> None:
    """Every program a task uses is audible at its range ends, at the softest velocity."""
    r = Renderer()
    uses = [
        (gm.PROGRAM_POOL, (48, 83)),
        (gm.SCENE_EFFECTS, (48, 83)),
        (gm.AUDIBLE_PROGRAMS, (48, 83)),
        (gm.PITCHED_PROGRAMS, (36, 84)),
    ]
    for programs, keys in uses:
        for program in programs:
            for key in keys:
                x = r.note(program, key, gm.VELOCITY_RANGE[0], 11200, 16000)
                rms_db = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-20)
                assert rms_db > -60, (program, key, rms_db)


def test_interleaved_pitch_sets() -> None:
    sets = gm.interleaved_pitch_sets(48, 83, 3)
    assert sorted(k for s in sets for k in s) == list(range(48, 84))
    assert all(len(s) == 12 and {k % 12 for k in s} == set(range(12)) for s in sets)


def test_check_task_finds_planted_problems(small: dict[str, Path], tmp_path: Path) -> None:
    task = Path(shutil.copytree(small["gm-program"], tmp_path / "task"))
    audio = task / "16000"
    test_files = sorted((audio / "test").iterdir())
    wrong_rate, stereo, short, silent, missing = test_files[:5]
    sf.write(str(wrong_rate), np.full(22050, 0.1, np.float32), 22050)
    sf.write(str(stereo), np.full((16000, 2), 0.1, np.float32), 16000)
    sf.write(str(short), np.full(15999, 0.1, np.float32), 16000)
    sf.write(str(silent), np.zeros(16000, np.float32), 16000, subtype="PCM_16")
    missing.unlink()
    sf.write(str(audio / "train" / "stray.wav"), np.full(16000, 0.1, np.float32), 16000)
    problems = check_task(task)
    expected = [
        f"{wrong_rate}: 22050 Hz, expected 16000 Hz",
        f"{stereo}: 2 channels, expected mono",
        f"{short}: 15999 samples, expected 16000",
        f"{silent}: silent",
        f"{missing}: missing",
        f"{audio / 'train' / 'stray.wav'}: not listed in train.json",
    ]
    assert len(problems) == len(expected), problems
    for e in expected:
        assert any(p.startswith(e) for p in problems), (e, problems)


def test_check_task_reports_an_unknown_label(small: dict[str, Path], tmp_path: Path) -> None:
    task = Path(shutil.copytree(small["gm-program"], tmp_path / "task"))
    split = json.loads((task / "valid.json").read_text())
    split[next(iter(split))] = ["Kazoo"]
    (task / "valid.json").write_text(json.dumps(split))
    [problem] = check_task(task)
    assert str(task / "valid.json") in problem and "'Kazoo' is not in labelvocabulary" in problem


def _program(filename: str) -> int:
    return int(re.match(r"p(\d{3})_", filename).group(1))


def test_gm_family_mix_labels_are_the_families_of_distinct_notes(
    small: dict[str, Path],
) -> None:
    task = load_task(small["gm-family-mix"])
    assert task.prediction_type == "multilabel"
    assert task.metadata["evaluation"] == ["mAP", "d_prime", "aucroc"]
    seen: set[str] = set()
    sizes = set()
    for split in task.splits:
        for filename, labels in task.examples(split):
            programs = [int(p) for p in re.search(r"_p([\d-]+)\.wav", filename)[1].split("-")]
            assert labels == [gm.family(p) for p in programs]
            assert len(set(labels)) == len(labels)
            sizes.add(len(labels))
            seen |= set(labels)
    assert sizes == {1, 2, 3} and seen == set(task.vocabulary)
    full = eval_tasks.plan_task("gm-family-mix", "full")
    assert len(full.vocabulary) == 15 and len(full.clips) == 3000
    keys = {s: {n.pitch for c in full.clips if c.split == s for n in c.sounds} for s in task.splits}
    assert keys["test"].isdisjoint(keys["train"] | keys["valid"])
    assert keys["valid"].isdisjoint(keys["train"])


def test_gm_pitch_holds_out_instruments_and_orders_keys_for_chroma(
    small: dict[str, Path],
) -> None:
    task = load_task(small["gm-pitch"])
    assert task.metadata["evaluation"] == ["pitch_acc", "chroma_acc"]
    assert task.vocabulary == [str(k) for k in range(60, 72)]
    programs = {s: {_program(f) for f, _ in task.examples(s)} for s in task.splits}
    assert [len(programs[s]) for s in task.splits] == [3, 1, 1]
    assert programs["test"].isdisjoint(programs["train"] | programs["valid"])
    assert programs["valid"].isdisjoint(programs["train"])
    for split in task.splits:
        for filename, [label] in task.examples(split):
            assert label == str(_key(filename))
    full = eval_tasks.plan_task("gm-pitch", "full")
    dealt = full.metadata["split_programs"]
    assert [len(dealt[s]) for s in ("train", "valid", "test")] == [45, 15, 15]
    assert sorted(sum(dealt.values(), [])) == sorted(gm.PITCHED_PROGRAMS)
    assert {gm.family(p) for p in dealt["train"]} == {gm.family(p) for p in gm.PITCHED_PROGRAMS}
    assert len(full.vocabulary) == 49 and len(full.clips) == 75 * 49
    # chroma_acc compares class indices mod 12: index order must be key order, C first.
    assert all(i % 12 == int(label) % 12 for i, label in enumerate(full.vocabulary))


def test_gm_family_5fold_is_stratified_and_grouped_by_instrument(
    small: dict[str, Path],
) -> None:
    task = load_task(small["gm-family-5fold"])
    assert task.splits == [f"fold{i:02d}" for i in range(5)]
    assert task.metadata["split_mode"] == "new_split_kfold" and task.metadata["nfolds"] == 5
    full = eval_tasks.plan_task("gm-family-5fold", "full")
    built = [(s, f, labels[0]) for s in task.splits for f, labels in task.examples(s)]
    planned = [(c.split, c.filename, c.labels[0]) for c in full.clips]
    for clips, vocabulary in ((built, task.vocabulary), (planned, full.vocabulary)):
        folds: dict[str, set[tuple[int, str]]] = {}
        for split, filename, family in clips:
            folds.setdefault(split, set()).add((_program(filename), family))
        for f, members in folds.items():
            assert {family for _, family in members} == set(vocabulary), f  # stratified
            for g, others in folds.items():
                if f != g:  # grouped: no instrument in two folds
                    assert {p for p, _ in members}.isdisjoint({p for p, _ in others})
    assert len(eval_tasks.plan_task("gm-family-5fold", "full").vocabulary) == 15


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_heareval_reads_our_tasks(small: dict[str, Path]) -> None:
    """heareval's own readers and scores accept what we write."""
    from heareval.predictions.task_predictions import (
        get_splits_from_metadata,
        label_vocab_nlabels,
    )
    from heareval.score import ChromaAccuracy, available_scores, label_vocab_as_dict

    for path in small.values():
        meta = json.loads((path / "task_metadata.json").read_text())
        assert set(meta["evaluation"]) <= set(available_scores)
        vocab, nlabels = label_vocab_nlabels(path)
        assert nlabels == len(load_task(path).vocabulary)
        label_to_idx = label_vocab_as_dict(vocab, key="label", value="idx")
        for split in meta["splits"]:
            for labels in json.loads((path / f"{split}.json").read_text()).values():
                assert all(label in label_to_idx for label in labels)
        data_splits = get_splits_from_metadata(meta)
        assert len(data_splits) == meta.get("nfolds", 1)
    # An octave error is a pitch error but not a chroma error, with our label order.
    vocab = eval_tasks.plan_task("gm-pitch", "full").vocabulary
    label_to_idx = {label: i for i, label in enumerate(vocab)}
    targets = np.eye(len(vocab))[[label_to_idx["60"], label_to_idx["67"]]]
    octave_up = np.eye(len(vocab))[[label_to_idx["72"], label_to_idx["55"]]]
    assert ChromaAccuracy(label_to_idx=label_to_idx)(octave_up, targets) == 1.0
    assert available_scores["pitch_acc"](label_to_idx=label_to_idx)(octave_up, targets) == 0.0


def test_gm_phrase_5fold_has_esc50s_shape_and_holds_out_keys(
    small: dict[str, Path], tmp_path: Path
) -> None:
    task = load_task(small["gm-phrase-5fold"])
    meta = task.metadata
    assert meta["split_mode"] == "presplit_kfold" and meta["nfolds"] == 5
    assert task.splits == [f"fold{i:02d}" for i in range(5)]
    assert task.duration == 5.0 and task.evaluation == ["top1_acc"]
    for fold in task.splits:  # every class in every fold
        assert sorted(labels[0] for _, labels in task.examples(fold)) == sorted(task.vocabulary)
    again = eval_tasks.build("gm-phrase-5fold", tmp_path / "again", size="small", seed=0)
    assert _tree_bytes(again) == _tree_bytes(small["gm-phrase-5fold"])
    other = eval_tasks.build("gm-phrase-5fold", tmp_path / "other", size="small", seed=1)
    assert _tree_bytes(other) != _tree_bytes(again)
    # The full plan, without rendering it: 50 classes, 4 clips each per fold, phrases of
    # several notes that end before the clip does, each fold on keys no other fold plays.
    full = eval_tasks.plan_task("gm-phrase-5fold", "full")
    assert len(full.vocabulary) == 50 and len(full.clips) == 1000
    assert {gm.program_name(p) for p in gm.SCENE_EFFECTS} <= set(full.vocabulary)
    fold_keys = full.metadata["fold_keys"]
    assert sorted(k for ks in fold_keys.values() for k in ks) == list(range(48, 84))
    per_fold: dict[str, list[str]] = {}
    for c in full.clips:
        per_fold.setdefault(c.split, []).append(c.labels[0])
        [phrase] = c.sounds
        assert len(phrase.notes) >= 3 and 0 <= phrase.onset <= 0.5 and phrase.end <= 4.8
        assert {n.pitch for n in phrase.notes} <= set(fold_keys[c.split])
    assert all(sorted(v) == sorted(full.vocabulary * 4) for v in per_fold.values())


def test_gm_tags_varlen_has_fsd50ks_shape(small: dict[str, Path], tmp_path: Path) -> None:
    path = small["gm-tags-varlen"]
    task = load_task(path)
    assert json.loads((path / "task_metadata.json").read_text())["sample_duration"] is None
    assert task.duration is None and task.num_samples is None and task.multilabel
    assert task.metadata["split_mode"] == "trainvaltest"
    assert task.evaluation == ["mAP", "d_prime", "aucroc", "top1_acc"]
    frames = []
    for split in task.splits:
        for filename, labels in task.examples(split):
            info = sf.info(str(task.wav_path(split, filename)))
            frames.append(info.frames)
            programs = [int(p) for p in re.search(r"_p([\d-]+)\.wav", filename)[1].split("-")]
            families = [gm.family(p) for p in programs]
            assert labels == families + [gm.program_name(p) for p in programs]
            assert len(set(families)) == len(families)
    assert len(set(frames)) > len(frames) // 2  # lengths vary ...
    assert 0.3 * 16000 <= min(frames) and max(frames) <= 6 * 16000  # ... within 0.3-6 s
    again = eval_tasks.build("gm-tags-varlen", tmp_path / "again", size="small", seed=0)
    assert _tree_bytes(again) == _tree_bytes(path)
    full = eval_tasks.plan_task("gm-tags-varlen", "full")
    assert len(full.vocabulary) == 60 and len(full.clips) == 1000
    seconds = sorted(c.seconds for c in full.clips)
    assert seconds[0] < 0.4 and seconds[-1] > 5.5 and 1.0 < seconds[500] < 1.7
    keys = {s: {n.pitch for c in full.clips if c.split == s for p in c.sounds for n in p.notes}
            for s in task.splits}
    assert keys["test"].isdisjoint(keys["train"] | keys["valid"])
    assert keys["valid"].isdisjoint(keys["train"])


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_gm_tags_varlen_every_listed_score_computes(small: dict[str, Path]) -> None:
    """heareval's own score functions give a number for each listed score on the small
    test split (d_prime and aucroc quietly return nan when a label lacks positives or
    negatives), and every label of every split has both, for other seeds too. A perfect
    ranking makes heareval's d_prime inf (norm.ppf(1)), which the README points out."""
    from heareval.score import available_scores

    task = load_task(small["gm-tags-varlen"])
    label_to_idx = {label: i for i, label in enumerate(task.vocabulary)}
    examples = task.examples("test")
    targets = np.zeros((len(examples), len(task.vocabulary)))
    for i, (_, labels) in enumerate(examples):
        targets[i, [label_to_idx[x] for x in labels]] = 1
    assert 0 < targets.sum(axis=0).min() and targets.sum(axis=0).max() < len(examples)
    scores = {
        name: available_scores[name](label_to_idx=label_to_idx) for name in task.evaluation
    }
    guesses = np.random.default_rng(0).random(targets.shape)
    for name, score in scores.items():
        assert np.isfinite(score(guesses, targets)), name
    perfect = targets + 0.5 * guesses
    assert scores["mAP"](perfect, targets) == scores["aucroc"](perfect, targets) == 1.0
    assert scores["d_prime"](perfect, targets) == np.inf
    for seed in range(1, 30):  # the plan checks every label of every split itself
        eval_tasks.plan_task("gm-tags-varlen", "small", seed)
    with pytest.raises(ValueError, match="d_prime and aucroc need positives and negatives"):
        gm_tags_varlen._check_every_label_decides(
            [c for c in eval_tasks.plan_task("gm-tags-varlen", "small").clips
             if c.split != "valid" or "Brass" not in c.labels], task.vocabulary
        )


def test_check_task_on_clips_of_varying_length(small: dict[str, Path], tmp_path: Path) -> None:
    """Any length passes where sample_duration is null; empty, silent, NaN, stereo, wrong
    rate and unreadable clips do not."""
    task = Path(shutil.copytree(small["gm-tags-varlen"], tmp_path / "task"))
    files = sorted((task / "16000" / "test").iterdir())
    longer, empty, silent, nan, stereo, wrong_rate, garbage = files[:7]
    sf.write(str(longer), np.full(50000, 0.1, np.float32), 16000, subtype="PCM_16")
    sf.write(str(empty), np.zeros(0, np.float32), 16000)
    sf.write(str(silent), np.zeros(9000, np.float32), 16000, subtype="PCM_16")
    sf.write(str(nan), np.array([0.5, np.nan] * 4000, np.float32), 16000, subtype="FLOAT")
    sf.write(str(stereo), np.full((9000, 2), 0.1, np.float32), 16000)
    sf.write(str(wrong_rate), np.full(9000, 0.1, np.float32), 22050)
    garbage.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" * 8)
    problems = check_task(task)
    expected = [
        f"{empty}: empty (no samples)",
        f"{silent}: silent",
        f"{nan}: NaN or infinite samples",
        f"{stereo}: 2 channels, expected mono",
        f"{wrong_rate}: 22050 Hz, expected 16000 Hz",
        f"{garbage}: cannot read audio",
    ]
    assert len(problems) == len(expected), problems
    for e in expected:
        assert any(p.startswith(e) for p in problems), (e, problems)


def test_phrase_plays_in_time_on_one_channel() -> None:
    """A phrase renders the same after another sound as on a fresh synth, lets a repeated
    key sound again, and refuses what one channel cannot play."""
    phrase = Phrase((Note(0, 60, 100, 0.1, 0.2), Note(0, 60, 90, 0.3, 0.2),
                     Note(0, 64, 80, 0.5, 0.3)))
    fresh = Renderer().phrase(phrase, 16000)
    r = Renderer()
    r.note(89, 72, 127, 16000, 16000)
    np.testing.assert_array_equal(r.phrase(phrase, 16000), fresh)
    assert np.abs(fresh[3200:4800]).max() > 0.1  # the repeated key, pressed again at 0.3 s
    with pytest.raises(ValueError, match="presses key 60 while it is held"):
        r.phrase(Phrase((Note(0, 60, 100, 0.0, 0.5), Note(0, 60, 100, 0.2, 0.1))), 16000)
    with pytest.raises(ValueError, match="one program"):
        r.phrase(Phrase((Note(0, 60, 100, 0.0, 0.1), Note(40, 62, 100, 0.2, 0.1))), 16000)


def test_layout_needs_a_length_for_every_clip_of_a_varlen_task(tmp_path: Path) -> None:
    plan = eval_tasks.plan_task("gm-tags-varlen", "small")
    clip = plan.clips[0]
    no_length = Clip(clip.split, clip.filename, clip.labels, clip.sounds, clip.peak_db)
    with pytest.raises(ValueError, match="needs its own length"):
        write_task(tmp_path / "t", TaskPlan(plan.metadata, plan.vocabulary, [no_length]))
    fixed = eval_tasks.plan_task("gm-program", "small")
    c = fixed.clips[0]
    with_length = Clip(c.split, c.filename, c.labels, c.sounds, c.peak_db, 0.5)
    with pytest.raises(ValueError, match="needs no length of its own"):
        write_task(tmp_path / "t", TaskPlan(fixed.metadata, fixed.vocabulary, [with_length]))
    assert not (tmp_path / "t").exists()


def _variant(filename: str) -> str:
    return filename.split("_", 1)[0]


@needs_espeak
def test_espeak_word_small_holds_out_voices(small: dict[str, Path]) -> None:
    task = load_task(small["espeak-word"])
    assert task.metadata["evaluation"] == ["top1_acc"] and task.prediction_type == "multiclass"
    assert task.vocabulary == espeak_word.SMALL_WORDS
    variants = {s: {_variant(f) for f, _ in task.examples(s)} for s in task.splits}
    assert {s: sorted(v, key=str.lower) for s, v in variants.items()} == task.metadata[
        "split_variants"
    ]
    assert [len(variants[s]) for s in task.splits] == [3, 1, 1]
    assert variants["test"].isdisjoint(variants["train"] | variants["valid"])
    assert variants["valid"].isdisjoint(variants["train"])
    for split in task.splits:
        examples = task.examples(split)
        assert len(examples) == len(variants[split]) * len(task.vocabulary)
        for filename, [label] in examples:
            assert filename.split("_")[1] == label
            audio, _ = sf.read(str(task.wav_path(split, filename)), dtype="float32")
            # The whole word fits: nothing but silence in the final 10 ms fade.
            assert np.abs(audio[-160:]).max() < 1e-3, filename
            assert np.abs(audio).max() > 0.2


@needs_espeak
def test_espeak_word_is_deterministic_byte_for_byte(
    small: dict[str, Path], tmp_path: Path
) -> None:
    again = eval_tasks.build("espeak-word", tmp_path / "again", size="small", seed=0)
    assert _tree_bytes(again) == _tree_bytes(small["espeak-word"])
    other = eval_tasks.build("espeak-word", tmp_path / "other", size="small", seed=1)
    assert _tree_bytes(other) != _tree_bytes(again)


def test_espeak_word_full_plan_holds_out_voice_families() -> None:
    """Planned without espeak-ng: 20 words, every variant in exactly one split, families
    kept whole, about 60/20/20, and accents, speeds and pitches spread over every split."""
    full = eval_tasks.plan_task("espeak-word", "full")
    assert full.vocabulary == espeak_word.WORDS and len(full.clips) == 96 * 20 * 2
    dealt = full.metadata["split_variants"]
    assert sorted(sum(dealt.values(), []), key=str.lower) == sorted(espeak.VARIANTS, key=str.lower)
    assert [len(dealt[s]) for s in ("train", "valid", "test")] == [58, 19, 19]
    families = {s: {espeak.variant_family(v) for v in vs} for s, vs in dealt.items()}
    assert families["test"].isdisjoint(families["train"] | families["valid"])
    assert families["valid"].isdisjoint(families["train"])
    assert espeak.variant_family("robosoft7") == "robosoft" and espeak.variant_family("m3") == "m3"
    assert espeak.variant_family("anikaRobot") == espeak.variant_family("anika")
    assert len({c.filename.lower() for c in full.clips}) == len(full.clips)
    for split in ("train", "valid", "test"):
        utterances = [c.sounds[0] for c in full.clips if c.split == split]
        assert {u.accent for u in utterances} == set(espeak.ACCENTS)
        assert min(u.speed for u in utterances) < 145 and max(u.speed for u in utterances) > 195
        assert min(u.pitch for u in utterances) < 25 and max(u.pitch for u in utterances) > 75
        assert {u.variant for u in utterances} == set(dealt[split])


def test_espeak_word_without_espeak_is_a_one_line_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UserError, match=r"espeak-ng.*apt-get install -y espeak-ng") as e:
        eval_tasks.build("espeak-word", tmp_path / "out", size="small")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()

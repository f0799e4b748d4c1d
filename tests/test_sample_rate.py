"""A backbone gets audio at its own rate: from the task's folder at that rate when there is
one (as heareval reads `<model.sample_rate>/`), resampled from another folder when not."""

import json
import logging
from pathlib import Path

import hear_module_48k
import numpy as np
import pytest
import soundfile as sf

from hear_contrastune.data.embeddings import open_embedded_task, read_split
from hear_contrastune.embed import embed_tasks
from hear_contrastune.training.config import TuneConfig
from hear_contrastune.training.loop import tune

PROBE = "hear:hear_module_48k"


@pytest.fixture(scope="module")
def tone_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 s tones at 440 or 660 Hz, 16 kHz audio only; 8 clips a split."""
    task_dir = tmp_path_factory.mktemp("tasks") / "tones"
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    for split in ("train", "valid", "test"):
        (task_dir / "16000" / split).mkdir(parents=True)
        labels = {}
        for i in range(8):
            hz = (440, 660)[i % 2]
            tone = 0.3 * np.sin(2 * np.pi * hz * t + rng.uniform(0, 6))
            sf.write(str(task_dir / "16000" / split / f"{i}.wav"), tone, 16000, subtype="FLOAT")
            labels[f"{i}.wav"] = [str(hz)]
        (task_dir / f"{split}.json").write_text(json.dumps(labels))
    (task_dir / "labelvocabulary.csv").write_text("idx,label\n0,440\n1,660\n")
    (task_dir / "task_metadata.json").write_text(json.dumps({
        "task_name": "tones", "embedding_type": "scene", "prediction_type": "multiclass",
        "split_mode": "trainvaltest", "sample_duration": 1.0,
        "splits": ["train", "valid", "test"], "evaluation": ["top1_acc"]}))
    return task_dir


def test_embed_feeds_a_48k_module_48k_audio(tone_task: Path, tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.INFO):
        [emb_dir] = embed_tasks(PROBE, tone_task, tmp_path / "emb", device="cpu")
    assert "resampled on the fly to 48000 Hz" in caplog.text
    task = open_embedded_task(emb_dir)
    x, labels = read_split(task, "test")
    np.testing.assert_array_equal(x[:, 0], 48000)  # one second at 48 kHz
    np.testing.assert_allclose(x[:, 1], [float(y[0]) for y in labels], atol=1.5)


def test_tune_feeds_a_48k_module_48k_audio(tone_task: Path, tmp_path: Path) -> None:
    hear_module_48k.SEEN.clear()
    cfg = TuneConfig(task_dir=str(tone_task), backbone=PROBE, epochs=1, batch_size=4,
                     m_per_class=2, select_max_clips=8)
    tune(cfg, tmp_path / "run", device="cpu", workers=0)
    # model selection embeds whole clips: 48000 samples; training views are crops of those
    assert 48000 in hear_module_48k.SEEN
    assert max(hear_module_48k.SEEN) <= 48000 * 1.11 and min(hear_module_48k.SEEN) > 16000 * 2

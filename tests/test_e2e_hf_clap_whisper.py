"""`tune` and `compare` end to end with tiny CLAP and Whisper folders on a small suite task
(16 kHz audio, resampled to CLAP's 48 kHz on the fly)."""

from dataclasses import replace

import pytest

pytest.importorskip("transformers")

from hf_tiny import save_clap, save_whisper  # noqa: E402

import eval_tasks  # noqa: E402
import hear_contrastune  # noqa: E402
from hear_contrastune.comparison.compare import CompareConfig, compare  # noqa: E402
from hear_contrastune.training.config import DEFAULTS, TuneConfig  # noqa: E402
from hear_contrastune.training.loop import tune  # noqa: E402
from hear_contrastune.validate import validate  # noqa: E402


def test_tune_clap_one_epoch_then_the_hear_validator(tmp_path):
    save_clap(tmp_path / "clap", fused=True)
    task = eval_tasks.build("gm-program", tmp_path / "tasks", size="small")
    spec = f"hf:{tmp_path / 'clap'}?embed=hidden"
    cfg = TuneConfig(task_dir=str(task), backbone=spec, epochs=1, batch_size=8, m_per_class=2)
    best = tune(cfg, tmp_path / "run", device="cpu")
    model = hear_contrastune.load_model(str(best))
    assert model.backbone.spec == spec and model.sample_rate == 48000
    result = validate(str(best), "cpu")
    assert result.returncode == 0, result.stderr[-2000:]


def test_compare_with_whisper(tmp_path):
    save_whisper(tmp_path / "whisper")
    eval_tasks.build("gm-program", tmp_path / "tasks", size="small")
    tuning = replace(DEFAULTS, backbone=f"hf:{tmp_path / 'whisper'}", epochs=1, batch_size=8)
    cfg = CompareConfig(tasks_dir=tmp_path / "tasks", tuning=tuning, seeds=1,
                        methods=("frozen", "contrastive"), probes=("logistic", "knn"))
    records = compare(cfg, tmp_path / "run", device="cpu")
    assert {(r.method, r.probe) for r in records} == {
        (m, p) for m in ("frozen", "contrastive") for p in ("logistic", "knn")}
    assert all(0.0 <= r.score <= 1.0 for r in records)
    assert (tmp_path / "run" / "report.md").is_file()

"""The HEAR 2021 API: shapes and attributes, checkpoints, and the official validator."""

import pytest
import torch

import hear_contrastune
from hear_contrastune.backbones import build_backbone
from hear_contrastune.backbones.checkpoint import save_checkpoint
from hear_contrastune.errors import UserError
from hear_contrastune.validate import validate


@pytest.fixture(scope="module")
def tuned_checkpoint(tmp_path_factory, tone_batch):
    """A real checkpoint: the Resemblyzer encoder after a few gradient steps."""
    backbone = build_backbone("resemblyzer")
    opt = torch.optim.SGD(backbone.parameters(), lr=0.5)
    audio = torch.from_numpy(tone_batch)
    for _ in range(3):
        emb = backbone(audio)
        loss = (emb[0] * emb[1]).sum()  # push two clips apart: changes the weights
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("run") / "best.pt"
    save_checkpoint(path, backbone, {"task": "tones", "epoch": 3})
    return path


def test_scene_and_timestamp_shapes():
    model = hear_contrastune.load_model("resemblyzer")
    assert (model.sample_rate, model.scene_embedding_size) == (16000, 256)
    audio = torch.rand(3, 8000) * 2 - 1  # shorter than one partial: padded, still embedded
    assert hear_contrastune.get_scene_embeddings(audio, model).shape == (3, 256)
    emb, times = hear_contrastune.get_timestamp_embeddings(audio, model)
    assert emb.shape == (3, 51, 256) and times.shape == (3, 51)
    assert emb.dtype == torch.float32 and float(times[0, 1] - times[0, 0]) == 10.0


def test_checkpoint_round_trip_changes_embeddings(tuned_checkpoint, tone_batch):
    audio = torch.from_numpy(tone_batch)
    tuned = hear_contrastune.load_model(str(tuned_checkpoint))
    untuned = hear_contrastune.load_model("resemblyzer")
    assert tuned.meta["task"] == "tones"
    a = hear_contrastune.get_scene_embeddings(audio, tuned)
    b = hear_contrastune.get_scene_embeddings(audio, untuned)
    assert not torch.allclose(a, b, atol=1e-3)


def test_chunked_embedding_equals_one_pass(tone_batch):
    model = hear_contrastune.load_model("resemblyzer")
    audio = torch.from_numpy(tone_batch)
    whole = hear_contrastune.get_scene_embeddings(audio, model)
    model.backbone.max_batch_samples = audio.shape[1]  # force one clip per chunk
    torch.testing.assert_close(hear_contrastune.get_scene_embeddings(audio, model), whole,
                               atol=1e-5, rtol=0)


def test_bad_checkpoints_are_one_line_errors(tmp_path, tuned_checkpoint):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        hear_contrastune.load_model(str(garbage))
    with pytest.raises(UserError, match="no such checkpoint"):
        hear_contrastune.load_model(str(tmp_path / "missing.pt"))
    ckpt = torch.load(tuned_checkpoint, weights_only=True)
    ckpt["backbone"] = "crepe-tiny"  # Resemblyzer weights under another backbone's name
    wrong = tmp_path / "wrong.pt"
    torch.save(ckpt, wrong)
    with pytest.raises(UserError, match="do not fit backbone 'crepe-tiny'"):
        hear_contrastune.load_model(str(wrong))


@pytest.mark.parametrize("which", ["backbone", "checkpoint"])
def test_official_hear_validator_accepts(which, tuned_checkpoint):
    model = "resemblyzer" if which == "backbone" else str(tuned_checkpoint)
    result = validate(model, "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Looks good!" in result.stdout

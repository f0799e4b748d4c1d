"""`hear:` backbones: HEAR 2021 modules wrapped and tuned through their own API functions.

hear_contrastune is itself a HEAR module that embeds under torch.no_grad(): it must embed
but refuse tuning. tests/hear_module_fixture.py is a tiny differentiable HEAR module.
"""

import os
from pathlib import Path

import pytest
import torch
from backbone_checks import supcon_losses

import hear_contrastune
from hear_contrastune.backbones import PREFIXES, build_backbone, is_backbone_spec
from hear_contrastune.backbones.checkpoint import save_checkpoint
from hear_contrastune.errors import UserError
from hear_contrastune.validate import validate

FIXTURE = "hear:hear_module_fixture"


def test_a_no_grad_module_embeds_but_refuses_tuning(tone_batch):
    backbone = build_backbone("hear:hear_contrastune:resemblyzer")
    audio = torch.from_numpy(tone_batch)
    reference = hear_contrastune.load_model("resemblyzer")
    torch.testing.assert_close(backbone(audio),
                               hear_contrastune.get_scene_embeddings(audio, reference))
    frames, times = backbone.frames(audio)
    assert frames.shape == (4, times.shape[0], 256) and float(times[1] - times[0]) == 10.0
    message = ("hear:hear_contrastune: get_scene_embeddings is not differentiable (it runs "
               "under torch.no_grad()); it can be embedded but not tuned")
    with pytest.raises(UserError) as error:
        backbone.check_trainable()
    assert str(error.value) == message


def test_a_differentiable_module_tunes():
    backbone = build_backbone(FIXTURE)
    backbone.check_trainable()
    assert (backbone.sample_rate, backbone.embedding_size, backbone.frame_embedding_size) == (
        16000, 16, 16)
    losses = supcon_losses(backbone, lr=1e-2)
    assert losses[-1] < losses[0]
    assert all(p.grad is not None for p in backbone.parameters())


def test_frozen_module_is_refused():
    backbone = build_backbone(FIXTURE)
    backbone.requires_grad_(False)
    with pytest.raises(UserError, match="every parameter is frozen"):
        backbone.check_trainable()


def test_checkpoint_round_trip_and_hear_validator(tmp_path, monkeypatch):
    backbone = build_backbone(FIXTURE)
    supcon_losses(backbone, steps=2, lr=1e-2)
    path = tmp_path / "best.pt"
    save_checkpoint(path, backbone, {"task": "tones"})
    model = hear_contrastune.load_model(str(path))
    audio = 0.3 * torch.randn(3, 16000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = backbone.eval()(audio)
        untuned = build_backbone(FIXTURE).eval()(audio)
    torch.testing.assert_close(hear_contrastune.get_scene_embeddings(audio, model), expected)
    assert not torch.allclose(untuned, expected, atol=1e-4)
    # the validator's child process imports the fixture module by name, as load_model does
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])))
    result = validate(str(path), "cpu")
    assert result.returncode == 0, result.stderr[-2000:]


def test_weights_path_is_made_absolute(tmp_path, monkeypatch):
    weights = tmp_path / "tiny.pt"
    torch.save(build_backbone(FIXTURE).model.state_dict(), weights)
    monkeypatch.chdir(tmp_path)
    backbone = build_backbone(f"{FIXTURE}:tiny.pt")
    assert backbone.spec == f"{FIXTURE}:{weights}"
    assert is_backbone_spec(backbone.spec) and "hear:" in PREFIXES


@pytest.mark.parametrize("spec, message", [
    ("hear:no_such_hear_module", "no module named 'no_such_hear_module' is installed"),
    ("hear:json", "not a HEAR module .lacks load_model, get_scene_embeddings"),
    ("hear:", "name a HEAR module"),
    ("hear:<module>[:<weights>]", "a pattern, not a backbone"),
])
def test_bad_modules_are_one_line_errors(spec, message):
    with pytest.raises(UserError, match=message):
        build_backbone(spec)

"""Backbones against their reference implementations, with gradients, on the shipped weights."""

import numpy as np
import pytest
import torch

from hear_contrastune.backbones import BACKBONES, build_backbone
from hear_contrastune.errors import UserError


@pytest.fixture(scope="module")
def resemblyzer():
    return build_backbone("resemblyzer").eval()


@pytest.mark.parametrize("seconds", [0.5, 1.0, 2.0, 3.74])
def test_resemblyzer_matches_its_reference(resemblyzer, seconds):
    """Our batched torchaudio front-end + partial averaging = VoiceEncoder.embed_utterance."""
    from resemblyzer import VoiceEncoder
    from resemblyzer.audio import normalize_volume

    rng = np.random.default_rng(1)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    wav = (0.05 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)
    reference = VoiceEncoder(device="cpu", verbose=False).embed_utterance(
        normalize_volume(wav, -30, increase_only=True)
    )
    with torch.no_grad():
        ours = resemblyzer(torch.from_numpy(wav)[None])[0].numpy()
    np.testing.assert_allclose(ours, reference, atol=2e-5)


def test_resemblyzer_batch_equals_single_clips(resemblyzer, tone_batch):
    audio = torch.from_numpy(tone_batch)
    with torch.no_grad():
        batched = resemblyzer(audio)
        single = torch.cat([resemblyzer(clip[None]) for clip in audio])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


def test_resemblyzer_cpu_chunks_embed_as_the_whole_batch(tone_batch):
    """Partials in chunks (what makes CPU embedding fast) give the whole batch's rows, in order:
    3 s clips of 3 partials each, 12 in chunks of 5, 5 and 2."""
    backbone = build_backbone("resemblyzer").eval()
    audio = torch.from_numpy(np.ascontiguousarray(
        np.concatenate([tone_batch, tone_batch[::-1]], axis=1)))
    with torch.no_grad():
        backbone.cpu_chunk = 5
        chunked = backbone(audio)
        backbone.cpu_chunk = 0
        whole = backbone(audio)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)
    assert not torch.allclose(chunked[0], chunked[1], atol=1e-3)  # distinct clips stay apart


def test_crepe_tiny_matches_torchcrepe_embed(tone_batch):
    import torchcrepe

    crepe = build_backbone("crepe-tiny").eval()
    clip = torch.from_numpy(tone_batch[:1])
    reference = torchcrepe.embed(clip, 16000, hop_length=160, model="tiny", device="cpu")
    with torch.no_grad():
        ours, times = crepe.frames(clip)
    torch.testing.assert_close(ours, reference.reshape(ours.shape), atol=1e-4, rtol=1e-4)
    assert times[1] - times[0] == pytest.approx(10.0)


@pytest.mark.parametrize("spec", ["resemblyzer", "crepe-tiny"])
def test_gradients_reach_every_parameter(spec, tone_batch):
    backbone = build_backbone(spec).train()
    backbone(torch.from_numpy(tone_batch)).pow(2).sum().backward()
    trainable = [p for p in backbone.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)


def test_crepe_batch_norm_stays_frozen_in_train_mode():
    crepe = build_backbone("crepe-tiny").train()
    norms = [m for m in crepe.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)


def test_unknown_backbone_is_one_line_error():
    with pytest.raises(UserError, match="unknown; choose from"):
        build_backbone("wav2vec9")
    assert "resemblyzer" in BACKBONES

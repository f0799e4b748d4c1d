"""`hf:` CLAP and Whisper backbones on tiny random folders: front ends and outputs against
transformers' feature extractors and models, frame times, windows, tuning, checkpoints and the
HEAR validator."""

import pytest
import torch

pytest.importorskip("transformers")

import transformers  # noqa: E402
from backbone_checks import supcon_losses  # noqa: E402
from hf_tiny import WHISPER_WINDOW, save_clap, save_whisper  # noqa: E402

import hear_contrastune  # noqa: E402
from hear_contrastune.backbones import build_backbone  # noqa: E402
from hear_contrastune.backbones.checkpoint import save_checkpoint  # noqa: E402
from hear_contrastune.errors import UserError  # noqa: E402
from hear_contrastune.validate import validate  # noqa: E402


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("hf")
    save_clap(root / "clap", fused=False)
    save_clap(root / "clap-fused", fused=True)
    save_whisper(root / "whisper")
    return {name: str(root / name) for name in ("clap", "clap-fused", "whisper")}


def noise(clips: int, samples: int, seed: int) -> torch.Tensor:
    return 0.3 * torch.randn(clips, samples, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["clap", "clap-fused"])
def test_clap_matches_the_extractor_and_model(folders, name):
    """0.6 s clips, repeat-padded to the 1 s window: the extractor's features to 1e-4, and the
    model's projected and pooled embeddings (is_longer False: every clip fits the window)."""
    audio = noise(2, 30000, 1)
    extractor = transformers.AutoFeatureExtractor.from_pretrained(folders[name])
    inputs = extractor(list(audio.numpy()), sampling_rate=48000, return_tensors="pt")
    features = inputs.input_features.float()
    reference_class = transformers.ClapModel if name == "clap-fused" else \
        transformers.ClapAudioModelWithProjection
    reference = reference_class.from_pretrained(folders[name]).eval()
    with torch.no_grad():
        out = reference.audio_model(input_features=features,
                                    is_longer=torch.zeros(2, 1, dtype=torch.bool))
        projected = reference.audio_projection(out.pooler_output)
        backbone = build_backbone(f"hf:{folders[name]}").eval()
        assert backbone.sample_rate == 48000 and backbone.embedding_size == 24
        windows, lengths = backbone.windows(audio)
        assert windows.shape == (2, 1, 48000) and lengths == [30000]
        torch.testing.assert_close(backbone.features(windows[:, 0]), features,
                                   atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(backbone(audio), projected, atol=1e-4, rtol=1e-4)
        hidden = build_backbone(f"hf:{folders[name]}?embed=hidden").eval()
        assert hidden.embedding_size == 32
        torch.testing.assert_close(hidden(audio), out.pooler_output, atol=1e-4, rtol=1e-4)


def test_clap_frames_follow_the_time_axis_across_windows(folders):
    """2.5 s: 64 columns per 1 s window, 15.7 ms apart (256 image frames for 101 mel frames),
    one regular grid across windows (window 2 starts 64 columns later, at 1003.9 ms), the last
    window's columns kept while their centre is inside the clip; window 2's frames are those of
    the clip cut at its start."""
    backbone = build_backbone(f"hf:{folders['clap']}").eval()
    audio = noise(3, 120000, 2)
    start = round(64 * 4 * 100 / 255 * 480)
    assert backbone.starts(120000) == [0, start, 2 * start]
    with torch.no_grad():
        frames, times = backbone.frames(audio)
        later, later_times = backbone.frames(audio[:, start:])
        single = torch.cat([backbone.frames(clip[None])[0] for clip in audio])
    step = 4 * 100 / 255 * 10  # 4 image frames, 100 mel frames per 255, 10 ms per mel frame
    assert times[0] == pytest.approx(1.5 * 100 / 255 * 10)
    torch.testing.assert_close(times.diff(), torch.full((times.shape[0] - 1,), step),
                               atol=1e-2, rtol=0)
    assert times[-1] < 2500 <= times[-1] + step and frames.shape == (3, times.shape[0], 32)
    rest = times.shape[0] - 64  # the cut clip may keep one more column at its very end
    assert later_times.shape[0] in (rest, rest + 1)
    # times follow the exact grid; the window starts at it rounded to a sample (< 0.011 ms)
    torch.testing.assert_close(later_times[:rest] + start / 48, times[64:], atol=0.011, rtol=0)
    torch.testing.assert_close(later[:, :rest], frames[:, 64:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(single, frames, atol=1e-5, rtol=1e-5)


def test_whisper_matches_the_extractor_and_encoder(folders):
    """pad=30 and pad=none both equal the encoder on a full window; pad=30 on a short clip is
    the encoder's frames of that clip padded to the window, and keeps the frames covering it."""
    extractor = transformers.AutoFeatureExtractor.from_pretrained(folders["whisper"])
    encoder = transformers.WhisperModel.from_pretrained(folders["whisper"]).encoder.eval()
    padded = build_backbone(f"hf:{folders['whisper']}?pad=30").eval()
    unpadded = build_backbone(f"hf:{folders['whisper']}").eval()
    assert unpadded.spec == f"hf:{folders['whisper']}" and padded.sample_rate == 16000
    for samples in (WHISPER_WINDOW, 4000):
        audio = noise(2, samples, 3)
        features = extractor(list(audio.numpy()), sampling_rate=16000, return_tensors="pt",
                             max_length=WHISPER_WINDOW).input_features
        with torch.no_grad():
            expected = encoder(features).last_hidden_state
            torch.testing.assert_close(padded.features(audio), features, atol=1e-4, rtol=1e-4)
            frames, times = padded.frames(audio)
            keep = -(-(samples // 160) // 2)  # tokens of the clip's mel frames
            assert frames.shape == (2, keep, 32)
            torch.testing.assert_close(frames, expected[:, :keep], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(times, 20.0 * torch.arange(keep))
            if samples == WHISPER_WINDOW:
                torch.testing.assert_close(unpadded.frames(audio)[0], expected,
                                           atol=1e-4, rtol=1e-4)


def test_whisper_without_padding_runs_only_the_clip_and_windows_long_clips(folders):
    backbone = build_backbone(f"hf:{folders['whisper']}").eval()
    audio = noise(2, 20000, 4)  # 1.25 s: windows of 0.6, 0.6 and 0.05 s
    with torch.no_grad():
        frames, times = backbone.frames(audio)
        short = backbone.frames(audio[:, :4000])[0]
        features = backbone.features(audio[:, :4000])
        later = backbone.frames(audio[:, WHISPER_WINDOW:2 * WHISPER_WINDOW])[0]
    assert features.shape[-1] == 25  # 4000 / 160 frames, not the window's 60
    assert short.shape[1] == 13 and frames.shape == (2, 30 + 30 + 3, 32)
    torch.testing.assert_close(times, 20.0 * torch.arange(63))
    torch.testing.assert_close(frames[:, 30:60], later, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spec", ["clap-fused?freeze_feature_encoder=1", "whisper?layer=weighted"])
def test_gradients_reach_exactly_the_trainable_parameters_and_supcon_learns(folders, spec):
    name, _, options = spec.partition("?")
    backbone = build_backbone(f"hf:{folders[name]}?{options}")
    backbone.check_trainable()
    backbone(noise(2, 8000, 5)).pow(2).sum().backward()
    for param_name, param in backbone.named_parameters():
        if "mel_conv2d" in param_name or "fusion_model" in param_name or "embed_positions" in \
                param_name:
            continue  # used only for clips marked longer; positions are frozen by transformers
        assert (param.grad is not None) == param.requires_grad, param_name
    losses = supcon_losses(build_backbone(f"hf:{folders[name]}?{options}"))
    assert losses[-1] < losses[0]


def test_clap_batch_norm_keeps_its_pretrained_statistics(folders):
    backbone = build_backbone(f"hf:{folders['clap']}")
    before = backbone.encoder.batch_norm.running_mean.clone()
    assert backbone.training and not backbone.encoder.batch_norm.training
    backbone(noise(4, 8000, 6))
    torch.testing.assert_close(backbone.encoder.batch_norm.running_mean, before)


@pytest.mark.parametrize("options, message", [
    ("clap?layer=1", "CLAP pools as the model does"),
    ("clap?pad=30", "pad= is for Whisper"),
    ("whisper?embed=hidden", "embed= is for CLAP"),
    ("whisper?pad=10", "pad='10': choose none or 30"),
    ("clap?embed=mean", "embed='mean': choose from projection, hidden"),
    ("whisper?pool=cls", "pool=cls is for AST"),
])
def test_bad_options_are_one_line_errors(folders, options, message):
    name, _, query = options.partition("?")
    with pytest.raises(UserError, match=message):
        build_backbone(f"hf:{folders[name]}?{query}")


@pytest.mark.parametrize("spec", ["clap-fused?embed=hidden", "whisper?pad=30&layer=1"])
def test_checkpoint_round_trip_and_hear_validator(folders, spec, tmp_path):
    name, _, options = spec.partition("?")
    backbone = build_backbone(f"hf:{folders[name]}?{options}")
    supcon_losses(backbone, steps=2)
    path = tmp_path / "best.pt"
    save_checkpoint(path, backbone, {"task": "tones"})
    model = hear_contrastune.load_model(str(path))
    assert model.backbone.spec == backbone.spec and model.sample_rate == backbone.sample_rate
    audio = noise(2, backbone.sample_rate, 7)
    with torch.no_grad():
        expected = backbone.eval()(audio)
    torch.testing.assert_close(hear_contrastune.get_scene_embeddings(audio, model), expected)
    embeddings, times = hear_contrastune.get_timestamp_embeddings(audio, model)
    assert embeddings.shape[:2] == (2, times.shape[1])
    step = 1000 * 4 * 100 / 255 / 100 if name.startswith("clap") else 20.0
    torch.testing.assert_close(times.diff(dim=1), torch.full_like(times[:, 1:], step),
                               atol=1e-3, rtol=0)
    result = validate(str(path), "cpu")
    assert result.returncode == 0, result.stderr[-2000:]

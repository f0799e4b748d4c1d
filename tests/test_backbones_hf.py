"""`hf:` backbones on tiny wav2vec2 / HuBERT / WavLM / AST models saved to disk and loaded back
offline: against transformers' own feature extractors and models, options, tuning, checkpoints
and the HEAR validator."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

import transformers  # noqa: E402
from backbone_checks import supcon_losses  # noqa: E402

import hear_contrastune  # noqa: E402
from hear_contrastune.backbones import PREFIXES, build_backbone, is_backbone_spec  # noqa: E402
from hear_contrastune.backbones.checkpoint import save_checkpoint  # noqa: E402
from hear_contrastune.errors import UserError  # noqa: E402
from hear_contrastune.validate import validate  # noqa: E402

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
            feat_proj_dropout=0.0, conv_dim=(16, 16, 16), conv_stride=(5, 4, 4),
            conv_kernel=(10, 4, 4), num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2, vocab_size=8)
HOP, RECEPTIVE_FIELD = 80, 85  # samples, of the conv stack above
FAMILIES = ("wav2vec2", "hubert", "wavlm", "ast")


def save_tiny(family: str, folder) -> None:
    """A randomly initialised tiny model and its feature extractor, as save_pretrained writes."""
    torch.manual_seed(0)
    if family == "ast":
        # patch 6 > time stride 4, as AST's 16 > 10: long clips need overlapping windows
        config = transformers.ASTConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            patch_size=6, frequency_stride=4, time_stride=4, num_mel_bins=16, max_length=32)
        model = transformers.ASTForAudioClassification(config)
        extractor = transformers.ASTFeatureExtractor(num_mel_bins=16, max_length=32)
    else:
        config_class, model_class = {
            "wav2vec2": (transformers.Wav2Vec2Config, transformers.Wav2Vec2ForCTC),
            "hubert": (transformers.HubertConfig, transformers.HubertModel),
            "wavlm": (transformers.WavLMConfig, transformers.WavLMModel),
        }[family]
        # HuBERT as the large models are built: stable layer norm, no normalisation
        stable = family == "hubert"
        config = config_class(**TINY, do_stable_layer_norm=stable,
                              feat_extract_norm="layer" if stable else "group")
        model = model_class(config)
        extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=not stable)
    model.save_pretrained(folder)
    extractor.save_pretrained(folder)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("hf")
    for family in FAMILIES:
        save_tiny(family, root / family)
    return {family: str(root / family) for family in FAMILIES}


def reference(folder: str, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' own path: feature extractor on numpy, then the base model."""
    extractor = transformers.AutoFeatureExtractor.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    inputs = extractor(list(audio.numpy()), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        return inputs.input_values, model(inputs.input_values)


@pytest.mark.parametrize("family", FAMILIES)
def test_matches_transformers(folders, family):
    """Batched torch preprocessing + model = the feature extractor + model, clip by clip."""
    audio = 0.3 * torch.randn(2, 4800, generator=torch.Generator().manual_seed(1))
    inputs, out = reference(folders[family], audio)
    if family == "ast":  # 0.3 s fits one window: the CLS pooler is AST's own
        backbone = build_backbone(f"hf:{folders[family]}?pool=cls").eval()
        with torch.no_grad():
            windows, _ = backbone.windows(audio)
            torch.testing.assert_close(windows, inputs, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(backbone(audio), out.pooler_output, atol=1e-4, rtol=1e-4)
    else:
        backbone = build_backbone(f"hf:{folders[family]}").eval()
        with torch.no_grad():
            torch.testing.assert_close(backbone(audio), out.last_hidden_state.mean(1),
                                       atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_frames_are_regular_and_batching_changes_nothing(folders, family):
    backbone = build_backbone(f"hf:{folders[family]}").eval()
    audio = 0.3 * torch.randn(3, 8000, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        frames, times = backbone.frames(audio)
        single = torch.cat([backbone.frames(clip[None])[0] for clip in audio])
    torch.testing.assert_close(frames, single, atol=1e-5, rtol=1e-5)
    step = times.diff()
    assert frames.shape[:2] == (3, times.shape[0]) and frames.shape[2] == 32
    if family == "ast":  # 4-frame columns: 40 ms; 0.5 s (48 frames) needs 2 windows of 7
        assert torch.allclose(step, torch.tensor(40.0))
        assert times.shape[0] == 12 and float(times[0]) == pytest.approx((2.5 * 160 + 200) / 16)
    else:
        assert torch.allclose(step, torch.tensor(1000.0 * HOP / 16000))
        assert times.shape[0] == (8000 - RECEPTIVE_FIELD) // HOP + 1


def test_ast_windows_continue_the_column_grid(folders):
    """Window 2 is window 1 of the clip cut 7 columns (28 frames) later: no column is lost."""
    backbone = build_backbone(f"hf:{folders['ast']}")
    audio = 0.3 * torch.randn(1, 8000, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        windows, columns = backbone.windows(audio)
        later, _ = backbone.windows(audio[:, 28 * 160:])
    assert windows.shape == (2, 32, 16) and columns == 12
    torch.testing.assert_close(windows[1, :20], later[0, :20])


def test_layer_choice_drops_the_layers_above(folders):
    audio = 0.3 * torch.randn(2, 4800, generator=torch.Generator().manual_seed(3))
    folder = folders["wav2vec2"]
    _, out = reference(folder, audio)
    extractor = transformers.AutoFeatureExtractor.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    inputs = extractor(list(audio.numpy()), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        layer1 = model(inputs.input_values, output_hidden_states=True).hidden_states[1]
    backbone = build_backbone(f"hf:{folder}?layer=1").eval()
    assert not any(".layers.1." in key for key in backbone.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(backbone.frames(audio)[0], layer1, atol=1e-4, rtol=1e-4)


def trainable(backbone) -> set[str]:
    return {name for name, p in backbone.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "ast"])
def test_freezing_options(folders, family):
    folder = folders[family]
    everything = trainable(build_backbone(f"hf:{folder}"))
    encoder = "embeddings." if family == "ast" else "feature_extractor."
    no_encoder = trainable(build_backbone(f"hf:{folder}?freeze_feature_encoder=1"))
    assert no_encoder == {n for n in everything if encoder not in n}
    top_only = trainable(build_backbone(f"hf:{folder}?freeze_layers=1"))
    assert top_only == trainable(build_backbone(f"hf:{folder}?train_top=1"))
    assert top_only and all(".layers.1." in n or "layer_norm" in n or "layernorm" in n
                            for n in top_only)
    # weighted: only the layer weights, no final norm (last_hidden_state is not used)
    weights_only = build_backbone(f"hf:{folder}?layer=weighted&train_top=0")
    assert trainable(weights_only) == {"layer_weights"}
    assert [g["name"] for g in weights_only.param_groups()] == ["new"]
    frozen = build_backbone(f"hf:{folder}?layer=2&freeze_layers=2")
    with pytest.raises(UserError, match="every parameter is frozen"):
        frozen.check_trainable()


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_reach_exactly_the_trainable_parameters(folders, family):
    backbone = build_backbone(f"hf:{folders[family]}?layer=weighted&freeze_feature_encoder=1")
    backbone.check_trainable()
    audio = 0.3 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(4))
    backbone(audio).pow(2).sum().backward()
    for name, param in backbone.named_parameters():
        if name.endswith("masked_spec_embed"):
            continue  # used only where SpecAugment happens to mask
        assert (param.grad is not None) == param.requires_grad, name
    groups = {g["name"]: g["params"] for g in backbone.param_groups()}
    assert groups["new"] == [backbone.layer_weights]


@pytest.mark.parametrize("family", FAMILIES)
def test_supcon_steps_reduce_the_loss(folders, family):
    losses = supcon_losses(build_backbone(f"hf:{folders[family]}?layer=weighted"))
    assert losses[-1] < losses[0]


def test_spec_is_canonical_and_rebuilds(folders, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = os.path.relpath(folders["wavlm"])
    backbone = build_backbone(f"hf:{folders['wavlm']}?train_top=1&pool=max&layer=2")
    assert backbone.spec == f"hf:{folders['wavlm']}?layer=2&pool=max&train_top=1"
    assert build_backbone(backbone.spec).spec == backbone.spec
    assert build_backbone(f"hf:{relative}?layer=last").spec == f"hf:{folders['wavlm']}"
    assert is_backbone_spec(backbone.spec) and PREFIXES["hf:"][1] == "hf:<folder>[?options]"


@pytest.mark.parametrize("options, message", [
    ("?layer=3", "layer=3: the model has 2 layers"),
    ("?layer=0", "choose last, weighted or a layer number >= 1"),
    ("?pool=cls", "pool=cls is for AST"),
    ("?freeze_layers=1&train_top=1", "not both"),
    ("?train_top=3", "train_top=3: only 2 layers"),
    ("?freeze_layers=x", "must be a whole number"),
    ("?lr=3", "bad option 'lr=3'"),
])
def test_bad_options_are_one_line_errors(folders, options, message):
    with pytest.raises(UserError, match=message):
        build_backbone(f"hf:{folders['wav2vec2']}{options}")


def test_bad_folders_are_one_line_errors(folders, tmp_path):
    with pytest.raises(UserError, match="not a transformers model folder"):
        build_backbone(f"hf:{tmp_path}")
    with pytest.raises(UserError, match="a pattern, not a backbone"):
        build_backbone("hf:<folder>[?options]")
    config = json.loads(Path(folders["hubert"], "config.json").read_text())
    for name, change, message in [("deeper", {"num_hidden_layers": 3}, "lack 16 tensors"),
                                  ("wider", {"intermediate_size": 48}, "wrong shapes")]:
        shutil.copytree(folders["hubert"], tmp_path / name)
        (tmp_path / name / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(UserError, match=message):
            build_backbone(f"hf:{tmp_path / name}")
    (tmp_path / "wider" / "model.safetensors").unlink()
    with pytest.raises(UserError, match="cannot load the weights"):
        build_backbone(f"hf:{tmp_path / 'wider'}")
    transformers.BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                            intermediate_size=8).save_pretrained(tmp_path / "bert")
    with pytest.raises(UserError, match="model type 'bert' is not supported"):
        build_backbone(f"hf:{tmp_path / 'bert'}")
    transformers.WavLMConfig(**TINY).save_pretrained(tmp_path / "no-extractor")
    with pytest.raises(UserError, match="no usable feature extractor"):
        build_backbone(f"hf:{tmp_path / 'no-extractor'}")


@pytest.mark.parametrize("family", ["wav2vec2", "ast"])
def test_checkpoint_round_trip_and_hear_validator(folders, family, tmp_path):
    """A tuned checkpoint rebuilds its options from the spec; the official validator runs it."""
    backbone = build_backbone(f"hf:{folders[family]}?layer=weighted&train_top=1")
    supcon_losses(backbone, steps=2)
    path = tmp_path / "best.pt"
    save_checkpoint(path, backbone, {"task": "tones"})
    model = hear_contrastune.load_model(str(path))
    assert model.backbone.spec == backbone.spec
    audio = 0.3 * torch.randn(3, 16000, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = backbone.eval()(audio)
    torch.testing.assert_close(hear_contrastune.get_scene_embeddings(audio, model), expected)
    untuned = hear_contrastune.load_model(str(path)).backbone
    untuned.load_state_dict(build_backbone(backbone.spec).state_dict())
    with torch.no_grad():
        assert not torch.allclose(untuned.eval()(audio), expected, atol=1e-4)
    result = validate(str(path), "cpu")
    assert result.returncode == 0, result.stderr[-2000:]

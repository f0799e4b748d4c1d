"""Loading an `hf:` model: from a folder (offline), a hub name (`from_pretrained`), or with the
model's own code when the user allows it. Every failure a user can fix is one line."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hear_contrastune.errors import UserError

WAVEFORM_MODELS = ("wav2vec2", "hubert", "wavlm")
SPECTROGRAM_MODELS = ("audio-spectrogram-transformer",)
CLAP_MODELS = ("clap", "clap_audio_model")
WHISPER_MODELS = ("whisper",)
SUPPORTED = WAVEFORM_MODELS + SPECTROGRAM_MODELS + CLAP_MODELS + WHISPER_MODELS


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' progress bars and load report; what matters is checked, not logged."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0][:200]


def _config_dict(spec: str, source: Path | str) -> dict[str, Any]:
    """config.json as written, read before any of the model's code could run."""
    from transformers import PretrainedConfig

    if isinstance(source, Path) and not (source / "config.json").is_file():
        raise UserError(f"{spec}: {source} is not a transformers model folder (no config.json)")
    try:
        local = isinstance(source, Path)
        return PretrainedConfig.get_config_dict(source, local_files_only=local)[0]
    except (OSError, ValueError) as e:
        if isinstance(source, Path):
            raise UserError(f"{spec}: cannot read {source / 'config.json'} "
                            f"({_first_line(e)})") from None
        tail = source.rpartition("/")[2]
        raise UserError(f"{spec}: cannot get {source} from the Hugging Face hub, and it is not "
                        f"a folder here ({_first_line(e)}); offline (HF_HUB_OFFLINE=1 or no "
                        f"network), download it first (hf download {source} --local-dir "
                        f"/models/{tail}) and give hf:/models/{tail}") from None


def load(spec: str, source: Path | str, trust_remote_code: bool) -> tuple[nn.Module, Any]:
    """The encoder (float32, LayerDrop off; CLAP: its audio tower with projection; Whisper: the
    encoder alone) and the feature extractor of a folder or hub model."""
    try:
        import transformers
    except ImportError:
        raise UserError(f"{spec}: hf: backbones need transformers "
                        "(pip install transformers)") from None
    where = source if isinstance(source, Path) else f"hub model {source}"
    with _quiet_transformers():
        raw = _config_dict(spec, source)
        remote = "auto_map" in raw
        if remote and not trust_remote_code:
            raise UserError(f"{spec}: {where} ships its own code (config.json has an auto_map); "
                            "add trust_remote_code=1 to run it")
        kwargs: dict[str, Any] = {"local_files_only": isinstance(source, Path),
                                  "trust_remote_code": remote}
        try:
            config = transformers.AutoConfig.from_pretrained(source, **kwargs)
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"{spec}: cannot read the config of {where} ({_first_line(e)})") \
                from None
        if remote and not hasattr(config, "conv_stride"):
            raise UserError(f"{spec}: remote-code model type {config.model_type!r} has no "
                            "wav2vec2-style conv feature encoder, the one remote-code kind "
                            "supported")
        if not remote and config.model_type not in SUPPORTED:
            raise UserError(f"{spec}: model type {config.model_type!r} is not supported "
                            f"(supported: {', '.join(SUPPORTED)})")
        try:
            extractor = transformers.AutoFeatureExtractor.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as e:
            raise UserError(f"{spec}: no usable feature extractor in {where} "
                            f"(preprocessor_config.json; {_first_line(e)})") from None
        model_class = {"clap": transformers.ClapModel,
                       "clap_audio_model": transformers.ClapAudioModelWithProjection,
                       }.get(config.model_type, transformers.AutoModel)
        try:
            model, info = model_class.from_pretrained(
                source, dtype=torch.float32, output_loading_info=True, **kwargs)
        except (OSError, RuntimeError) as e:  # no weights file; weights of the wrong shapes
            why = ("tensors of the wrong shapes for config.json" if "mismatched" in str(e)
                   else _first_line(e))
            raise UserError(f"{spec}: cannot load the weights in {where} ({why})") from None
    # masked_spec_embed only fills SpecAugment-masked steps in training; some exports lack it
    missing = sorted(k for k in info["missing_keys"] if k != "masked_spec_embed")
    if missing:
        raise UserError(f"{spec}: the weights in {where} lack {len(missing)} tensors of the "
                        f"model (e.g. {missing[0]})")
    if hasattr(model.config, "layerdrop"):
        model.config.layerdrop = 0.0
    if config.model_type == "clap":  # the audio tower and its projection; the text side goes
        audio = transformers.ClapAudioModelWithProjection(config.audio_config)
        audio.load_state_dict({k: v for k, v in model.state_dict().items()
                               if k.startswith(("audio_model.", "audio_projection."))})
        model = audio
    if config.model_type == "whisper":
        model = model.get_encoder()
    return model, extractor

"""Hugging Face transformers audio encoders: `hf:<folder>[?options]` or `hf:<org>/<name>[?options]`.

The folder is what `save_pretrained` writes (config.json, the weights, preprocessor_config.json
of the feature extractor); it is read with `local_files_only=True`, so nothing is downloaded. A
name `<org>/<name>` that is not a folder here is a hub model, loaded with `from_pretrained` (from
the hub cache, or downloaded when online); offline and not cached, it is a one-line error
saying to download it to a folder. A config.json with an `auto_map` runs its authors' code:
only with `trust_remote_code=1`, and only for a wav2vec2-style conv feature encoder (MERT's
kind). CLAP (backbones/hf_clap.py) and the Whisper encoder (backbones/hf_whisper.py) have their
own modules. A
task model (e.g. `Wav2Vec2ForCTC`, `ASTForAudioClassification`) loads as its base encoder; its
head is ignored. The feature extractor's preprocessing is redone in torch, so it runs batched,
on the model's device, and with gradients:

* wav2vec2, HuBERT, WavLM take the waveform, made zero-mean and unit-variance per clip when the
  extractor has `do_normalize`. Frames are the conv feature encoder's: one per product of
  `conv_stride` samples (20 ms for the usual stack), stamped at the centre of their receptive
  field (25 ms). LayerDrop is switched off, so a chosen layer is always the same layer.
* AST takes Kaldi log-mel fbanks, computed as `ASTFeatureExtractor` does with torchaudio (25 ms
  Hann window, 10 ms hop, DC removal, pre-emphasis 0.97, 512-point power spectrum, Kaldi mels
  from 20 Hz), zero-padded to the model's `max_length` frames and normalised with the
  extractor's mean and std. ASTFeatureExtractor truncates longer clips; here they are cut into
  windows that overlap just enough for the patch columns of all windows to lie on one grid.
  Frames are patch columns (the mean over the frequency patches at one time position): one per
  `time_stride` fbank frames (100 ms for the AudioSet models), stamped at the column's centre,
  kept while the column starts inside the clip. Every clip costs at least one whole window.

Options follow a `?`, joined by `&` (the folder may not contain a `?`); a backbone's `spec`
lists the non-default ones in this order, with the folder made absolute, and checkpoints store
it, so `load_model` rebuilds the same backbone:

    layer=last|weighted|N    last (default): the model's output, after its final layer norm if
                             it has one; N in 1..layers: the output of transformer layer N
                             (layers above it are dropped); weighted: a learned softmax-weighted
                             sum of all hidden states, as transformers' `use_weighted_layer_sum`
    pool=mean|max|cls        scene embedding: mean (default) or max of the frames over time;
                             cls (AST only): the mean of its CLS and distillation tokens, as
                             AST's own pooler
    freeze_feature_encoder=1 freeze the conv feature encoder (AST: its patch, position and
                             CLS / distillation token embeddings)
    freeze_layers=N          freeze everything below transformer layer N + 1
    train_top=N              freeze everything below the top N transformer layers (of those
                             `layer` keeps); exclusive with freeze_layers
    embed=projection|hidden  CLAP only: the projected embedding (default) or the pooled hidden
                             state as the scene embedding
    pad=none|30              Whisper only: run the clip's own frames (default) or pad it to the
                             encoder's 30 s window
    trust_remote_code=1      run the model's own code (config.json with an `auto_map`)

e.g. `hf:/models/wav2vec2-base?layer=6&freeze_feature_encoder=1`.
"""

import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hear_contrastune.backbones.base import Backbone
from hear_contrastune.backbones.hf_load import CLAP_MODELS, SPECTROGRAM_MODELS, WHISPER_MODELS, load
from hear_contrastune.errors import UserError

POOLS = ("mean", "max", "cls")
EMBEDS = ("projection", "hidden")
PADS = ("none", "30")
#: `org/name`: a hub model id (when no such folder exists here)
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
#: the families an `hf:` spec loads, for `contrastune backbones`: (family, sample rate, needs)
FAMILIES = (
    ("wav2vec2 / HuBERT / WavLM", "16 kHz", "a folder or hub name"),
    ("AST", "16 kHz", "a folder or hub name"),
    ("CLAP audio tower", "48 kHz", "a ClapModel / ClapAudioModelWithProjection folder or hub "
                                   "name; embed=projection|hidden"),
    ("Whisper encoder", "16 kHz", "a WhisperModel / WhisperForConditionalGeneration folder or "
                                  "hub name; pad=none|30"),
    ("remote code (e.g. MERT)", "the extractor's", "trust_remote_code=1; a wav2vec2-style "
                                                   "conv feature encoder"),
)
#: floats of activations one forward pass may hold (~0.5 GB), for `max_batch_samples`
ACTIVATION_BUDGET = 2**27


@dataclass(frozen=True)
class HfOptions:
    """The options of an `hf:` spec; defaults are left out of the spec."""

    layer: str = "last"
    pool: str = "mean"
    freeze_feature_encoder: bool = False
    freeze_layers: int = 0
    train_top: int | None = None
    embed: str = "projection"
    pad: str = "none"
    trust_remote_code: bool = False

    def query(self) -> str:
        """The non-default options as `key=value&...` in field order."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                parts.append(f"{f.name}={int(value) if isinstance(value, bool) else value}")
        return "&".join(parts)


def _count(spec: str, key: str, value: str) -> int:
    if not value.isdigit():
        raise UserError(f"{spec}: {key}={value!r} must be a whole number >= 0")
    return int(value)


def _flag(spec: str, key: str, value: str) -> bool:
    if value not in ("0", "1"):
        raise UserError(f"{spec}: {key}={value!r}: give 0 or 1")
    return value == "1"


def parse_spec(spec: str) -> tuple[Path | str, HfOptions]:
    """The model (an absolute folder, or a hub name `org/name` when no such folder exists here)
    and the options of an `hf:` spec."""
    name, _, query = spec.removeprefix("hf:").partition("?")
    if not name:
        raise UserError(f"{spec}: name a model folder, e.g. hf:/models/wav2vec2-base")
    given: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or key not in {f.name for f in fields(HfOptions)}:
            raise UserError(f"{spec}: bad option {item!r}; options are key=value among "
                            f"{', '.join(f.name for f in fields(HfOptions))}")
        if key in given:
            raise UserError(f"{spec}: option {key} given twice")
        given[key] = value
    layer = given.get("layer", "last")
    if layer not in ("last", "weighted") and not (layer.isdigit() and int(layer) > 0):
        raise UserError(f"{spec}: layer={layer!r}: choose last, weighted or a layer number >= 1")
    pool = given.get("pool", "mean")
    if pool not in POOLS:
        raise UserError(f"{spec}: pool={pool!r}: choose from {', '.join(POOLS)}")
    embed, pad = given.get("embed", "projection"), given.get("pad", "none")
    if embed not in EMBEDS:
        raise UserError(f"{spec}: embed={embed!r}: choose from {', '.join(EMBEDS)}")
    if pad not in PADS:
        raise UserError(f"{spec}: pad={pad!r}: choose none or 30")
    if "freeze_layers" in given and "train_top" in given:
        raise UserError(f"{spec}: give freeze_layers or train_top, not both")
    options = HfOptions(
        layer=str(int(layer)) if layer.isdigit() else layer,
        pool=pool,
        freeze_feature_encoder=_flag(spec, "freeze_feature_encoder",
                                     given.get("freeze_feature_encoder", "0")),
        freeze_layers=_count(spec, "freeze_layers", given.get("freeze_layers", "0")),
        train_top=(_count(spec, "train_top", given["train_top"]) if "train_top" in given
                   else None),
        embed=embed,
        pad=pad,
        trust_remote_code=_flag(spec, "trust_remote_code", given.get("trust_remote_code", "0")),
    )
    folder = Path(name).expanduser()
    if not folder.exists() and HUB_NAME.fullmatch(name):
        return name, options
    return folder.resolve(), options


def _layer_path(model: nn.Module) -> str:
    """Where the model keeps its transformer layers (it moved between transformers versions)."""
    for path in ("encoder.layers", "layers", "encoder.layer", "audio_model.audio_encoder.layers"):
        try:
            if isinstance(model.get_submodule(path), nn.ModuleList):
                return path
        except AttributeError:
            continue
    raise RuntimeError(f"{type(model).__name__}: transformer layers not found")


class HfBackbone(Backbone):
    """A transformers encoder with a chosen layer, frozen parts and pooling; subclasses turn
    audio into the model's input and its tokens into frames."""

    cls_token = False  # whether `pool=cls` has a token to pool (AST's)

    def __init__(self, spec: str, source: Path | str, options: HfOptions, model: nn.Module,
                 extractor: Any) -> None:
        if options.pool == "cls" and not self.cls_token:
            raise UserError(f"{spec}: pool=cls is for AST; {model.config.model_type} has no "
                            "CLS token (use mean or max)")
        super().__init__()
        self.options, self.model = options, model
        query = options.query()
        self.spec = f"hf:{source}" + (f"?{query}" if query else "")
        self.sample_rate = int(extractor.sampling_rate)
        self.embedding_size = int(model.config.hidden_size)
        self.layer_path = _layer_path(model)
        if options.layer not in ("last", "weighted"):
            keep, total = int(options.layer), len(self.layers)
            if keep > total:
                raise UserError(f"{spec}: layer={keep}: the model has {total} layers")
            parent, _, name = self.layer_path.rpartition(".")
            setattr(model.get_submodule(parent), name, nn.ModuleList(self.layers[:keep]))
            model.config.num_hidden_layers = keep
        if options.layer == "weighted":
            self.layer_weights = nn.Parameter(torch.zeros(len(self.layers) + 1))
            self.new_parameter_names = ("layer_weights",)
        if options.layer != "last":  # used only to make last_hidden_state
            for module in self.top_modules():
                module.requires_grad_(False)
        if options.freeze_feature_encoder:
            self.freeze_feature_encoder()
        frozen = options.freeze_layers
        if options.train_top is not None:
            if options.train_top > len(self.layers):
                raise UserError(f"{spec}: train_top={options.train_top}: only "
                                f"{len(self.layers)} layers are used")
            frozen = len(self.layers) - options.train_top
        if options.freeze_layers > len(self.layers):
            raise UserError(f"{spec}: freeze_layers={options.freeze_layers}: only "
                            f"{len(self.layers)} layers are used")
        if options.freeze_layers or options.train_top is not None:
            self.freeze_below(frozen)
        self.train()  # from_pretrained leaves the model in eval mode; a new module trains

    @property
    def layers(self) -> nn.ModuleList:
        """The transformer layers in use (not registered twice: they live in `model`)."""
        return self.model.get_submodule(self.layer_path)

    def top_modules(self) -> list[nn.Module]:
        """Modules after the last transformer layer that only `last_hidden_state` goes through."""
        return []

    def freeze_feature_encoder(self) -> None:
        """Freeze the part that turns the model's input into its first token states."""
        raise NotImplementedError

    def freeze_below(self, n: int) -> None:
        """Freeze everything below transformer layer n + 1 (the input side and layers 1..n)."""
        self.freeze_feature_encoder()
        keep = {id(p) for layer in self.layers[n:] for p in layer.parameters()}
        keep |= {id(p) for module in self.top_modules() for p in module.parameters()}
        for param in self.model.parameters():
            if id(param) not in keep:
                param.requires_grad_(False)

    def encode(self, inputs: Tensor, output_hidden_states: bool = False) -> Any:
        """The model's output (`last_hidden_state`, and `hidden_states` when asked)."""
        return self.model(inputs, output_hidden_states=output_hidden_states)

    def hidden(self, inputs: Tensor) -> Tensor:
        """Token states [batch, tokens, dim] of the chosen layer."""
        if self.options.layer == "last":
            return self.encode(inputs).last_hidden_state
        states = self.encode(inputs, output_hidden_states=True).hidden_states
        if len(states) != len(self.layers) + 1:
            raise RuntimeError(f"{self.spec}: expected {len(self.layers) + 1} hidden states, "
                               f"got {len(states)}")
        if self.options.layer == "weighted":
            weights = torch.softmax(self.layer_weights, dim=0)
            return torch.einsum("l,lbtd->btd", weights, torch.stack(states))
        return states[-1]  # the layers above the chosen one were dropped

    def forward(self, audio: Tensor) -> Tensor:
        frames = self.frames(audio)[0]
        return frames.amax(dim=1) if self.options.pool == "max" else frames.mean(dim=1)


class HfWaveformBackbone(HfBackbone):
    """wav2vec2 / HuBERT / WavLM: normalised waveform -> conv encoder -> transformer."""

    def __init__(self, spec: str, source: Path | str, options: HfOptions, model: nn.Module,
                 extractor: Any) -> None:
        super().__init__(spec, source, options, model, extractor)
        config = model.config
        self.normalize = bool(getattr(extractor, "do_normalize", False))
        self.hop = math.prod(config.conv_stride)
        self.receptive_field = 1 + sum(
            (k - 1) * math.prod(config.conv_stride[:i]) for i, k in enumerate(config.conv_kernel))
        # the first conv's output (x3: conv, norm, GELU) and the kept hidden states dominate
        per_sample = (3 * config.conv_dim[0] / config.conv_stride[0]
                      + (len(self.layers) + 5) * config.hidden_size / self.hop)
        self.max_batch_samples = max(self.sample_rate, int(ACTIVATION_BUDGET / per_sample))

    def top_modules(self) -> list[nn.Module]:
        top = [self.model.encoder.layer_norm] if self.model.config.do_stable_layer_norm else []
        return top + ([self.model.adapter] if getattr(self.model, "adapter", None) else [])

    def freeze_feature_encoder(self) -> None:
        # transformers' own freeze: also stops its encoder asking for gradients of the input
        self.model.feature_extractor._freeze_parameters()

    def inputs(self, audio: Tensor) -> Tensor:
        """What the feature extractor would give: per-clip normalised, at least one frame long."""
        if self.normalize:
            mean = audio.mean(dim=-1, keepdim=True)
            var = audio.var(dim=-1, keepdim=True, unbiased=False)
            audio = (audio - mean) / torch.sqrt(var + 1e-7)
        return F.pad(audio, (0, max(0, self.receptive_field - audio.shape[-1])))

    def frames(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        states = self.hidden(self.inputs(audio))
        starts = torch.arange(states.shape[1], device=audio.device) * self.hop
        return states, (starts + self.receptive_field / 2) * (1000.0 / self.sample_rate)


class HfAstBackbone(HfBackbone):
    """AST: Kaldi fbank windows -> patch tokens -> transformer; frames are patch columns."""

    cls_token = True

    def __init__(self, spec: str, source: Path | str, options: HfOptions, model: nn.Module,
                 extractor: Any) -> None:
        super().__init__(spec, source, options, model, extractor)
        from torchaudio.compliance.kaldi import get_mel_banks

        config = model.config
        if (extractor.num_mel_bins, extractor.max_length) != (config.num_mel_bins,
                                                               config.max_length):
            raise UserError(f"{spec}: feature extractor ({extractor.num_mel_bins} mels, "
                            f"{extractor.max_length} frames) does not fit the model "
                            f"({config.num_mel_bins}, {config.max_length})")
        if config.time_stride > config.patch_size:
            raise UserError(f"{spec}: time_stride > patch_size leaves gaps between patches")
        self.win = round(0.025 * self.sample_rate)
        self.hop = round(0.010 * self.sample_rate)
        self.n_fft = 1 << (self.win - 1).bit_length()
        self.mean, self.std = float(extractor.mean), float(extractor.std)
        self.normalize = bool(extractor.do_normalize)
        self.window_frames = config.max_length
        self.patch, self.stride = config.patch_size, config.time_stride
        self.columns = (config.max_length - config.patch_size) // config.time_stride + 1
        self.freq_patches = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1
        self.window_hop = self.columns * self.stride  # next window's first column: next on grid
        banks, _ = get_mel_banks(config.num_mel_bins, self.n_fft, float(self.sample_rate),
                                 20.0, 0.0, 100.0, -500.0, 1.0)
        # the Nyquist bin gets no mel weight, as in Kaldi
        self.register_buffer("mel_banks", F.pad(banks, (0, 1)), persistent=False)
        self.register_buffer("hann", torch.hann_window(self.win, periodic=False),
                             persistent=False)
        tokens = 2 + self.freq_patches * self.columns
        per_window = (tokens * config.hidden_size * (len(self.layers) + 5)
                      + config.num_attention_heads * tokens**2)
        # a clip shorter than a window costs a whole one: size chunks as if clips were 1 s
        self.max_batch_samples = max(1, ACTIVATION_BUDGET // per_window) * self.sample_rate

    def top_modules(self) -> list[nn.Module]:
        return [self.model.layernorm]

    def freeze_feature_encoder(self) -> None:
        self.model.embeddings.requires_grad_(False)

    def fbank(self, audio: Tensor) -> Tensor:
        """Kaldi log-mel fbank [batch, frames, mels] of every clip at once."""
        audio = F.pad(audio, (0, max(0, self.win - audio.shape[-1])))
        frames = audio.unfold(-1, self.win, self.hop)
        frames = frames - frames.mean(dim=-1, keepdim=True)
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = (frames - 0.97 * previous) * self.hann
        spectrum = torch.fft.rfft(frames, n=self.n_fft)
        power = spectrum.real.square() + spectrum.imag.square()
        mels = power @ self.mel_banks.T
        return mels.clamp_min(torch.finfo(mels.dtype).eps).log()

    def windows(self, audio: Tensor) -> tuple[Tensor, int]:
        """Normalised fbank windows [batch * windows, max_length, mels] and the number of patch
        columns that start inside the clip."""
        fbank = self.fbank(audio)
        columns = math.ceil(fbank.shape[1] / self.stride)
        count = math.ceil(columns / self.columns)
        length = (count - 1) * self.window_hop + self.window_frames
        fbank = F.pad(fbank, (0, 0, 0, length - fbank.shape[1]))  # zeros, as the extractor
        if self.normalize:
            fbank = (fbank - self.mean) / (2 * self.std)
        windows = fbank.unfold(1, self.window_frames, self.window_hop).transpose(2, 3)
        return windows.reshape(-1, self.window_frames, fbank.shape[-1]), columns

    def frames(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        windows, columns = self.windows(audio)
        tokens = self.hidden(windows)
        patches = tokens[:, 2:].unflatten(1, (self.freq_patches, self.columns)).mean(dim=1)
        frames = patches.reshape(audio.shape[0], -1, tokens.shape[-1])[:, :columns]
        centre = torch.arange(columns, device=audio.device) * self.stride + (self.patch - 1) / 2
        return frames, (centre * self.hop + self.win / 2) * (1000.0 / self.sample_rate)

    def forward(self, audio: Tensor) -> Tensor:
        if self.options.pool != "cls":
            return super().forward(audio)
        tokens = self.hidden(self.windows(audio)[0])
        return tokens[:, :2].mean(dim=1).unflatten(0, (audio.shape[0], -1)).mean(dim=1)


def build_hf_backbone(spec: str) -> HfBackbone:
    """The backbone an `hf:` spec names."""
    source, options = parse_spec(spec)
    model, extractor = load(spec, source, options.trust_remote_code)
    model_type = model.config.model_type
    if options.embed != "projection" and model_type not in CLAP_MODELS:
        raise UserError(f"{spec}: embed= is for CLAP; {model_type} has no projection")
    if options.pad != "none" and model_type not in WHISPER_MODELS:
        raise UserError(f"{spec}: pad= is for Whisper; {model_type} takes clips as they are")
    if model_type in CLAP_MODELS:
        from hear_contrastune.backbones.hf_clap import HfClapBackbone

        return HfClapBackbone(spec, source, options, model, extractor)
    if model_type in WHISPER_MODELS:
        from hear_contrastune.backbones.hf_whisper import HfWhisperBackbone

        return HfWhisperBackbone(spec, source, options, model, extractor)
    if model_type in SPECTROGRAM_MODELS:
        return HfAstBackbone(spec, source, options, model, extractor)
    return HfWaveformBackbone(spec, source, options, model, extractor)

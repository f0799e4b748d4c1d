"""The Whisper encoder from a `WhisperModel` / `WhisperForConditionalGeneration` folder (the
decoder is dropped), at the extractor's 16 kHz.

The front end is `WhisperFeatureExtractor`'s, redone batched in torch: torchaudio's
MelSpectrogram (periodic Hann window, centred reflect-padded STFT, power 2, Slaney mels; the
last frame dropped, as the extractor does), log10 with a 1e-10 floor, floored at the window's
maximum - 8, then (x + 4) / 4. The encoder was trained on 30 s windows (3000 mel frames,
`max_source_positions` tokens; transformers' forward refuses anything else), so its forward is
run here from its own modules, which lets a window be shorter:

    pad=none (default)  only the clip's frames, with the positional embeddings cut to that
                        length: the cost grows with the clip, not with 30 s
    pad=30              every window padded with silence to the full 30 s and the frames that
                        cover the clip kept (EVAR's way): the input the model was trained on

A clip longer than the window is cut into consecutive windows (each is one extractor call).
Frames are the encoder's tokens, 2 mel frames (20 ms) apart; token i is centred on mel frame 2i,
itself centred on sample 2i * hop, so frame times are 0, 20, 40, ... ms (plus the window's
start). The scene embedding pools them (`pool=mean|max`).
"""

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn
from transformers.modeling_outputs import BaseModelOutput

from hear_contrastune.backbones.hf import ACTIVATION_BUDGET, HfBackbone, HfOptions
from hear_contrastune.errors import UserError


class HfWhisperBackbone(HfBackbone):
    """Whisper encoder: log-mel windows -> two convs (stride 2) + positions -> transformer."""

    def __init__(self, spec: str, source: Path | str, options: HfOptions, model: nn.Module,
                 extractor: Any) -> None:
        super().__init__(spec, source, options, model, extractor)
        if extractor.feature_size != model.config.num_mel_bins:
            raise UserError(f"{spec}: feature extractor ({extractor.feature_size} mels) does not "
                            f"fit the model ({model.config.num_mel_bins})")
        self.hop, self.n_fft = int(extractor.hop_length), int(extractor.n_fft)
        self.stride = model.conv1.stride[0] * model.conv2.stride[0]
        self.window_frames = model.config.max_source_positions * self.stride
        self.window = self.window_frames * self.hop
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=self.sample_rate, n_fft=self.n_fft, hop_length=self.hop,
            f_min=0.0, f_max=self.sample_rate / 2, n_mels=extractor.feature_size, power=2.0,
            center=True, pad_mode="reflect", norm="slaney", mel_scale="slaney")
        tokens = model.config.max_source_positions
        per_window = (tokens * model.config.d_model * (len(self.layers) + 5)
                      + model.config.encoder_attention_heads * tokens**2)
        windows = max(1, ACTIVATION_BUDGET // per_window)
        # pad=30: a short clip costs a whole window, so size chunks as if clips were 1 s
        self.max_batch_samples = windows * (self.sample_rate if options.pad == "30"
                                            else self.window)

    def top_modules(self) -> list[nn.Module]:
        return [self.model.layer_norm]

    def freeze_feature_encoder(self) -> None:
        self.model.conv1.requires_grad_(False)
        self.model.conv2.requires_grad_(False)

    def features(self, audio: Tensor) -> Tensor:
        """The extractor's `input_features` [batch, mels, frames] of clips of one window or less
        (pad=30: padded to the window first, as the extractor pads)."""
        target = self.window if self.options.pad == "30" else self.n_fft
        audio = F.pad(audio, (0, max(0, target - audio.shape[-1])))
        log = self.mel(audio)[..., :-1].clamp_min(1e-10).log10()
        log = torch.maximum(log, log.amax(dim=(1, 2), keepdim=True) - 8.0)
        return (log + 4.0) / 4.0

    def encode(self, inputs: Tensor, output_hidden_states: bool = False) -> BaseModelOutput:
        """The encoder's forward for any number of frames up to its window."""
        encoder = self.model
        states = F.gelu(encoder.conv2(F.gelu(encoder.conv1(inputs)))).transpose(1, 2)
        states = states + encoder.embed_positions.weight[:states.shape[1]]
        states = F.dropout(states, p=encoder.dropout, training=self.training)
        hidden = [states]
        for layer in self.layers:
            states = layer(states, None)
            hidden.append(states)
        return BaseModelOutput(last_hidden_state=encoder.layer_norm(states),
                               hidden_states=tuple(hidden) if output_hidden_states else None)

    def frames(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        length = audio.shape[-1]
        count = max(1, math.ceil(length / self.window))
        parts = [self.hidden(self.features(audio[:, i * self.window:(i + 1) * self.window]))
                 for i in range(count)]
        last = length - (count - 1) * self.window
        keep = max(1, math.ceil(last // self.hop / self.stride))  # tokens of the clip's frames
        tokens = torch.cat(parts[:-1] + [parts[-1][:, :keep]], dim=1)
        times = torch.arange(tokens.shape[1], device=audio.device) * (
            self.stride * self.hop * 1000.0 / self.sample_rate)
        return tokens, times

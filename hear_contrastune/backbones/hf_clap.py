"""CLAP's audio tower (HTSAT, a Swin transformer on a log-mel image) from a `ClapModel` or
`ClapAudioModelWithProjection` folder, at the extractor's 48 kHz.

The front end is `ClapFeatureExtractor`'s, redone batched in torch with torchaudio's
MelSpectrogram and AmplitudeToDB (they match it: periodic Hann window, centred reflect-padded
STFT, power 2, dB with a 1e-10 floor and no top_db): HTK mels without norm for its `fusion`
truncation, Slaney mels otherwise. Each clip is cut into windows of the extractor's
`max_length_s` (10 s); a window shorter than that is filled with its own repeats and zeros
(`repeatpad`, or the extractor's `repeat` / `pad`), as the extractor fills a short clip. The
extractor crops clips longer than a window at random (and the fused variant fuses random crops);
here they are embedded window by window instead, so an embedding does not depend on chance.
Every window is then within the window length, so the fused variant gets `is_longer` False, as
the extractor gives every clip that fits (it also marks one random clip of a batch "longer"
when none is, a training-time quirk not reproduced). The input BatchNorm stays in eval mode:
tuning batches must not replace the pretrained mel statistics.

Frames are the encoder's time axis: HTSAT stacks four time quarters of the (time-interpolated)
mel image along frequency; its final map, regrouped by the model into [dim, freq, time], is
averaged over frequency. Column k covers interpolated mel frames [k s, (k+1) s) and is stamped
at their centre mapped back to the mel frames (align_corners interpolation), a mel frame being
centred at frame * hop: 312.8 ms apart for laion's 10 s models. The 32 columns span 10.01 s, so
window j starts at j x 10.01 s (rounded to a sample): the grid runs on regularly across windows,
as HEAR's timestamps must, and 9.8 ms of audio between windows is not seen. Columns of the last
window whose centre lies past the clip's end (in the fill) are dropped. Attention windows span
the stacked quarters, so a column also sees audio 2.5 s away: the time axis is the model's,
not a strict locality.

The scene embedding is the model's own: `embed=projection` (default) the projected embedding
(512-d, unnormalised), `embed=hidden` the pooled hidden state (768-d); a clip of several
windows takes their mean weighted by each window's share of the clip.
"""

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from hear_contrastune.backbones.hf import ACTIVATION_BUDGET, HfBackbone, HfOptions
from hear_contrastune.errors import UserError


class HfClapBackbone(HfBackbone):
    """CLAP audio tower: repeat-padded 10 s windows -> log-mel image -> HTSAT -> projection."""

    def __init__(self, spec: str, source: Path | str, options: HfOptions, model: nn.Module,
                 extractor: Any) -> None:
        if options.layer != "last" or options.pool != "mean":
            raise UserError(f"{spec}: CLAP pools as the model does; layer= and pool= are for "
                            "the other families (use embed=projection|hidden)")
        super().__init__(spec, source, options, model, extractor)
        config = model.config
        if extractor.feature_size != config.num_mel_bins:
            raise UserError(f"{spec}: feature extractor ({extractor.feature_size} mels) does not "
                            f"fit the model ({config.num_mel_bins})")
        self.hop, self.window = int(extractor.hop_length), int(extractor.nb_max_samples)
        self.fill = extractor.padding
        if self.fill not in ("repeatpad", "repeat", "pad"):
            raise UserError(f"{spec}: extractor padding {self.fill!r} is not supported")
        encoder = model.audio_model.audio_encoder
        self.mel_frames = self.window // self.hop + 1
        self.image_frames = int(encoder.spec_size * encoder.freq_ratio)
        if self.mel_frames > self.image_frames:
            raise UserError(f"{spec}: the extractor's {extractor.max_length_s} s window "
                            f"({self.mel_frames} mel frames) exceeds the model's "
                            f"{self.image_frames}")
        # column k covers image frames [k s, (k+1) s), mapped back to mel frames (centred at
        # frame * hop) as the model's align_corners interpolation stretched them
        self.columns = encoder.freq_ratio * (
            encoder.spec_size // 2 ** (len(config.depths) - 1) // encoder.patch_stride[1])
        image_step = self.image_frames / self.columns
        mel_per_image = (self.mel_frames - 1) / (self.image_frames - 1)
        self.grid_step = image_step * mel_per_image * self.hop  # samples between columns
        self.first_centre = (image_step - 1) / 2 * mel_per_image * self.hop
        self.window_hop = self.columns * self.grid_step
        self.fused = bool(config.enable_fusion)
        fusion = extractor.truncation == "fusion"
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=self.sample_rate, n_fft=extractor.fft_window_size, hop_length=self.hop,
            f_min=float(extractor.frequency_min), f_max=float(extractor.frequency_max),
            n_mels=extractor.feature_size, power=2.0, center=True, pad_mode="reflect",
            norm=None if fusion else "slaney", mel_scale="htk" if fusion else "slaney")
        self.to_db = torchaudio.transforms.AmplitudeToDB("power", top_db=None)
        if options.embed == "projection":
            self.embedding_size = int(config.projection_dim)
        tokens = (encoder.spec_size // encoder.patch_stride[0]) ** 2
        per_window = tokens * encoder.config.patch_embeds_hidden_size * (len(self.layers) + 8)
        self.max_batch_samples = max(1, ACTIVATION_BUDGET // per_window) * self.sample_rate
        self.train()

    @property
    def encoder(self) -> nn.Module:
        """The HTSAT encoder (a property: it is registered once, inside `model`)."""
        return self.model.audio_model.audio_encoder

    @property
    def frame_embedding_size(self) -> int:
        return int(self.model.config.hidden_size)

    def train(self, mode: bool = True) -> "HfClapBackbone":
        super().train(mode)
        self.encoder.batch_norm.eval()
        return self

    def top_modules(self) -> list[nn.Module]:
        projection = self.options.embed == "projection"
        return [self.encoder.norm] + ([self.model.audio_projection] if projection else [])

    def freeze_feature_encoder(self) -> None:
        self.encoder.patch_embed.requires_grad_(False)
        self.encoder.batch_norm.requires_grad_(False)

    def features(self, windows: Tensor) -> Tensor:
        """The extractor's `input_features` [windows, 1 or 4, mel frames, mels] of full windows."""
        mel = self.to_db(self.mel(windows)).transpose(1, 2)[:, None]
        return mel.expand(-1, 4, -1, -1) if self.fused else mel

    def fill_window(self, audio: Tensor) -> Tensor:
        """A clip part shorter than a window, filled to one as the extractor fills a clip."""
        length = audio.shape[-1]
        if length == self.window:
            return audio
        if self.fill == "repeat":
            audio = audio.repeat(1, self.window // length + 1)[:, :self.window]
        elif self.fill == "repeatpad":
            audio = audio.repeat(1, self.window // length)
        return F.pad(audio, (0, self.window - audio.shape[-1]))

    def starts(self, samples: int) -> list[int]:
        """Where each window starts in a clip: one column grid (`grid_step` apart) runs on from
        window to window, so frame times stay regular, as HEAR's timestamps must be."""
        count = max(1, math.ceil(samples / self.window_hop))
        return [round(j * self.window_hop) for j in range(count)]

    def windows(self, audio: Tensor) -> tuple[Tensor, list[int]]:
        """Filled windows [batch, count, window] and the clip's samples in each."""
        starts = self.starts(audio.shape[-1])
        parts = [audio[:, start:start + self.window] for start in starts]
        return (torch.stack([self.fill_window(p) for p in parts], dim=1),
                [p.shape[-1] for p in parts])

    def run(self, audio: Tensor) -> tuple[Tensor, Tensor, list[int]]:
        """Column states [batch, windows, columns, dim], pooled [batch, windows, dim] and the
        clip's samples in each window."""
        windows, lengths = self.windows(audio)
        flat = windows.flatten(0, 1)
        is_longer = torch.zeros(flat.shape[0], 1, dtype=torch.bool, device=audio.device)
        out = self.model.audio_model(input_features=self.features(flat), is_longer=is_longer)
        columns = out.last_hidden_state.mean(dim=2).transpose(1, 2)
        pooled = out.pooler_output
        if self.options.embed == "projection":
            pooled = self.model.audio_projection(pooled)
        count = windows.shape[1]
        if columns.shape[1] != self.columns:
            raise RuntimeError(f"{self.spec}: {columns.shape[1]} columns, expected {self.columns}")
        return columns.unflatten(0, (-1, count)), pooled.unflatten(0, (-1, count)), lengths

    def frames(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        columns, _, lengths = self.run(audio)
        # one grid, exact in float64 (window starts are it rounded to a sample)
        grid = (torch.arange(len(lengths) * self.columns, device=audio.device,
                             dtype=torch.float64) * self.grid_step + self.first_centre)
        last_start = round((len(lengths) - 1) * self.window_hop)
        keep = int((grid < last_start + lengths[-1]).sum())
        keep = max(keep, (len(lengths) - 1) * self.columns + 1)
        times = (grid[:keep] * (1000.0 / self.sample_rate)).float()
        return columns.flatten(1, 2)[:, :keep], times

    def forward(self, audio: Tensor) -> Tensor:
        _, pooled, lengths = self.run(audio)
        weights = torch.tensor(lengths, dtype=pooled.dtype, device=audio.device)
        return torch.einsum("w,bwd->bd", weights / weights.sum(), pooled)

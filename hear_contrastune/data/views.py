"""Label-preserving random views of a batch of clips, made on the batch's own device.

SupCon needs two views per clip whose differences the encoder should learn to ignore: a speed
change (pitch and tempo together, by up to ~2 semitones, via torchaudio's `resample`; one draw
per view of the batch, since resampling rates are per call), a random crop (position), a gain
change (loudness), additive white noise at a random SNR (recording noise, via torchaudio's
`add_noise`) and a zeroed time span (occlusion). Every clip in the batch gets its own draw of
the rest; a seeded generator makes the views reproducible. The speed change matters when test
clips sit at pitches training never had: it teaches the encoder that timbre survives a shift.
"""

from dataclasses import dataclass

import torch
import torchaudio.functional as AF
from torch import Tensor

# Speeds on a grid of 1/40 (2.5 %): resample then runs between small integers (e.g. 40 -> 41),
# so its polyphase kernels stay small, and the views do not depend on the sample rate.
SPEED_GRID = 40


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random view; the defaults suit 1-4 s clips of music or speech."""

    speed: float = 0.1  # +/- relative resampling (0.1: about 1.7 semitones); 0 turns it off
    crop: float = 0.8  # fraction of the clip each view keeps
    gain_db: float = 6.0  # +/- range
    snr_db: tuple[float, float] = (10.0, 40.0)
    mask: float = 0.1  # longest zeroed span, as a fraction of the view


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device: torch.device) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, device=device)


def random_view(audio: Tensor, cfg: AugmentConfig, gen: torch.Generator) -> Tensor:
    """One random view of each clip in `audio` [batch, samples] -> [batch, crop * samples]."""
    batch, samples = audio.shape
    device = audio.device
    length = max(1, int(samples * cfg.crop))
    if cfg.speed > 0:
        steps = int(SPEED_GRID * cfg.speed)
        step = int(torch.randint(-steps, steps + 1, (1,), generator=gen, device=device))
        audio = AF.resample(audio, SPEED_GRID, SPEED_GRID + step)
        samples = audio.shape[1]
        length = min(length, samples)
    starts = (torch.rand(batch, generator=gen, device=device) * (samples - length + 1)).long()
    view = audio.gather(1, starts[:, None] + torch.arange(length, device=device))
    gain = 10 ** (_uniform(batch, -cfg.gain_db, cfg.gain_db, gen, device) / 20)
    view = view * gain[:, None]
    noise = torch.randn(view.shape, generator=gen, device=device)
    snr = _uniform(batch, *cfg.snr_db, gen, device)
    view = AF.add_noise(view, noise, snr)
    span = (_uniform(batch, 0, cfg.mask, gen, device) * length).long()
    start = (torch.rand(batch, generator=gen, device=device) * (length - span + 1)).long()
    pos = torch.arange(length, device=device)
    masked = (pos >= start[:, None]) & (pos < (start + span)[:, None])
    return view.masked_fill(masked, 0.0)

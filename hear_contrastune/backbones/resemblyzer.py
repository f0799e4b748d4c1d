"""Resemblyzer's GE2E speaker encoder (1.4 M parameters, weights inside the Resemblyzer wheel),
rebuilt to run batched, on any device and with gradients.

Resemblyzer itself embeds one utterance at a time in numpy under `torch.no_grad()`. Here its
front-end (volume normalisation to -30 dBFS, a power mel spectrogram: 25 ms Hann window, 10 ms
hop, 40 slaney mels, *not* log) is a torchaudio transform, and its partial-utterance averaging
(1.6 s partials at 1.3 per second, the last kept at >= 75 % coverage) is batched. Resemblyzer's
voice-activity trimming is left out: it is not differentiable, and it is for speech only.
tests/test_backbones.py checks the result against `VoiceEncoder.embed_utterance`.
"""

import math
from importlib.util import find_spec
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from hear_contrastune.backbones.base import Backbone

SAMPLE_RATE = 16000
HOP = 160  # 10 ms
PARTIAL_FRAMES = 160  # 1.6 s
PARTIALS_PER_SECOND = 1.3
MIN_COVERAGE = 0.75
TARGET_DBFS = -30.0


def partial_layout(num_samples: int) -> tuple[int, int, int]:
    """(number of partials, frame step between them, samples to pad to), as Resemblyzer slices."""
    n_frames = math.ceil((num_samples + 1) / HOP)
    step = round(SAMPLE_RATE / PARTIALS_PER_SECOND / HOP)
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step))
    coverage = (num_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < MIN_COVERAGE and len(starts) > 1:
        starts.pop()
    padded = max(num_samples, (starts[-1] + PARTIAL_FRAMES) * HOP)
    return len(starts), step, padded


class ResemblyzerBackbone(Backbone):
    """GE2E encoder: mel front-end -> 3-layer LSTM (256) -> ReLU(linear) -> L2 norm."""

    spec = "resemblyzer"
    embedding_size = 256
    # Partials per LSTM call when embedding on the CPU: a big batch's gates outgrow the cache.
    # Model selection's embedding on gm-program (262 one-second clips a batch) ran 1.09x faster
    # in chunks of 32 (benchmarks/results/bench_tune.txt, 2-core AVX2 CPU); the bare forward of
    # 262 random clips 1.3x on 2 threads, 1.4x on 1. Training (with gradients) gained nothing
    # measurable from chunks, and a GPU wants the whole batch.
    cpu_chunk: int = 32

    def __init__(self) -> None:
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=400, hop_length=HOP, n_mels=40, power=2.0,
            center=True, pad_mode="constant", norm="slaney", mel_scale="slaney",
        )
        self.lstm = nn.LSTM(40, 256, num_layers=3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        # locate the weights without importing resemblyzer (it pulls in librosa and webrtcvad)
        package_dir = Path(find_spec("resemblyzer").submodule_search_locations[0])
        state = torch.load(package_dir / "pretrained.pt", map_location="cpu",
                           weights_only=True)["model_state"]
        self.load_state_dict(
            {k: v for k, v in state.items() if k.split(".")[0] in ("lstm", "linear")},
            strict=False,
        )

    @staticmethod
    def normalise_volume(audio: Tensor) -> Tensor:
        """Raise quiet clips to -30 dBFS and leave loud ones alone, as Resemblyzer does."""
        rms = audio.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp_min(1e-8)
        return audio * (10 ** (TARGET_DBFS / 20) / rms).clamp_min(1.0)

    def mels(self, audio: Tensor) -> Tensor:
        """Power mels of already-normalised audio, [batch, frames, 40]."""
        return self.mel(audio).transpose(1, 2)

    def project(self, hidden: Tensor) -> Tensor:
        """GE2E's projection of LSTM outputs: L2-normalised ReLU(linear)."""
        return F.normalize(F.relu(self.linear(hidden)), dim=-1)

    def partial_embeddings(self, partials: Tensor) -> Tensor:
        """[n, PARTIAL_FRAMES, 40] mels -> [n, 256], from the LSTM's final state alone. Without
        gradients on the CPU, in chunks of `cpu_chunk` partials (0: all at once)."""
        chunk = len(partials)
        if self.cpu_chunk and partials.device.type == "cpu" and not torch.is_grad_enabled():
            chunk = self.cpu_chunk
        finals = []
        for part in partials.split(chunk):
            _, (hidden, _) = self.lstm(part)
            finals.append(self.project(hidden[-1]))
        return torch.cat(finals)

    def frames(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        per_frame = self.project(self.lstm(self.mels(self.normalise_volume(audio)))[0])
        times = torch.arange(per_frame.shape[1], device=audio.device) * (1000.0 * HOP / SAMPLE_RATE)
        return per_frame, times

    def forward(self, audio: Tensor) -> Tensor:
        """Resemblyzer's utterance embedding: the normalised mean of its partials' embeddings."""
        batch = audio.shape[0]
        count, step, padded = partial_layout(audio.shape[-1])
        audio = F.pad(self.normalise_volume(audio), (0, padded - audio.shape[-1]))
        mels = self.mels(audio)
        partials = mels.unfold(1, PARTIAL_FRAMES, step)[:, :count]  # [B, P, 40, 160]
        partials = partials.transpose(2, 3).reshape(batch * count, PARTIAL_FRAMES, 40)
        final = self.partial_embeddings(partials)
        return F.normalize(final.view(batch, count, -1).mean(dim=1), dim=-1)

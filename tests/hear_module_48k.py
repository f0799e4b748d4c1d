"""A HEAR 2021 module at 48 kHz that reports what it is fed, for the sample-rate tests.

Its scene embedding is (clip length in samples, the loudest frequency in Hz read at 48 kHz),
times a learnable scale so it can be tuned. A clip of a 440 Hz tone fed at 48 kHz reports 440;
the same clip fed at 16 kHz as if it were 48 kHz would report 1320. `SEEN` keeps every clip
length the module was given in this process.
"""

import torch
from torch import Tensor, nn

SEEN: list[int] = []


class RateProbe(nn.Module):
    sample_rate = 48000
    scene_embedding_size = 2
    timestamp_embedding_size = 2

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(2))


def load_model(model_file_path: str = "") -> RateProbe:
    return RateProbe()


def get_scene_embeddings(audio: Tensor, model: RateProbe) -> Tensor:
    SEEN.extend([audio.shape[1]] * audio.shape[0])
    peak = torch.fft.rfft(audio).abs().argmax(dim=1) * (model.sample_rate / audio.shape[1])
    length = torch.full_like(peak, audio.shape[1], dtype=torch.float32)
    return torch.stack([length, peak.float()], dim=1) * model.scale


def get_timestamp_embeddings(audio: Tensor, model: RateProbe) -> tuple[Tensor, Tensor]:
    scene = get_scene_embeddings(audio, model)
    return scene[:, None, :], torch.zeros(audio.shape[0], 1)

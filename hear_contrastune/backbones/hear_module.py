"""Any HEAR 2021 PyTorch module as a backbone: `hear:<module>[:<weights>]`.

The module is imported by name and its model made with `load_model(weights)` (or
`load_model()`); the backbone's scene and frame embeddings are the module's own
`get_scene_embeddings` and `get_timestamp_embeddings`, so what is tuned is exactly what HEAR
evaluates. Its weights are this backbone's parameters, so checkpoints hold the tuned ones.

Many HEAR modules embed under `torch.no_grad()`, as the API only asks for embeddings (ours
does too). Such a module can still be embedded; `check_trainable` finds that no gradient
reaches its parameters and says so before a tuning run starts.
"""

import importlib
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn

from hear_contrastune.backbones.base import Backbone
from hear_contrastune.errors import UserError

API = ("load_model", "get_scene_embeddings", "get_timestamp_embeddings")


def _import(name: str) -> ModuleType:
    """The module `name`, or a one-line error if it (not one of its imports) is missing."""
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and name.startswith(e.name):
            raise UserError(f"hear:{name}: no module named {e.name!r} is installed") from None
        raise
    lacking = [f for f in API if not callable(getattr(module, f, None))]
    if lacking:
        raise UserError(f"hear:{name}: not a HEAR module (lacks {', '.join(lacking)})")
    return module


class HearModuleBackbone(Backbone):
    """A HEAR module's model, embedded and tuned through the module's own API functions."""

    def __init__(self, module_name: str, weights: str | None = None) -> None:
        super().__init__()
        self.module_name = module_name
        api = _import(module_name)
        model = api.load_model(weights) if weights else api.load_model()
        if not isinstance(model, nn.Module):
            raise UserError(f"hear:{module_name}: load_model gave a {type(model).__name__}, not "
                            "a torch.nn.Module; only PyTorch HEAR modules can be tuned")
        self.model = model
        self.spec = f"hear:{module_name}" + (f":{weights}" if weights else "")
        self.sample_rate = int(model.sample_rate)
        self.embedding_size = int(model.scene_embedding_size)
        self.timestamp_embedding_size = int(model.timestamp_embedding_size)

    @classmethod
    def from_spec(cls, spec: str) -> "HearModuleBackbone":
        """Parse `hear:<module>[:<weights>]`; a weights path that exists is made absolute."""
        module_name, _, weights = spec.removeprefix("hear:").partition(":")
        if not module_name:
            raise UserError(f"{spec}: name a HEAR module, e.g. hear:hearbaseline")
        if weights and Path(weights).expanduser().exists():
            weights = str(Path(weights).expanduser().resolve())
        return cls(module_name, weights or None)

    @property
    def api(self) -> ModuleType:
        """The HEAR module (looked up, not held, so the backbone stays copyable)."""
        return importlib.import_module(self.module_name)

    @property
    def frame_embedding_size(self) -> int:
        return self.timestamp_embedding_size

    def frames(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        embeddings, timestamps = self.api.get_timestamp_embeddings(audio, self.model)
        return embeddings, timestamps[0].to(embeddings.device)

    def forward(self, audio: Tensor) -> Tensor:
        return self.api.get_scene_embeddings(audio, self.model)

    def check_trainable(self) -> None:
        """Embed two short noise clips with gradients on; refuse if the result has none."""
        super().check_trainable()
        noise = torch.randn(2, self.sample_rate, generator=torch.Generator().manual_seed(0))
        was_training = self.training
        try:
            with torch.enable_grad():
                out = self(0.1 * noise.to(self.device))
        finally:
            self.train(was_training)
        if not (isinstance(out, Tensor) and out.requires_grad):
            raise UserError(f"hear:{self.module_name}: get_scene_embeddings is not "
                            "differentiable (it runs under torch.no_grad()); it can be embedded "
                            "but not tuned")

"""Backbones by name: the encoders `tune`, the HEAR API and `embed` can hold.

A spec string names a backbone and rebuilds it with its pretrained weights; checkpoints store
it, so `load_model` needs nothing else.
"""

from collections.abc import Callable

from hear_contrastune.backbones.base import Backbone
from hear_contrastune.errors import UserError

DEFAULT_BACKBONE = "resemblyzer"


def _resemblyzer() -> Backbone:
    from hear_contrastune.backbones.resemblyzer import ResemblyzerBackbone

    return ResemblyzerBackbone()


def _crepe(capacity: str) -> Callable[[], Backbone]:
    def build() -> Backbone:
        from hear_contrastune.backbones.crepe import CrepeBackbone

        return CrepeBackbone(capacity)

    return build


BACKBONES: dict[str, tuple[Callable[[], Backbone], str]] = {
    "resemblyzer": (_resemblyzer, "Resemblyzer GE2E encoder, 1.4 M params, 256-d (default)"),
    "crepe-tiny": (_crepe("tiny"), "CREPE tiny pitch network, 0.49 M params, 256-d"),
    "crepe-full": (_crepe("full"), "CREPE full pitch network, 22.2 M params, 2048-d"),
}


def build_backbone(spec: str) -> Backbone:
    """The pretrained backbone named by `spec`."""
    if spec not in BACKBONES:
        raise UserError(f"backbone {spec!r}: unknown; choose from {', '.join(BACKBONES)}")
    return BACKBONES[spec][0]()


__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "Backbone", "build_backbone"]

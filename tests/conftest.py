"""Shared fixtures: real audio, real weights, nothing mocked."""

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tone_batch() -> np.ndarray:
    """Four 1.5 s clips: decaying harmonic tones at different pitches plus a little noise."""
    rng = np.random.default_rng(0)
    t = np.arange(24000) / 16000
    clips = []
    for f0 in (110.0, 220.0, 330.0, 523.25):
        tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in (1, 2, 3)) * np.exp(-2 * t)
        clips.append(0.2 * tone + 0.005 * rng.standard_normal(t.size))
    return np.stack(clips).astype(np.float32)

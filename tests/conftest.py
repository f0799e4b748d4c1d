"""Shared fixtures: real audio, real weights, nothing mocked."""

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def flush_denormals():
    """Every test computes as the CLI does (cli.main sets this before any command): decaying
    notes reach float32's denormals, where CPU LSTMs crawl. Set once for the session, so no
    test's numbers or speed depend on which test ran before it (an in-process CLI call used to
    leave it set for every later module)."""
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


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

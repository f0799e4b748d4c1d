"""Random views: shapes, reproducibility, and that each transform really changes the audio."""

import torch

from hear_contrastune.data.views import AugmentConfig, random_view


def tone(seconds: float = 1.0, f0: float = 440.0) -> torch.Tensor:
    t = torch.arange(int(16000 * seconds)) / 16000
    return (0.3 * torch.sin(2 * torch.pi * f0 * t)).expand(4, -1).contiguous()


def dominant_hz(x: torch.Tensor) -> float:
    spectrum = torch.fft.rfft(x).abs()
    return float(spectrum.argmax()) * 16000 / x.shape[-1]


def test_views_have_the_crop_length_and_are_reproducible():
    cfg = AugmentConfig()
    a = random_view(tone(), cfg, torch.Generator().manual_seed(3))
    b = random_view(tone(), cfg, torch.Generator().manual_seed(3))
    assert a.shape == (4, 12800)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, random_view(tone(), cfg, torch.Generator().manual_seed(4)))


def test_speed_change_shifts_pitch_within_its_range():
    cfg = AugmentConfig(speed=0.1, gain_db=0.0, snr_db=(80.0, 80.0), mask=0.0)
    shifts = {round(dominant_hz(random_view(tone(), cfg, torch.Generator().manual_seed(s))[0]))
              for s in range(12)}
    assert len(shifts) > 1  # the speed really varies between draws
    assert all(440 / 1.12 <= hz <= 440 / 0.88 for hz in shifts)


def test_without_speed_change_a_view_is_a_crop_of_the_clip():
    cfg = AugmentConfig(speed=0.0, gain_db=0.0, snr_db=(200.0, 200.0), mask=0.0)
    clip = torch.randn(2, 16000)
    view = random_view(clip, cfg, torch.Generator().manual_seed(0))
    for row in range(2):
        windows = clip[row].unfold(0, view.shape[1], 1)
        assert (windows - view[row]).abs().amax(dim=1).min() < 1e-4

"""Render General-MIDI notes offline from the TimGM6mb soundfont that ships with pretty_midi.

The soundfont is always on disk (pretty_midi is a dependency), so every task here builds with
no download. One `Renderer` loads it once and resets the synth between notes; a note therefore
renders to the same samples whatever was rendered before it, which keeps builds byte-identical.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi
import tinysoundfont

SAMPLE_RATE = 16000
# Samples generated and dropped after `sounds_off`, so the previous note's quick release has
# fully died away before the next note starts (measured: 64 leave residue, 1024 do not).
FLUSH_SAMPLES = 2048
# A linear fade over the clip's last 10 ms, so a release cut at the clip's end does not click.
FADE_SECONDS = 0.01


def soundfont_path() -> Path:
    """TimGM6mb.sf2 inside the installed pretty_midi package."""
    path = Path(os.path.dirname(pretty_midi.__file__)) / "TimGM6mb.sf2"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; reinstall pretty_midi, which ships it")
    return path


@dataclass(frozen=True)
class Note:
    """One note of a clip: General-MIDI program (0-127, bank 0), MIDI key and velocity, when it
    starts and how long the key is held (seconds), and its level relative to the clip's other
    notes (dB, applied after each note is RMS-normalised, so a quiet preset is not masked)."""

    program: int
    pitch: int
    velocity: int
    onset: float
    hold: float
    gain_db: float = 0.0


@dataclass(frozen=True)
class Phrase:
    """Notes of one program played in time on one synth channel, as a player would: a note's
    release rings on under the next one, where `Renderer.clip` renders every note apart. The
    notes' velocities shape the phrase's dynamics (their `gain_db` is not used); `gain_db` is
    the phrase's level relative to the clip's other phrases after each is RMS-normalised over
    its span, first onset to last key release, so a short event in a long clip is heard."""

    notes: tuple[Note, ...]
    gain_db: float = 0.0

    @property
    def onset(self) -> float:
        return min(n.onset for n in self.notes)

    @property
    def end(self) -> float:
        """When its last key is released, in seconds from the clip's start."""
        return max(n.onset + n.hold for n in self.notes)


class Renderer:
    """A tinysoundfont synth with the soundfont loaded once, rendering mono float32 audio."""

    def __init__(self, sample_rate: int = SAMPLE_RATE, path: Path | None = None) -> None:
        self.sample_rate = sample_rate
        self.synth = tinysoundfont.Synth(samplerate=sample_rate)
        self.sfid = self.synth.sfload(str(path or soundfont_path()))

    def _generate(self, n: int) -> np.ndarray:
        if n <= 0:
            return np.zeros((0, 2), dtype=np.float32)
        buf = self.synth.generate(n)
        return np.frombuffer(buf, dtype=np.float32).reshape(n, 2).copy()

    def note(
        self, program: int, pitch: int, velocity: int, hold_samples: int, num_samples: int
    ) -> np.ndarray:
        """`num_samples` of one note from a silent synth: key down for `hold_samples`, then
        the release tail. Stereo presets are averaged to mono."""
        self.synth.sounds_off()
        self._generate(FLUSH_SAMPLES)
        self.synth.program_select(0, self.sfid, 0, program)
        if not self.synth.noteon(0, pitch, velocity):
            raise ValueError(f"program {program} cannot play key {pitch} velocity {velocity}")
        hold_samples = min(hold_samples, num_samples)
        on = self._generate(hold_samples)
        self.synth.noteoff(0, pitch)
        tail = self._generate(num_samples - hold_samples)
        return np.concatenate([on, tail]).mean(axis=1)

    def clip(self, notes: Sequence[Note], num_samples: int, peak_db: float) -> np.ndarray:
        """A clip of `num_samples` mixing `notes`, faded out at the end and peak-normalised to
        `peak_db` dBFS, so loudness tells nothing about the label."""
        out = np.zeros(num_samples, dtype=np.float64)
        for n in notes:
            start = round(n.onset * self.sample_rate)
            if not 0 <= start < num_samples:
                raise ValueError(f"{n}: onset outside the clip")
            x = self.note(
                n.program, n.pitch, n.velocity, round(n.hold * self.sample_rate),
                num_samples - start,
            ).astype(np.float64)
            rms = float(np.sqrt(np.mean(x**2)))
            if rms == 0.0:
                raise ValueError(f"{n}: renders silence")
            out[start:] += x / rms * 10 ** (n.gain_db / 20)
        return finish_clip(out, self.sample_rate, peak_db)

    def phrase(self, phrase: Phrase, num_samples: int) -> np.ndarray:
        """`num_samples` of `phrase` from a silent synth, starting at its first onset: key
        presses and releases in time order on one channel (a release before a press at the
        same sample, so a repeated key restarts). Stereo presets are averaged to mono."""
        programs = {n.program for n in phrase.notes}
        if len(programs) != 1:
            raise ValueError(f"a phrase plays one program, got {sorted(programs)}")
        origin = round(phrase.onset * self.sample_rate)
        events: list[tuple[int, int, int, int]] = []  # (sample, 0 release / 1 press, key, vel)
        for n in phrase.notes:
            on = round(n.onset * self.sample_rate) - origin
            events += [(on, 1, n.pitch, n.velocity),
                       (on + round(n.hold * self.sample_rate), 0, n.pitch, 0)]
        self.synth.sounds_off()
        self._generate(FLUSH_SAMPLES)
        (program,) = programs
        self.synth.program_select(0, self.sfid, 0, program)
        parts: list[np.ndarray] = []
        held: set[int] = set()
        now = 0
        for at, press, key, velocity in sorted(events):
            at = min(at, num_samples)
            parts.append(self._generate(at - now))
            now = at
            if not press:
                self.synth.noteoff(0, key)
                held.discard(key)
            elif key in held:
                raise ValueError(f"phrase presses key {key} while it is held")
            elif not self.synth.noteon(0, key, velocity):
                raise ValueError(f"program {program} cannot play key {key} velocity {velocity}")
            else:
                held.add(key)
        parts.append(self._generate(num_samples - now))
        return np.concatenate(parts).mean(axis=1)

    def mix(self, phrases: Sequence[Phrase], num_samples: int, peak_db: float) -> np.ndarray:
        """A clip of `num_samples` mixing `phrases`, each RMS-normalised over its span and set
        to its `gain_db`, then faded out and peak-normalised to `peak_db` dBFS."""
        out = np.zeros(num_samples, dtype=np.float64)
        for p in phrases:
            start = round(p.onset * self.sample_rate)
            if not 0 <= start < num_samples:
                raise ValueError(f"{p}: onset outside the clip")
            x = self.phrase(p, num_samples - start).astype(np.float64)
            span = x[: max(1, round((p.end - p.onset) * self.sample_rate))]
            rms = float(np.sqrt(np.mean(span**2)))
            if rms == 0.0:
                raise ValueError(f"{p}: renders silence")
            out[start:] += x / rms * 10 ** (p.gain_db / 20)
        return finish_clip(out, self.sample_rate, peak_db)


def finish_clip(out: np.ndarray, sample_rate: int, peak_db: float) -> np.ndarray:
    """A rendered float64 clip faded out over its last 10 ms (in place) and peak-normalised to
    `peak_db` dBFS as float32, so loudness tells nothing about the label. Shared by every
    synthesised task."""
    num_samples = len(out)
    fade = min(round(FADE_SECONDS * sample_rate), num_samples)
    out[num_samples - fade :] *= np.linspace(1.0, 0.0, fade)
    peak = float(np.abs(out).max())
    if peak == 0.0:
        raise ValueError("clip renders silence")
    return (out * (10 ** (peak_db / 20) / peak)).astype(np.float32)

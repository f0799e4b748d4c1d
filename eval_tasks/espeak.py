"""Speak single words offline with espeak-ng, the formant synthesiser Debian ships.

espeak-ng gives speech with no download and no model: a word in one of several English accents,
through one of ~100 voice variants (male, female, child, whisper, croak, robots, Klatt synths),
at any speed and pitch. Its output for the same arguments is byte-identical from run to run
(checked for every variant below), so a task built from it is deterministic like the soundfont
ones. It is a program, not a Python package: `apt-get install -y espeak-ng`.

The lists come from an audit of espeak-ng 1.51 (Debian 12): all 20 words of `espeak_word` in
every accent x variant at speed 140 and 200 wpm, pitch 20 and 80. Left out of the variants:
  - `fast` (a speed test, not a voice) and `Mr serious` (its name has a space);
  - `Marco`, whose slowest words last up to 1.14 s and do not fit a 1 s clip;
  - `caleb` and `klatt6`, which render byte-for-byte the same audio as `klatt`.
The longest word of the rest lasts 0.93 s (RicishayMax, "zero", 140 wpm). At amplitude 25 no
variant clips (loudest peak 0.72, `iven`); the default 100 clips a dozen of them.
"""

import io
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from eval_tasks.layout import Clip, ClipRenderer, to_task_rate
from eval_tasks.soundfont import FADE_SECONDS, SAMPLE_RATE, finish_clip
from hear_contrastune.errors import UserError

INSTALL_HINT = "install it with `apt-get install -y espeak-ng` (Debian/Ubuntu)"
# English accents espeak-ng speaks with its own rules (the mbrola voices need extra packages).
ACCENTS = [
    "en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd",
    "en-029", "en-us-nyc",
]
VARIANTS = [
    "adam", "Alex", "Alicia", "Andrea", "Andy", "anika", "anikaRobot", "Annie", "announcer",
    "antonio", "AnxiousAndy", "aunty", "belinda", "benjamin", "boris", "croak", "david",
    "Demonic", "Denis", "Diogo", "ed", "edward", "edward2", "f1", "f2", "f3", "f4", "f5", "Gene",
    "Gene2", "grandma", "grandpa", "gustave", "Henrique", "Hugo", "iven", "iven2", "iven3",
    "iven4", "Jacky", "john", "kaukovalta", "klatt", "klatt2", "klatt3", "klatt4", "klatt5",
    "Lee", "linda", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "marcelo", "Mario", "max",
    "Michael", "michel", "miguel", "Mike", "Nguyen", "norbert", "pablo", "paul", "pedro",
    "quincy", "RicishayMax", "RicishayMax2", "RicishayMax3", "rob", "robert", "robosoft",
    "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6", "robosoft7", "robosoft8",
    "sandro", "shelby", "steph", "steph2", "steph3", "Storm", "travis", "Tweaky", "UniRobot",
    "victor", "whisper", "whisperf", "zac",
]
# Variants that are one design with different settings (anikaRobot is anika with 6 lines
# changed; `Gene2`, `robosoft5`, ... are numbered revisions). A family is held out whole.
MERGED_FAMILIES = {"anikarobot": "anika"}
AMPLITUDE = 25  # espeak-ng -a; see the module docstring
ESPEAK_RATE = 22050
# A word's extent: from the first to the last sample above this fraction of its peak (-40 dB).
TRIM_FRACTION = 0.01
MAX_ONSET = 0.1  # seconds of silence before the word, at most


def variant_family(variant: str) -> str:
    """`robosoft7` -> `robosoft`; single-letter designs keep their number (m1..m8 and f1..f5 are
    distinct voices)."""
    stem = re.sub(r"\d+$", "", variant).lower()
    family = stem if len(stem) > 1 else variant
    return MERGED_FAMILIES.get(family, family)


@dataclass(frozen=True)
class Utterance:
    """One word as espeak-ng says it: accent (-v language), variant (+name), speed (-s, words
    per minute), pitch (-p, 0-99), and where in the clip it starts, as a fraction of the free
    time before it (capped at MAX_ONSET), decided before the word's length is known."""

    word: str
    accent: str
    variant: str
    speed: int
    pitch: int
    start: float

    def command(self) -> list[str]:
        voice = f"{self.accent}+{self.variant}"
        return [
            "espeak-ng", "-v", voice, "-s", str(self.speed), "-p", str(self.pitch),
            "-a", str(AMPLITUDE), "--stdout", self.word,
        ]


def _data_dir() -> Path:
    """espeak-ng's data folder, from `espeak-ng --version` ("... Data at: <path>")."""
    try:
        out = subprocess.run(
            ["espeak-ng", "--version"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise UserError(f"espeak-ng does not run ({e}); {INSTALL_HINT}") from None
    match = re.search(r"Data at:\s*(\S+)", out)
    if not match:
        raise UserError(f"espeak-ng --version gave no data folder: {out.strip()!r}")
    return Path(match.group(1))


def check_espeak() -> None:
    """One-line UserError unless espeak-ng runs and has every variant in VARIANTS: it would
    silently fall back to its default voice for a missing one."""
    if shutil.which("espeak-ng") is None:
        raise UserError(f"espeak-word needs the espeak-ng program (not on PATH); {INSTALL_HINT}")
    variant_dir = _data_dir() / "voices" / "!v"
    missing = [v for v in VARIANTS if not (variant_dir / v).is_file()]
    if missing:
        raise UserError(
            f"espeak-ng at {variant_dir.parent.parent} lacks voice variants "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; "
            "espeak-word was audited with espeak-ng 1.51"
        )


def speak(u: Utterance) -> np.ndarray:
    """The word alone, at SAMPLE_RATE: espeak-ng's output resampled and cut to the samples
    above TRIM_FRACTION of its peak (its leading and trailing silence removed)."""
    result = subprocess.run(u.command(), capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        err = " ".join(result.stderr.decode(errors="replace").split())
        raise UserError(f"espeak-ng failed on {' '.join(u.command()[1:])}: {err or 'no audio'}")
    audio, rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
    if rate != ESPEAK_RATE:
        raise ValueError(f"espeak-ng wrote {rate} Hz audio, expected {ESPEAK_RATE}")
    x = to_task_rate(audio, ESPEAK_RATE)
    peak = float(np.abs(x).max()) if len(x) else 0.0
    loud = np.flatnonzero(np.abs(x) > TRIM_FRACTION * peak) if peak > 0 else []
    if len(loud) == 0:
        raise ValueError(f"espeak-ng said nothing for {u}")
    return x[loud[0] : loud[-1] + 1].astype(np.float64)


def espeak_renderer() -> ClipRenderer:
    """Each clip's one Utterance, placed in silence, faded and peak-normalised like the
    soundfont clips. Checks espeak-ng first, so a missing install fails before any writing."""
    check_espeak()

    def render(clip: Clip, num_samples: int) -> np.ndarray:
        (u,) = clip.sounds
        if clip.peak_db is None:
            raise ValueError(f"{clip.filename}: espeak clips need a peak level")
        word = speak(u)
        fade = round(FADE_SECONDS * SAMPLE_RATE)
        slack = num_samples - fade - len(word)
        if slack < 0:
            raise ValueError(f"{u}: {len(word) / SAMPLE_RATE:.2f} s, too long for the clip")
        onset = round(u.start * min(slack, MAX_ONSET * SAMPLE_RATE))
        out = np.zeros(num_samples, dtype=np.float64)
        out[onset : onset + len(word)] = word
        return finish_clip(out, SAMPLE_RATE, clip.peak_db)

    return render

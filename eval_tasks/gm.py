"""General-MIDI facts the task builders share: names, families, which programs render usefully
from TimGM6mb, the pitch splits and the random draws every note gets.

The program lists come from an audit: every bank-0 program rendered at velocity 100 on each key
36-84 (a 0.7 s note in a 1 s clip), its RMS level measured and its pitch estimated with CREPE
(torchcrepe tiny, median over frames with periodicity > 0.4 from 0.05 to 0.65 s). Left out:
  - everywhere: Reverse Cymbal (119: a swell that stays near -45 dB RMS in the first
    second); Sound Effects (120-127: noise, no pitch) in every task but gm-phrase-5fold,
    whose classes include five of them (`SCENE_EFFECTS`);
  - keys 48-83: Alto Sax (65, silent at key 64: a hole in the soundfont's key map), Baritone
    Sax (67, silent from key 80) and Whistle (78, silent from key 79);
  - gm-pitch: any program below -50 dB RMS on some key 36-84, or whose CREPE pitch is not
    the key (within 50 cents) on >= 95 % of them: organs with 16' stops sounding an octave
    down, bells, drums, fifths.
`tests/test_eval_tasks.py` re-checks that the chosen programs render at the range ends.
"""

import numpy as np
import pretty_midi

from eval_tasks.soundfont import Note

SIZES = ("small", "full")
TRAIN_VALID_TEST = ["train", "valid", "test"]

# gm-program / gm-family-mix: three distinct programs from each of the 15 pitched GM families.
PROGRAM_POOL = [
    0, 4, 6,  # Piano: acoustic grand, electric piano 1, harpsichord
    9, 11, 12,  # Chromatic Percussion: glockenspiel, vibraphone, marimba
    16, 19, 21,  # Organ: drawbar, church, accordion
    24, 26, 30,  # Guitar: nylon, jazz, distortion
    32, 33, 38,  # Bass: acoustic, finger, synth bass 1
    40, 42, 46,  # Strings: violin, cello, harp
    48, 52, 55,  # Ensemble: string ensemble 1, choir aahs, orchestra hit
    56, 57, 60,  # Brass: trumpet, trombone, French horn
    66, 68, 71,  # Reed: tenor sax, oboe, clarinet
    73, 75, 79,  # Pipe: flute, pan flute, ocarina
    80, 81, 85,  # Synth Lead: square, sawtooth, voice
    88, 89, 91,  # Synth Pad: new age, warm, choir
    96, 98, 100,  # Synth Effects: rain, crystal, brightness
    104, 105, 108,  # Ethnic: sitar, banjo, kalimba
    112, 114, 116,  # Percussive: tinkle bell, steel drums, taiko
]
# gm-family-5fold: every program audible on keys 48-83 (see above): 116 in 15 families.
AUDIBLE_PROGRAMS = [p for p in range(119) if p not in (65, 67, 78)]
# gm-pitch: programs whose CREPE pitch matched the key on >= 95 % of keys 36-84: 75 in 14
# families (every Percussive program failed).
PITCHED_PROGRAMS = [
    0, 1, 2, 3, 4, 5, 7, 10, 11, 12, 13, 15, 20, 24, 25, 26, 27, 28, 32, 33, 34, 35, 36, 39,
    40, 41, 42, 43, 44, 45, 46, 48, 49, 50, 51, 53, 54, 56, 57, 58, 59, 60, 62, 63, 64, 66, 71,
    72, 73, 74, 75, 76, 79, 80, 81, 82, 83, 85, 87, 88, 89, 91, 92, 93, 94, 95, 96, 99, 100,
    101, 102, 103, 108, 110, 111,
]
# gm-phrase-5fold: one GM sound effect for each of ESC-50's five categories: animals, natural
# soundscapes, human non-speech, domestic, urban. Bird Tweet and Telephone Ring are ~0.2 s
# one-shots; Seashore, Applause and Helicopter swell over about a second.
SCENE_EFFECTS = [123, 122, 126, 124, 125]  # bird tweet, seashore, applause, telephone, helicopter
# The `small` builds: four programs anyone can tell apart, from four families.
SMALL_PROGRAMS = [0, 40, 56, 73]  # acoustic grand, violin, trumpet, flute

# Draw ranges shared by every builder, so the tasks differ only in what they label.
VELOCITY_RANGE = (40, 127)  # inclusive; soft notes change timbre, not just level
PEAK_DB_RANGE = (-12.0, -1.0)  # clip peak after normalisation, dBFS
# Phrases (gm-phrase-5fold, gm-tags-varlen): hold / inter-onset interval, staccato to legato,
# below 1 with room to spare after rounding, so a key is always up before it is pressed again;
# and how far each note's velocity strays from its phrase's.
ARTICULATION_RANGE = (0.5, 0.95)
PHRASE_VELOCITY_SPREAD = 12


def program_name(program: int) -> str:
    return pretty_midi.program_to_instrument_name(program)


def family(program: int) -> str:
    return pretty_midi.program_to_instrument_class(program)


def interleaved_pitch_sets(low: int, high: int, n: int) -> list[list[int]]:
    """Split keys low..high (inclusive) into `n` disjoint sets that cover the same range.

    Key k goes to set (k + octave(k)) % n, so sets alternate semitone by semitone and the
    rotation shifts each octave; with n=3 over whole octaves every set holds all 12 pitch
    classes. A model is then tested on keys between, not beyond, the keys it trained on.
    """
    sets: list[list[int]] = [[] for _ in range(n)]
    for k in range(low, high + 1):
        sets[(k + k // 12) % n].append(k)
    return sets


def draw_peak_db(rng: np.random.Generator) -> float:
    return round(float(rng.uniform(*PEAK_DB_RANGE)), 2)


def draw_velocity(rng: np.random.Generator) -> int:
    return int(rng.integers(VELOCITY_RANGE[0], VELOCITY_RANGE[1] + 1))


def vary_velocity(rng: np.random.Generator, velocity: int) -> int:
    """`velocity` moved by up to PHRASE_VELOCITY_SPREAD either way, within VELOCITY_RANGE: the
    notes of one phrase vary around the phrase's own dynamic."""
    spread = PHRASE_VELOCITY_SPREAD
    v = velocity + int(rng.integers(-spread, spread + 1))
    return min(max(v, VELOCITY_RANGE[0]), VELOCITY_RANGE[1])


def solo_note(rng: np.random.Generator, program: int, pitch: int, duration: float) -> Note:
    """A note alone in its clip: starts within 50 ms, released 50-80 % into the clip so the
    release tail is heard too."""
    onset = round(float(rng.uniform(0.0, 0.05)), 4)
    hold = round(float(rng.uniform(0.5, 0.8)) * duration - onset, 4)
    return Note(program, pitch, draw_velocity(rng), onset, hold)

"""espeak-word: which word was said, by a voice never heard in training?

Multiclass over the 20 words of Speech Commands' core vocabulary (HEAR's speech_commands task
in miniature), spoken by espeak-ng. The voice variants are grouped into families (numbered
revisions of one design stay together, see `espeak.variant_family`) and the families dealt
60/20/20 % to train/valid/test, so valid and test voices never occur in training (listed in
the metadata as `split_variants`). Every variant of a split says every word; each utterance
draws its accent (8 English ones), speed (140-200 wpm), pitch (20-80), onset (0-100 ms) and
peak level (-12 to -1 dBFS) from the seed, so none of them says anything about the word.

Filenames: <variant>_<word>_<n>_<accent>_s<speed>_p<pitch>.wav.
"""

import numpy as np

from eval_tasks import espeak, gm
from eval_tasks.espeak import Utterance
from eval_tasks.layout import RENDER_THREADS, Clip, TaskPlan, task_metadata
from eval_tasks.splits import deal_by_size

NAME = "espeak-word"
DESCRIPTION = "spoken word, 1 s (20 classes, espeak-ng); valid/test voices never heard in training"
VERSION = "v1"
DURATION = 1.0
WORDS = [
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
]
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
SPEED_RANGE = (140, 200)  # words per minute, inclusive; espeak-ng's default is 175
PITCH_RANGE = (20, 80)  # inclusive, of 0-99; the default is 50
# Utterances of each (variant, word) per split.
RENDITIONS = {"full": 2, "small": 1}
SMALL_WORDS = ["yes", "no", "up", "down", "stop"]
SMALL_VARIANTS = ["m1", "f1", "m3", "croak", "f3"]  # dealt 3/1/1


def _utterance(rng: np.random.Generator, word: str, variant: str) -> Utterance:
    accent = espeak.ACCENTS[int(rng.integers(len(espeak.ACCENTS)))]
    speed = int(rng.integers(SPEED_RANGE[0], SPEED_RANGE[1] + 1))
    pitch = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
    start = round(float(rng.uniform(0.0, 1.0)), 4)
    return Utterance(word, accent, variant, speed, pitch, start)


def plan(size: str, seed: int) -> TaskPlan:
    """The clips of one build; the same (size, seed) always gives the same plan."""
    words, variants = (WORDS, espeak.VARIANTS) if size == "full" else (SMALL_WORDS, SMALL_VARIANTS)
    families: dict[str, list[str]] = {}
    for v in variants:
        families.setdefault(espeak.variant_family(v), []).append(v)
    rng = np.random.default_rng(seed)
    dealt = deal_by_size(list(families.values()), SPLIT_FRACTIONS, rng)
    split_variants = {
        s: sorted(vs, key=str.lower) for s, vs in zip(gm.TRAIN_VALID_TEST, dealt, strict=True)
    }
    clips = []
    for split, members in split_variants.items():
        for variant in members:
            for word in words:
                for n in range(RENDITIONS[size]):
                    u = _utterance(rng, word, variant)
                    name = f"{variant}_{word}_{n}_{u.accent}_s{u.speed:03d}_p{u.pitch:02d}.wav"
                    clips.append(Clip(split, name, (word,), (u,), gm.draw_peak_db(rng)))
    metadata = task_metadata(
        NAME,
        version=VERSION,
        prediction_type="multiclass",
        evaluation=["top1_acc"],
        splits=list(gm.TRAIN_VALID_TEST),
        sample_duration=DURATION,
        size=size,
        seed=seed,
        split_variants=split_variants,
    )
    return TaskPlan(
        metadata, list(words), clips, renderer=espeak.espeak_renderer,
        render_threads=RENDER_THREADS,  # espeak-ng is a subprocess per word
    )

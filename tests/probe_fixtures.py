"""Tiny embeddings folders in heareval's layout, written with the real writer, for probe tests."""

import json
from pathlib import Path

import numpy as np

from hear_contrastune.data.embeddings import write_split


def write_task(
    out_dir: Path,
    splits: dict[str, tuple[np.ndarray, list[list[str]]]],
    vocabulary: list[str],
    split_mode: str = "trainvaltest",
    prediction_type: str = "multiclass",
    evaluation: tuple[str, ...] = ("top1_acc", "mAP"),
) -> Path:
    """Write a scene task's metadata, vocabulary and every split; returns the folder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metadata = {
        "task_name": out_dir.name,
        "version": "test",
        "embedding_type": "scene",
        "prediction_type": prediction_type,
        "split_mode": split_mode,
        "splits": list(splits),
        "evaluation": list(evaluation),
        "sample_duration": 1.0,
    }
    (out_dir / "task_metadata.json").write_text(json.dumps(metadata))
    (out_dir / "labelvocabulary.csv").write_text(
        "idx,label\n" + "".join(f"{i},{label}\n" for i, label in enumerate(vocabulary))
    )
    for name, (x, labels) in splits.items():
        write_split(out_dir, name, x, labels)
    return out_dir


def clustered(
    rng: np.random.Generator, centers: np.ndarray, n: int, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """`n` points around random choices of `centers`; returns (points, class indices)."""
    y = rng.integers(0, len(centers), n)
    return (centers[y] + noise * rng.standard_normal((n, centers.shape[1]))).astype(np.float32), y


def multiclass_task(
    out_dir: Path,
    sizes: dict[str, int],
    seed: int = 0,
    dim: int = 8,
    n_classes: int = 3,
    noise: float = 1.0,
    split_mode: str = "trainvaltest",
) -> Path:
    """A clustered multiclass task with the given split sizes (names are the split names)."""
    rng = np.random.default_rng(seed)
    vocabulary = [f"c{i}" for i in range(n_classes)]
    centers = 2.0 * rng.standard_normal((n_classes, dim))
    splits = {}
    for name, n in sizes.items():
        x, y = clustered(rng, centers, n, noise)
        splits[name] = (x, [[vocabulary[i]] for i in y])
    return write_task(out_dir, splits, vocabulary, split_mode=split_mode)

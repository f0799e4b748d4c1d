"""One draw per few-shot run: the probes' view is cut from the recorded draw by clip name, so it
holds the same clips whatever order the embeddings' rows are in."""

import numpy as np
import pytest
from probe_fixtures import write_task

from hear_contrastune.data.embeddings import (
    open_embedded_task,
    read_clip_names,
    read_split,
    write_split,
)
from hear_contrastune.data.shots import SHOTS_FILE, read_draw, shots_view, write_draw
from hear_contrastune.errors import UserError


def embeddings(path, order: np.ndarray) -> None:
    """A 12-clip train split (rows in `order`) with a valid and a test split, each row named."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 4)).astype(np.float32)
    labels = [[f"c{i % 3}"] for i in range(12)]
    names = [f"train/clip{i:02d}.wav" for i in range(12)]
    splits = {"train": (x[order], [labels[i] for i in order], [names[i] for i in order])}
    for split in ("valid", "test"):
        splits[split] = (rng.standard_normal((3, 4)).astype(np.float32),
                         [["c0"], ["c1"], ["c2"]], [f"{split}/clip{i}.wav" for i in range(3)])
    write_task(path, {s: (xs, ys) for s, (xs, ys, _) in splits.items()}, ["c0", "c1", "c2"])
    for split, (xs, ys, clips) in splits.items():
        write_split(path, split, xs, ys, clips)  # again, with each row's clip name


def test_the_view_holds_the_drawn_clips_whatever_the_row_order(tmp_path):
    drawn = ["train/clip01.wav", "train/clip05.wav", "train/clip06.wav", "train/clip10.wav"]
    write_draw(tmp_path / SHOTS_FILE, drawn, shots=1, seed=0)
    assert read_draw(tmp_path / SHOTS_FILE) == drawn
    views = {}
    for name, order in (("sorted", np.arange(12)),
                        ("shuffled", np.random.default_rng(1).permutation(12))):
        embeddings(tmp_path / name, order)
        view = open_embedded_task(shots_view(open_embedded_task(tmp_path / name),
                                             read_draw(tmp_path / SHOTS_FILE), 1, 0,
                                             tmp_path / f"view-{name}"))
        x, labels = read_split(view, "train")
        views[name] = {clip: (row.tolist(), label) for clip, row, label
                       in zip(read_clip_names(view, "train"), x, labels, strict=True)}
        assert len(read_split(view, "test")[1]) == 3  # test stays whole
    assert set(views["sorted"]) == set(drawn)
    assert views["sorted"] == views["shuffled"]


def test_a_drawn_clip_missing_from_the_embeddings_is_refused(tmp_path):
    embeddings(tmp_path / "emb", np.arange(12))
    with pytest.raises(UserError, match="no embedding of 1 drawn"):
        shots_view(open_embedded_task(tmp_path / "emb"), ["train/clip99.wav"], 1, 0,
                   tmp_path / "view")

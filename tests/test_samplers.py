import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils import common_functions as c_f
from torch.utils.data import DataLoader, TensorDataset

from hear_contrastune.data.samplers import (
    MPerLabelSampler,
    SeededMPerClassSampler,
    fit_batch,
    make_sampler,
)
from hear_contrastune.errors import UserError
from hear_contrastune.training.config import BATCH_SIZE, M_PER_CLASS


def class_labels() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 12, size=600)


def multi_hot_labels() -> np.ndarray:
    """Skewed label frequencies, a few clips with no label, like real multi-label tasks."""
    rng = np.random.default_rng(1)
    frequencies = np.geomspace(0.3, 0.003, 40)
    labels = (rng.random((1000, 40)) < frequencies).astype(np.int64)
    labels[:10] = 0
    return labels


def has_positive_pair(batch_labels: np.ndarray) -> bool:
    if batch_labels.ndim == 1:
        return len(np.unique(batch_labels)) < len(batch_labels)
    shared = batch_labels @ batch_labels.T
    np.fill_diagonal(shared, 0)
    return bool(shared.any())


def test_class_labels_use_pml_m_per_class() -> None:
    labels = class_labels()
    sampler = make_sampler(labels, batch_size=32, m=4, seed=0)
    assert isinstance(sampler, SeededMPerClassSampler)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 600 // 32
    for batch in batches:
        assert len(batch) == 32
        _, counts = np.unique(labels[batch], return_counts=True)
        assert (counts % 4 == 0).all()


def test_class_sampler_leaves_pml_random_state_alone() -> None:
    list(make_sampler(class_labels(), batch_size=32, m=4, seed=0))
    assert c_f.NUMPY_RANDOM is np.random


def test_multi_hot_labels_use_label_sampler() -> None:
    labels = multi_hot_labels()
    sampler = make_sampler(torch.from_numpy(labels), batch_size=64, m=4, seed=0)
    assert isinstance(sampler, MPerLabelSampler)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 1000 // 64
    assert all(len(batch) == 64 for batch in batches)
    assert all(has_positive_pair(labels[batch]) for batch in batches)


def test_label_sampler_visits_every_clip_about_once() -> None:
    labels = multi_hot_labels()
    visits = np.bincount(
        np.concatenate(list(make_sampler(labels, batch_size=50, m=4, seed=0))), minlength=1000
    )
    assert visits.sum() == 1000
    assert (visits >= 1).mean() > 0.9
    assert visits.max() <= 3


@pytest.mark.parametrize("labels", [class_labels(), multi_hot_labels()], ids=["class", "multi"])
def test_deterministic_given_seed_and_new_each_epoch(labels: np.ndarray) -> None:
    first, again, other = (make_sampler(labels, 32, 4, seed) for seed in (7, 7, 8))
    first_epochs = [list(first), list(first)]
    assert first_epochs == [list(again), list(again)]
    assert first_epochs[0] != first_epochs[1]
    assert first_epochs[0] != list(other)


def test_works_as_a_dataloader_batch_sampler() -> None:
    labels = multi_hot_labels()
    dataset = TensorDataset(torch.arange(len(labels)), torch.from_numpy(labels))
    loader = DataLoader(dataset, batch_sampler=make_sampler(labels, 64, 4, seed=0))
    for indices, batch_labels in loader:
        assert len(indices) == 64
        assert has_positive_pair(batch_labels.numpy())


@pytest.mark.parametrize(
    ("labels", "batch_size", "m", "message"),
    [
        (class_labels(), 32, 1, "between 2"),
        (class_labels(), 30, 4, "multiple of m"),
        (class_labels(), 64, 4, "cannot fill"),
        (class_labels()[:20], 32, 4, "larger than"),
    ],
)
def test_rejects_impossible_settings(
    labels: np.ndarray, batch_size: int, m: int, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        make_sampler(labels, batch_size, m, seed=0)


@pytest.mark.parametrize(
    ("classes", "per_class", "batch", "m"),
    [
        (45, 12, 64, 4),  # enough classes: the defaults, 16 classes x 4
        (15, 8, 60, 4),  # 15 classes: every class in each batch
        (10, 12, 60, 6),
        (4, 30, 64, 16),
        (4, 4, 16, 4),  # a 4-shot draw: never more than the train clips
        (45, 1, 44, 2),  # one clip a class: pairs of views of it
    ],
)
def test_default_batches_fit_the_task(classes: int, per_class: int, batch: int, m: int) -> None:
    labels = np.repeat(np.arange(classes), per_class)
    shape = fit_batch(labels, None, None, BATCH_SIZE, M_PER_CLASS)
    assert (shape.batch_size, shape.m) == (batch, m), shape.note
    assert f"batches of {batch} clips" in shape.note and "fitted" in shape.note
    # the shape it fits is one every epoch's sampler accepts, with two classes or more a batch
    first = next(iter(make_sampler(labels, shape.batch_size, shape.m, seed=0)))
    assert len(first) == batch and len(set(labels[first])) == min(classes, batch // m) >= 2


def test_explicit_batches_are_checked_not_changed() -> None:
    labels = np.repeat(np.arange(15), 8)
    with pytest.raises(UserError, match=r"m=4 clips × 15 classes cannot fill a batch of 64"):
        fit_batch(labels, 64, 4, BATCH_SIZE, M_PER_CLASS)
    assert fit_batch(labels, 60, 4, BATCH_SIZE, M_PER_CLASS).note.endswith("(as given)")
    # one of the two given: the other is fitted around it
    assert fit_batch(labels, 32, None, BATCH_SIZE, M_PER_CLASS).m == 4
    assert fit_batch(labels, None, 8, BATCH_SIZE, M_PER_CLASS).batch_size == 64
    with pytest.raises(UserError, match="two classes"):
        fit_batch(np.zeros(40, dtype=int), None, None, BATCH_SIZE, M_PER_CLASS)


def test_multilabel_default_batches_fit_a_small_task() -> None:
    multi_hot = (np.random.default_rng(0).random((40, 3)) < 0.5).astype(np.float32)
    shape = fit_batch(multi_hot, None, None, BATCH_SIZE, M_PER_CLASS)
    assert (shape.batch_size, shape.m) == (40, 4)
    assert len(next(iter(make_sampler(multi_hot, shape.batch_size, shape.m, seed=0)))) == 40

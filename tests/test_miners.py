import pytest
import torch
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from hear_contrastune.training.miners import JaccardMiner, jaccard_similarity


def random_multi_hot(batch: int, num_labels: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.rand(batch, num_labels, generator=generator) < 0.2).int()
    labels[:3] = 0  # some clips without any label
    return labels


def label_sets(labels: torch.Tensor) -> list[set[int]]:
    return [set(torch.nonzero(row).flatten().tolist()) for row in labels]


def brute_force_jaccard(sets: list[set[int]]) -> list[list[float]]:
    return [[len(a & b) / len(a | b) if a | b else 0.0 for b in sets] for a in sets]


def test_jaccard_similarity_matches_loops() -> None:
    labels = random_multi_hot(30, 8, seed=0)
    expected = torch.tensor(brute_force_jaccard(label_sets(labels)))
    torch.testing.assert_close(jaccard_similarity(labels), expected)


def test_jaccard_similarity_stays_float32_under_autocast() -> None:
    labels = random_multi_hot(30, 8, seed=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        jaccard = jaccard_similarity(labels)
    assert jaccard.dtype == torch.float32
    torch.testing.assert_close(jaccard, torch.tensor(brute_force_jaccard(label_sets(labels))))


def test_class_labels_are_same_class_indicator() -> None:
    labels = torch.tensor([3, 1, 3, 2])
    expected = (labels[:, None] == labels[None, :]).float()
    torch.testing.assert_close(jaccard_similarity(labels), expected)


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5])
def test_indices_match_brute_force(threshold: float) -> None:
    labels = random_multi_hot(40, 10, seed=2)
    sets = label_sets(labels)
    jaccard = brute_force_jaccard(sets)
    n = len(sets)
    positives = {(i, j) for i in range(n) for j in range(n) if i != j and jaccard[i][j] > threshold}
    negatives = {(i, j) for i in range(n) for j in range(n) if i != j and jaccard[i][j] == 0}
    assert positives and negatives

    miner = JaccardMiner(pos_threshold=threshold)
    a1, p, a2, n_ = miner(torch.randn(n, 4), labels)
    assert set(zip(a1.tolist(), p.tolist(), strict=True)) == positives
    assert set(zip(a2.tolist(), n_.tolist(), strict=True)) == negatives
    assert len(a1) == len(positives) and len(a2) == len(negatives)  # no duplicates
    pairs = zip(a1.tolist(), p.tolist(), strict=True)
    expected_weights = torch.tensor([jaccard[i][j] for i, j in pairs])
    torch.testing.assert_close(miner.pos_weights, expected_weights)


def test_empty_clips_are_negatives_to_all() -> None:
    labels = random_multi_hot(12, 5, seed=3)
    a1, p, a2, n = JaccardMiner()(torch.randn(12, 4), labels)
    negatives = set(zip(a2.tolist(), n.tolist(), strict=True))
    for empty in range(3):
        assert empty not in a1.tolist() and empty not in p.tolist()
        assert all(
            (empty, j) in negatives and (j, empty) in negatives for j in range(12) if j != empty
        )


def test_class_labels_match_pml_all_pairs() -> None:
    labels = torch.randint(0, 5, (30,))
    ours = JaccardMiner()(torch.randn(30, 4), labels)
    theirs = lmu.get_all_pairs_indices(labels)
    for mine, pml in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, pml)


def test_rejects_bad_threshold() -> None:
    with pytest.raises(ValueError, match="pos_threshold"):
        JaccardMiner(pos_threshold=1.0)

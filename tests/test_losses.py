import math

import pytest
import torch
from pytorch_metric_learning.losses import SupConLoss
from pytorch_metric_learning.miners import MultiSimilarityMiner

from hear_contrastune.losses import JaccardSupConLoss
from hear_contrastune.training.miners import JaccardMiner

# Six clips over four labels; clips 4 and 5 have no label.
LABEL_SETS = [{0, 1}, {1}, {1, 2}, {3}, set(), set()]


def multi_hot(label_sets: list[set[int]], num_labels: int = 4) -> torch.Tensor:
    return torch.tensor([[int(k in s) for k in range(num_labels)] for s in label_sets])


def hand_loss(
    embeddings: torch.Tensor,
    label_sets: list[set[int]],
    temperature: float,
    weight=lambda a, b: len(a & b) / len(a | b) if a | b else 0.0,
    in_pair=lambda a, b: True,
) -> float:
    """The formula with explicit loops; `in_pair` says which pairs a miner kept."""
    z = [[float(x) for x in row] for row in torch.nn.functional.normalize(embeddings, dim=1)]
    n = len(z)

    def sim(i: int, j: int) -> float:
        return sum(a * b for a, b in zip(z[i], z[j], strict=True))

    anchor_losses = []
    for i in range(n):
        others = [j for j in range(n) if j != i and in_pair(label_sets[i], label_sets[j])]
        weights = {j: weight(label_sets[i], label_sets[j]) for j in others}
        if not any(w > 0 for w in weights.values()):
            continue
        denominator = sum(math.exp(sim(i, a) / temperature) for a in others)
        total = 0.0
        for j in others:
            log_p = sim(i, j) / temperature - math.log(denominator)
            total += weights[j] * log_p
        anchor_losses.append(-total / sum(weights.values()))
    return sum(anchor_losses) / len(anchor_losses)


@pytest.mark.parametrize("temperature", [0.07, 0.1, 0.5])
def test_matches_hand_computation(temperature: float) -> None:
    torch.manual_seed(0)
    embeddings = torch.randn(len(LABEL_SETS), 5, dtype=torch.float64)
    loss_fn = JaccardSupConLoss(temperature=temperature)
    loss = loss_fn(embeddings, multi_hot(LABEL_SETS))
    assert loss.item() == pytest.approx(hand_loss(embeddings, LABEL_SETS, temperature), rel=1e-6)
    assert loss_fn.num_anchors_without_positive == 3  # clip 3 (label 3 alone) and both empties


def test_any_shared_matches_hand_computation() -> None:
    torch.manual_seed(1)
    embeddings = torch.randn(len(LABEL_SETS), 5, dtype=torch.float64)
    loss = JaccardSupConLoss(temperature=0.2, weighting="any-shared")(
        embeddings, multi_hot(LABEL_SETS)
    )
    expected = hand_loss(embeddings, LABEL_SETS, 0.2, weight=lambda a, b: float(bool(a & b)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.3, 1.0])
@pytest.mark.parametrize("weighting", ["jaccard", "any-shared"])
def test_equals_pml_supcon_on_class_labels(temperature: float, weighting: str) -> None:
    generator = torch.Generator().manual_seed(int(temperature * 100))
    embeddings = torch.randn(96, 32, generator=generator)
    labels = torch.randint(0, 10, (96,), generator=generator)
    ours = JaccardSupConLoss(temperature=temperature, weighting=weighting)(embeddings, labels)
    theirs = SupConLoss(temperature=temperature)(embeddings, labels)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_equals_pml_supcon_with_a_pml_miner() -> None:
    torch.manual_seed(2)
    embeddings, labels = torch.randn(64, 16), torch.randint(0, 6, (64,))
    indices_tuple = MultiSimilarityMiner(epsilon=0.1)(embeddings, labels)
    ours = JaccardSupConLoss()(embeddings, labels, indices_tuple)
    theirs = SupConLoss()(embeddings, labels, indices_tuple)
    torch.testing.assert_close(ours, theirs)


def test_full_jaccard_miner_changes_nothing() -> None:
    torch.manual_seed(3)
    embeddings, labels = torch.randn(40, 8), (torch.rand(40, 12) < 0.15).int()
    loss_fn = JaccardSupConLoss()
    torch.testing.assert_close(
        loss_fn(embeddings, labels, JaccardMiner()(embeddings, labels)),
        loss_fn(embeddings, labels),
    )


def test_mined_pairs_only_with_a_threshold() -> None:
    """Pairs with 0 < J <= threshold leave both numerator and softmax, as in PML."""
    torch.manual_seed(4)
    embeddings = torch.randn(len(LABEL_SETS), 5, dtype=torch.float64)
    labels = multi_hot(LABEL_SETS)
    loss = JaccardSupConLoss()(embeddings, labels, JaccardMiner(0.4)(embeddings, labels))

    def jaccard(a: set[int], b: set[int]) -> float:
        return len(a & b) / len(a | b) if a | b else 0.0

    expected = hand_loss(
        embeddings,
        LABEL_SETS,
        0.1,
        weight=lambda a, b: jaccard(a, b) if jaccard(a, b) > 0.4 else 0.0,
        in_pair=lambda a, b: jaccard(a, b) > 0.4 or jaccard(a, b) == 0,
    )
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_gradients_reach_embeddings() -> None:
    torch.manual_seed(5)
    embeddings = torch.randn(len(LABEL_SETS), 5, requires_grad=True)
    JaccardSupConLoss()(embeddings, multi_hot(LABEL_SETS)).backward()
    assert embeddings.grad is not None
    assert torch.isfinite(embeddings.grad).all()
    assert embeddings.grad[:4].abs().sum() > 0


@pytest.mark.parametrize(
    "labels",
    [
        torch.eye(5, dtype=torch.int64),  # every clip its own label: all pairs negative
        torch.zeros(5, 3, dtype=torch.int64),  # no clip has a label
        torch.arange(5),  # class labels, all different
    ],
    ids=["all-negative", "all-empty", "distinct-classes"],
)
def test_no_positive_gives_a_finite_zero_with_a_graph(labels: torch.Tensor) -> None:
    embeddings = torch.randn(5, 4, requires_grad=True)
    loss_fn = JaccardSupConLoss()
    loss = loss_fn(embeddings, labels)
    assert loss.item() == 0
    assert loss.grad_fn is not None
    loss.backward()
    assert torch.isfinite(embeddings.grad).all()
    assert loss_fn.num_anchors_without_positive == 5


def test_stable_at_tiny_temperature() -> None:
    torch.manual_seed(6)
    embeddings = torch.randn(32, 8, requires_grad=True)
    labels = (torch.rand(32, 6) < 0.3).int()
    loss = JaccardSupConLoss(temperature=1e-4)(embeddings, labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(embeddings.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(dtype: torch.dtype) -> None:
    """Under CPU autocast (the CUDA version below needs a GPU) and for half-precision input."""
    torch.manual_seed(7)
    embeddings, labels = torch.randn(32, 8), (torch.rand(32, 6) < 0.3).int()
    loss_fn = JaccardSupConLoss()
    expected = loss_fn(embeddings, labels)
    with torch.autocast("cpu", dtype=dtype):
        autocast_loss = loss_fn(embeddings, labels)
    half_loss = loss_fn(embeddings.to(dtype), labels)
    for loss in (autocast_loss, half_loss):
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss, expected, rtol=2e-3, atol=2e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast(dtype: torch.dtype) -> None:
    torch.manual_seed(8)
    layer = torch.nn.Linear(16, 8).cuda()
    inputs, labels = torch.randn(64, 16, device="cuda"), (torch.rand(64, 10) < 0.2).int()
    loss_fn = JaccardSupConLoss(temperature=0.05)
    expected = loss_fn(layer(inputs), labels)
    with torch.autocast("cuda", dtype=dtype):
        embeddings = layer(inputs)
        assert embeddings.dtype == dtype
        loss = loss_fn(embeddings, labels)
    loss.backward()
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=1e-2, atol=1e-2)
    assert torch.isfinite(layer.weight.grad).all()


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="weighting"):
        JaccardSupConLoss(weighting="overlap")
    with pytest.raises(ValueError, match="rows of labels"):
        JaccardSupConLoss()(torch.randn(4, 3), torch.arange(5))
    with pytest.raises(ValueError, match="multi-hot"):
        JaccardSupConLoss()(torch.randn(4, 3), torch.zeros(4, 2, 2))

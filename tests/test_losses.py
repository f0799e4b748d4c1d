import math

import pytest
import torch
from pytorch_metric_learning.losses import CrossBatchMemory, SupConLoss
from pytorch_metric_learning.miners import MultiSimilarityMiner

from hear_contrastune.training.losses import JaccardSupConLoss, LabelSetCrossBatchMemory
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
    references: tuple[torch.Tensor, list[set[int]], list[int]] | None = None,
) -> float:
    """The formula with explicit loops; `in_pair` says which pairs a miner kept. `references`:
    (embeddings, label sets, each anchor's own row among them) to compare anchors with instead
    of the batch."""
    ref_emb, ref_sets, own = references or (embeddings, label_sets, list(range(len(label_sets))))
    z, r = ([[float(x) for x in row] for row in torch.nn.functional.normalize(e, dim=1)]
            for e in (embeddings, ref_emb))

    def sim(i: int, j: int) -> float:
        return sum(a * b for a, b in zip(z[i], r[j], strict=True))

    anchor_losses = []
    for i in range(len(z)):
        others = [j for j in range(len(r))
                  if j != own[i] and in_pair(label_sets[i], ref_sets[j])]
        weights = {j: weight(label_sets[i], ref_sets[j]) for j in others}
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


def memory_steps(memory: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]
                 ) -> list[torch.Tensor]:
    """The memory-wrapped loss of each batch in turn."""
    return [memory(embeddings, labels) for embeddings, labels in batches]


def label_sets_of(labels: torch.Tensor) -> list[set[int]]:
    if labels.ndim == 1:
        return [{int(c)} for c in labels]
    return [set(torch.where(row > 0)[0].tolist()) for row in labels]


@pytest.mark.parametrize("multilabel", [False, True], ids=["supcon", "jaccard-supcon"])
def test_cross_batch_memory_equals_the_loss_over_batch_and_memory(multilabel: bool) -> None:
    """Memory of 10, batches of 4: after three batches it holds the last 10 embeddings (the
    first batch's first two overwritten), the third batch's own among them."""
    generator = torch.Generator().manual_seed(9)
    batches = []
    for _ in range(3):
        embeddings = torch.randn(4, 5, dtype=torch.float64, generator=generator)
        if multilabel:  # some clips with no label, some sharing part of their labels
            labels = (torch.rand(4, 4, generator=generator) < 0.4).float()
        else:
            labels = torch.randint(0, 3, (4,), generator=generator)
        batches.append((embeddings.requires_grad_(), labels))
    if multilabel:
        loss_fn = JaccardSupConLoss(temperature=0.2)
        memory = LabelSetCrossBatchMemory(loss_fn, 5, num_labels=4, memory_size=10)
    else:
        loss_fn = SupConLoss(temperature=0.2)
        memory = CrossBatchMemory(loss_fn, 5, memory_size=10)
    losses = memory_steps(memory, batches)
    # the first batch meets only itself: the plain loss of that batch
    assert losses[0].item() == pytest.approx(loss_fn(*batches[0]).item(), rel=1e-6)
    seen = torch.cat([e for e, _ in batches]).detach()[-10:]
    seen_sets = [s for _, y in batches for s in label_sets_of(y)][-10:]
    embeddings, labels = batches[2]
    expected = hand_loss(embeddings.detach(), label_sets_of(labels), 0.2,
                         references=(seen, seen_sets, [6, 7, 8, 9]))
    assert losses[2].item() == pytest.approx(expected, rel=1e-6)
    # gradients reach the batch only: the memory holds detached copies
    losses[2].backward()
    assert batches[2][0].grad.abs().sum() > 0 and batches[1][0].grad is None


def test_label_set_memory_with_class_ids_equals_pml_memory_with_supcon() -> None:
    generator = torch.Generator().manual_seed(10)
    batches = [(torch.randn(8, 6, generator=generator), torch.randint(0, 4, (8,),
                                                                     generator=generator))
               for _ in range(4)]
    ours = memory_steps(LabelSetCrossBatchMemory(JaccardSupConLoss(), 6, memory_size=20),
                        batches)
    theirs = memory_steps(CrossBatchMemory(SupConLoss(), 6, memory_size=20), batches)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)

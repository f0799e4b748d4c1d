"""Model selection while tuning: how good is this epoch's encoder, on the valid split only.

The backbone alone (no head) embeds train and valid, and a kNN probe, best over a small k
grid, scores valid: the score that picks the epoch kept as `best.pt`. Given a classifier head,
its own valid score is logged beside it, to show it learns. The full kNN probe
(probes.knn) chooses k on valid and reports test; this is only for choosing an epoch.
"""

import torch
from sklearn.metrics import average_precision_score
from torch import Tensor, nn

from hear_contrastune.backbones import Backbone
from hear_contrastune.hear_api import HearModel, get_scene_embeddings
from hear_contrastune.probes.knn_search import KnnIndex, vote

VALID_K = (1, 5, 10, 20)


def valid_metric(scores: Tensor, truth: Tensor, multilabel: bool) -> float:
    """Top-1 accuracy of class scores [n, classes], or mAP over labels present for multilabel."""
    if multilabel:
        present = truth.sum(0) > 0
        return float(average_precision_score(truth[:, present], scores[:, present]))
    return (scores.argmax(1) == truth).float().mean().item()


def score(backbone: Backbone, model: HearModel, data: dict[str, tuple[Tensor, Tensor]],
          multilabel: bool, head: nn.Module | None = None) -> dict[str, float]:
    """Valid-split scores of the backbone alone: `valid_knn` (what selects the epoch) and, given
    a classifier head, `valid_head`."""
    emb = {split: get_scene_embeddings(audio, model) for split, (audio, _) in data.items()}
    backbone.train()
    (train_y, valid_y) = (data["train"][1].cpu(), data["valid"][1].cpu())
    if not multilabel:
        n_classes = int(max(train_y.max(), valid_y.max())) + 1
        train_y = torch.nn.functional.one_hot(train_y, n_classes)
    neighbours = KnnIndex(emb["train"], device=emb["train"].device).search(
        emb["valid"], max(VALID_K))
    scores = {"valid_knn": max(valid_metric(vote(neighbours, train_y, k), valid_y, multilabel)
                               for k in VALID_K if k <= neighbours.k)}
    if head is not None:
        head.eval()
        with torch.no_grad():
            scores["valid_head"] = valid_metric(head(emb["valid"]).cpu(), valid_y, multilabel)
        head.train()
    return scores

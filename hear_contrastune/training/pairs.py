"""Pairs of a batch from its labels: the label checks and the overlap that miners and losses share.

`jaccard_similarity` is the one place a batch's label overlap is computed; `JaccardMiner` and
`JaccardSupConLoss` both use it.
"""

import torch


def check_labels(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Validate labels against the batch and move them to its device.

    PML's own check insists on 1-D labels; here 2-D multi-hot (batch × num_labels) is allowed too.
    """
    if labels.ndim not in (1, 2):
        raise ValueError(
            "labels must be 1-D class ids (batch,) or a 2-D multi-hot tensor (batch, num_labels), "
            f"got shape {tuple(labels.shape)}"
        )
    if labels.shape[0] != embeddings.shape[0]:
        raise ValueError(f"{embeddings.shape[0]} embeddings but {labels.shape[0]} rows of labels")
    return labels.to(embeddings.device)


def jaccard_similarity(labels: torch.Tensor) -> torch.Tensor:
    """All pairwise |Y_i ∩ Y_j| / |Y_i ∪ Y_j| of a batch's label sets, as a float32 (B, B) matrix.

    1-D class ids are one label per clip (1 for the same class, else 0). Rows of a 2-D multi-hot
    tensor are label sets (non-zero = present); two empty sets score 0. Autocast is turned off so
    the counts and their ratio stay exact in float32.
    """
    if labels.ndim == 1:
        return (labels.unsqueeze(1) == labels.unsqueeze(0)).float()
    with torch.autocast(labels.device.type, enabled=False):
        y = (labels != 0).float()
        intersection = y @ y.T
        sizes = y.sum(dim=1)
        union = sizes.unsqueeze(1) + sizes.unsqueeze(0) - intersection
        return intersection / union.clamp(min=1)


def off_diagonal(n: int, device: torch.device) -> torch.Tensor:
    """Mask of all pairs (i, j) with i != j: a clip is never its own positive or negative."""
    return ~torch.eye(n, dtype=torch.bool, device=device)

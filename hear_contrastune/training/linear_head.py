"""LP-FT's first stage: the classifier fit as a linear probe on the frozen encoder.

Kumar et al. (2022, "Fine-Tuning can Distort Pretrained Features") fit the head on frozen
features first, then fine-tune everything from there: a random head's large early gradients
pull the pretrained features apart (the README's fine-tuning study saw valid kNN fall from 0.63
to 0.24 with a slow random head). The fit is the logistic probe's own
(estimators.logistic_fit.fit_path: L-BFGS to convergence on standardised features, C chosen on
valid by the task's metric), on what
the classifier sees (the L2-normalised embedding times its scale), of model selection's train
and valid clips; the standardisation is then folded into the layer: W' = W / s, b' = b - W' m.
"""

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from hear_contrastune.estimators.logistic_fit import BLAS_THREADS, DEFAULT_C_GRID, fit_path
from hear_contrastune.estimators.valid_choice import choose_on_valid
from hear_contrastune.training.objective import Classifier
from hear_contrastune.training.valid_evaluator import valid_metric


def multi_hot(targets: Tensor, n_labels: int) -> np.ndarray:
    """Class ids [n] or multi-hot rows [n, labels], as multi-hot float64 (fit_path's targets)."""
    if targets.ndim == 2:
        return targets.cpu().double().numpy()
    return nn.functional.one_hot(targets.cpu(), n_labels).double().numpy()


def fit_linear_head(classifier: Classifier, train_emb: Tensor, train_targets: Tensor,
                    valid_emb: Tensor, valid_targets: Tensor, multilabel: bool) -> str:
    """Set the classifier's linear layer to the valid-chosen logistic probe; returns a log line."""
    n_labels = classifier.linear.out_features

    def features(emb: Tensor) -> np.ndarray:
        scaled = nn.functional.normalize(emb.float(), dim=-1) * classifier.scale
        return scaled.cpu().double().numpy()

    scaler = StandardScaler()
    train_x = scaler.fit_transform(features(train_emb))
    valid_x = scaler.transform(features(valid_emb))
    with threadpool_limits(BLAS_THREADS, user_api="blas"):
        path = fit_path(train_x, multi_hot(train_targets, n_labels), [valid_x], DEFAULT_C_GRID,
                        multilabel)
    valid_y = valid_targets.cpu()
    scores = {c: valid_metric(torch.from_numpy(fit.predictions[0]), valid_y, multilabel)
              for c, fit in path.items()}
    best_c = choose_on_valid(scores, maximize=True)  # as the probe: ties go to the smaller C
    fit = path[best_c]
    weight = fit.weight / scaler.scale_
    bias = fit.bias - weight @ scaler.mean_
    with torch.no_grad():
        classifier.linear.weight.copy_(torch.from_numpy(weight))
        classifier.linear.bias.copy_(torch.from_numpy(bias))
    return (f"LP-FT: classifier fit as a linear probe on the frozen encoder ({len(train_x)} "
            f"train clips, C {best_c:g} chosen on valid: {scores[best_c]:.4f}"
            + ("" if fit.converged else "; not converged") + ")")

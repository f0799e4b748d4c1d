"""L2-regularised logistic regression over a path of C: the logistic probe's model, and LP-FT's
first stage (the classifier fit on the frozen encoder), below both so that training need not
import a probe.

The solver is scikit-learn's LogisticRegression(solver="lbfgs") itself: it is the reference
implementation of exactly this objective (cross-entropy summed over clips + |W|^2 / 2C, the
intercept unpenalised), minimised by scipy's L-BFGS-B until the largest entry of the gradient
(of the loss per clip) is under TOL. Writing the objective again would be more code to trust for
the same optimum. Two settings differ from its defaults, both for convergence: MAX_ITER is far
above what a fit needs, so a fit stops at the tolerance and not at an iteration cap, and a fit
that still does not converge is recorded, not hidden; and TOL
is 1e-6, not 1e-4: at 1e-4, fits at large C stopped early on nearly separable embeddings
(quickstart's gm-program, C = 1000: 14 iterations and valid accuracy 0.574, against 0.609 at 1e-6
and 0.615 at 1e-8), which biased the choice of C towards small values.
"""

import warnings
from typing import NamedTuple

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

DEFAULT_C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3)
TOL = 1e-6
MAX_ITER = 10_000
# One BLAS thread. On a 2-core machine with another process running, OpenBLAS's two threads
# wait on each other: the 3000 x 256, 50-class probe took 397 s with two, 10.5 s with one.
BLAS_THREADS = 1


class Fit(NamedTuple):
    """One C's models, applied: a score matrix [n, n_labels] per query set, in vocabulary order
    (heareval's scorers index it so); the most L-BFGS iterations a fit took; whether every fit
    converged; and the models as one linear layer, logits = x @ weight.T + bias ([n_labels, d],
    [n_labels]; softmax for multiclass, sigmoid per label for multilabel), which LP-FT starts
    its classifier from. A label constant in train gets weight 0 and a bias of +-CONSTANT_LOGIT."""

    predictions: list[np.ndarray]
    iterations: int
    converged: bool
    weight: np.ndarray
    bias: np.ndarray


CONSTANT_LOGIT = 20.0  # a label never (or always) seen in train: probability ~2e-9 (or 1 - that)


def fit_path(
    train_x: np.ndarray, train_y: np.ndarray, queries: list[np.ndarray],
    c_grid: tuple[float, ...], multilabel: bool,
) -> dict[float, Fit]:
    """Fit at each C on standardised train features and multi-hot targets. The grid is
    ascending and each fit starts from the last C's solution, which moves smoothly with C: that
    saved a quarter of the time (3000 clips x 2048 dims, 50 classes: 52 s against 71 s). Both
    starts end within TOL of the optimum; the scores they gave differed by at most 0.006, at
    C = 1000 where the optimum is flattest."""
    n_labels = train_y.shape[1]
    # A label whose train column is constant has no boundary to learn: in multilabel, one in no
    # train clip (or in all) is predicted with its train prior, 0 (or 1), in every clip; in
    # multiclass, a class absent from train keeps probability 0 and the others share the rest.
    constant = train_y.min(axis=0) == train_y.max(axis=0)
    if multilabel:  # one-vs-rest: an independent binary model per label, as OneVsRestClassifier
        jobs = [(np.array([j]), train_y[:, j]) for j in np.flatnonzero(~constant)]
    elif constant.all():  # a single class in train: it gets all the probability
        jobs = []
    else:  # multinomial over the classes present in train; classes_ come in index order
        jobs = [(np.flatnonzero(~constant), train_y.argmax(axis=1))]
    models = [LogisticRegression(solver="lbfgs", tol=TOL, max_iter=MAX_ITER, warm_start=True)
              for _ in jobs]
    path = {}
    for c in c_grid:
        outs = [np.zeros((len(q), n_labels)) for q in queries]
        for out in outs:
            out[:, constant] = train_y[0, constant]
        iterations, converged = 0, True
        weight = np.zeros((n_labels, train_x.shape[1]))
        bias = np.where(train_y[0] > 0, CONSTANT_LOGIT, -CONSTANT_LOGIT) * constant
        for model, (columns, target) in zip(models, jobs, strict=True):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                model.set_params(C=c).fit(train_x, target)
            converged &= not any(issubclass(w.category, ConvergenceWarning) for w in caught)
            iterations = max(iterations, int(model.n_iter_.max()))
            coef, intercept = model.coef_, model.intercept_
            if coef.shape[0] == 1 and len(columns) == 2:  # binary: logit of the second class
                coef = np.concatenate([np.zeros_like(coef), coef])
                intercept = np.concatenate([np.zeros_like(intercept), intercept])
            weight[columns], bias[columns] = coef, intercept
            for out, q in zip(outs, queries, strict=True):
                proba = model.predict_proba(q)
                out[:, columns] = proba[:, 1:] if multilabel else proba
        path[c] = Fit(outs, iterations, converged, weight, bias)
    return path

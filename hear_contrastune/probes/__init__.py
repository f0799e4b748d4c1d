"""Judging embeddings as heareval does: the shared protocol (fold roles, scores), the kNN
probe, the logistic and linear probes and heareval's own MLP evaluator; the models the kNN and
logistic probes fit are estimators'."""

"""Judging embeddings as heareval does: the shared protocol (fold roles, scores), exact kNN
search, the kNN probe, the linear probe and heareval's own MLP evaluator."""

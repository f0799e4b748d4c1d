"""The models a probe fits, as primitives below training: exact kNN search and voting, the
logistic regression path, and the rule that picks a hyperparameter on valid. Model selection and
LP-FT use them while tuning, the probes on embeddings folders, so both judge alike."""

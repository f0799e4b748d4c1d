"""Tuning a backbone: the run's configuration, the method's head and loss (SupCon, the
Jaccard-weighted loss and its miner), model selection, resume state, checkpoints, logs and
data-parallel training; the loop that ties them together is training.loop."""

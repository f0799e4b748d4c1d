"""The losses' public home: `from hear_contrastune.losses import JaccardSupConLoss`.

They are defined in training.losses, beside the miners and the loop that use them.
"""

from hear_contrastune.training.losses import WEIGHTINGS, JaccardSupConLoss

__all__ = ["WEIGHTINGS", "JaccardSupConLoss"]

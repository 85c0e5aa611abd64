"""Learning-rate rules shared by the training modules: the CycleGAN schedule and batch-size scaling."""

from __future__ import annotations

import math
from typing import Literal


def linear_decay_factor(epoch: int, *, epochs_constant: int, epochs_decay: int) -> float:
    """LR multiplier after `epoch` epochs: 1 for `epochs_constant` epochs, then linearly towards 0.

    The CycleGAN reference's rule: 1 - max(0, epoch + 1 - n_epochs) / (n_epochs_decay + 1).
    """
    return 1.0 - max(0, epoch + 1 - epochs_constant) / float(epochs_decay + 1)


LrScaling = Literal["none", "sqrt", "linear"]


def batch_lr_factor(global_batch: int, rule: LrScaling, *, base_batch: int = 1) -> float:
    """Learning-rate multiplier for `global_batch` images per optimiser step (the paper used 1).

    "none": the paper's LR at any batch. "sqrt": lr * sqrt(batch / base), the square-root rule for
    Adam (Malladi et al. 2022), the default of the fast presets. "linear": lr * batch / base (the SGD rule).
    The LR schedule counts epochs (images seen), not steps, so it is the paper's at every batch size.
    """
    if global_batch < 1 or base_batch < 1:
        raise ValueError(f"batch sizes must be >= 1, got {global_batch} and {base_batch}")
    ratio = global_batch / base_batch
    if rule == "none":
        return 1.0
    if rule == "sqrt":
        return math.sqrt(ratio)
    if rule == "linear":
        return ratio
    raise ValueError(f"unknown lr_scaling {rule!r}; choose none, sqrt or linear")

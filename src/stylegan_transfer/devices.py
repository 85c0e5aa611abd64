"""The one rule for choosing a device when the user says `auto`: CUDA, else Apple MPS, else the CPU."""

from __future__ import annotations

import torch


def pick_device(name: str | torch.device | None = "auto") -> torch.device:
    """`auto` (or None): CUDA if available, else MPS, else CPU; any other name is taken as given."""
    if name is not None and str(name) != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")

"""The layers generators and discriminators share: the normalisation choice and the fixed anti-aliasing filters.

Plain `nn.Module`s and constructors, no learned resampling; `networks` (generators) and `discriminators` build
on them.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Norm = Literal["instance", "batch", "none"]


def norm_layer(norm: Norm) -> type[nn.Module] | functools.partial:
    """Return a constructor `f(num_features) -> nn.Module` for the named normalisation."""
    if norm == "instance":
        # Paper setting: no learned affine parameters, no running statistics.
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm == "none":
        return lambda _num_features: nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; choose instance, batch or none")


def uses_bias(norm: Norm) -> bool:
    """Whether a convolution followed by `norm` needs its own bias."""
    # Batch norm has its own affine shift, so the preceding conv needs no bias (as in the reference code).
    return norm != "batch"


# ----------------------------------------------------------------------------- anti-aliased resampling
def binomial_filter(size: int) -> torch.Tensor:
    """(size, size) low-pass kernel summing to 1: the outer product of a binomial row with itself
    ([1, 2, 1] for size 3, [1, 3, 3, 1] for size 4)."""
    row = torch.tensor([math.comb(size - 1, k) for k in range(size)], dtype=torch.float32)
    kernel = row[:, None] * row[None, :]
    return kernel / kernel.sum()


class BlurPool2d(nn.Module):
    """Anti-aliased stride-2 downsampling (Zhang 2019, "Making convolutional networks shift-invariant again"):
    every channel is low-pass filtered with [1, 2, 1]⊗[1, 2, 1] / 16 (reflect padding by 1), then every second
    row and column is kept. (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2)). The filter is fixed, not learned, and
    is no part of the state dict."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        kernel = binomial_filter(3)
        self.register_buffer("kernel", kernel.expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(padded, self.kernel.to(x.dtype), stride=2, groups=x.shape[1])


class BlurUpsample2d(nn.Module):
    """Anti-aliased x2 upsampling (the CUT code's upsampler): zeros inserted between the pixels (a stride-2
    transposed convolution), then the fixed low-pass [1, 3, 3, 1]⊗[1, 3, 3, 1] / 64 scaled by 4 (= stride², so
    that a constant image stays constant), edges replicated. (B, C, H, W) -> (B, C, 2H, 2W). This filter makes it
    the same operation as bilinear resizing with align_corners=False; no learned weights, no checkerboard."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        kernel = binomial_filter(4) * 4
        self.register_buffer("kernel", kernel.expand(channels, 1, 4, 4).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate")  # (B, C, H + 2, W + 2)
        y = F.conv_transpose2d(padded, self.kernel.to(x.dtype), stride=2, padding=2, groups=x.shape[1])
        return y[:, :, 1:-1, 1:-1]  # (B, C, 2H, 2W): the padding's own outputs cut off

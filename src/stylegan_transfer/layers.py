"""The layers generators and discriminators share: the normalisation choice, the fixed anti-aliasing filters and
the resize-then-convolve up-sampler.

Plain `nn.Module`s and constructors; `networks` (generators) and `discriminators` build on them.
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


# ----------------------------------------------------------------------------- resize-then-convolve
# Which 3x3 taps each output phase's 2x2 taps sum, along one axis: PHASE_TAPS[phase, tap, k]. Even output rows
# 2a see up-sampled rows 2a-1, 2a, 2a+1 = input rows a-1, a, a (taps w0 | w1 + w2); odd rows 2a+1 see 2a, 2a+1,
# 2a+2 = input rows a, a, a+1 (taps w0 + w1 | w2).
PHASE_TAPS = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])


class ResizeConv2d(nn.Conv2d):
    """Nearest x2 up-sampling, reflect padding by 1, then this 3x3 convolution: the same function, parameters and
    state dict as `Upsample(scale_factor=2) -> ReflectionPad2d(1) -> Conv2d(in, out, 3)`, computed without
    building the up-sampled image. (B, in, H, W) -> (B, out, 2H, 2W).

    Invariant (why it is the same function): the reflect-padded up-sampled image is the up-sampling of the
    input padded by replicating its edges, so each of the four output phases (row parity, column parity) is a
    2x2 convolution of that padded input whose taps are sums of the 3x3 taps (`PHASE_TAPS`). One convolution with
    the four phases' kernels as 4·out channels, then interleaving, costs 16 instead of 36 multiply-adds per input
    pixel and channel pair; outputs and gradients match the three-layer form to float rounding (tests hold it).
    """

    def __init__(self, in_channels: int, out_channels: int, *, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 3, bias=bias)
        self.register_buffer("phase_taps", PHASE_TAPS.clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in, H, W)
        b, _, h, w = x.shape
        out = self.out_channels
        taps = self.phase_taps.to(self.weight.dtype)
        # (row phase, column phase, out, in, 2, 2) -> (4·out, in, 2, 2), phases outermost
        kernels = torch.einsum("ptk,qsl,oikl->pqoits", taps, taps, self.weight).reshape(4 * out, -1, 2, 2)
        bias = None if self.bias is None else self.bias.repeat(4)
        y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels, bias)  # (B, 4·out, H + 1, W + 1)
        y = y.view(b, 2, 2, out, h + 1, w + 1)
        # phase (p, q) holds output pixels (2a + p, 2b + q) at y[:, p, q, :, a + p, b + q]
        cut = (slice(None, -1), slice(1, None))  # phase 0 drops the last row/column, phase 1 the first
        phases = torch.stack([y[:, p, q, :, cut[p], cut[q]] for p in (0, 1) for q in (0, 1)], dim=2)
        # (B, out, 4, H, W) -> (B, out·4, H, W), phases innermost -> (B, out, 2H, 2W)
        return F.pixel_shuffle(phases.flatten(1, 2), 2)

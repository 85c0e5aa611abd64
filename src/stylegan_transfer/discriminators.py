"""PatchGAN discriminators (the paper's 70x70 one and the 1x1 per-pixel one) and their registry.

`DISCRIMINATORS` is the explicit registry that configurations name (`arch`) to build a discriminator from typed
keyword arguments; nothing here knows about Lightning or configuration files.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from stylegan_transfer.layers import BlurPool2d, Norm, norm_layer, uses_bias


class PatchDiscriminator(nn.Module):
    """PatchGAN: classifies overlapping patches; `n_layers=3` gives the paper's 70x70 receptive field.

    antialias: each stride-2 conv becomes a stride-1 conv → (norm →) LeakyReLU → `BlurPool2d` (the CUT code's
    discriminator). spectral_norm: every conv weight divided by its largest singular value (Miyato et al.
    2018), estimated by one power iteration per training forward; it needs `norm="none"`. Then D is a chain of
    convolutions with bounded weights and 1-Lipschitz LeakyReLUs (and blur-pools), so its Lipschitz constant is
    bounded. A normalisation layer divides activations by their own statistics, which undoes that bound (the
    output can change without limit as an input's variance goes to 0), so spectral norm with instance or batch
    norm raises a ValueError rather than silently replacing the norm: the configuration says what is built.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        channels: int = 64,
        n_layers: int = 3,
        norm: Norm = "instance",
        antialias: bool = False,
        spectral_norm: bool = False,
    ):
        super().__init__()
        if spectral_norm and norm != "none":
            raise ValueError(
                f"spectral_norm=True needs norm='none', not norm={norm!r}: a normalisation layer cancels the "
                "Lipschitz bound spectral norm gives the discriminator (set discriminator norm to none)"
            )
        make_norm, bias = norm_layer(norm), uses_bias(norm)

        def conv(in_ch: int, out_ch: int, *, downsample: bool, bias: bool = True) -> nn.Module:
            stride = 2 if downsample and not antialias else 1
            layer = nn.Conv2d(in_ch, out_ch, 4, stride=stride, padding=1, bias=bias)
            return _spectral_norm(layer) if spectral_norm else layer

        def blur(width: int, downsample: bool) -> list[nn.Module]:
            return [BlurPool2d(width)] if downsample and antialias else []

        layers: list[nn.Module] = [
            conv(in_channels, channels, downsample=True),
            nn.LeakyReLU(0.2, True),
            *blur(channels, True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            downsample = n < n_layers
            layers += [
                conv(channels * prev, channels * mult, downsample=downsample, bias=bias),
                make_norm(channels * mult),
                nn.LeakyReLU(0.2, True),
                *blur(channels * mult, downsample),
            ]
        layers.append(conv(channels * mult, 1, downsample=False))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 1, H', W') logits
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1x1 PatchGAN: classifies every pixel independently."""

    def __init__(self, *, in_channels: int = 3, channels: int = 64, norm: Norm = "instance"):
        super().__init__()
        make_norm, bias = norm_layer(norm), uses_bias(norm)
        self.model = nn.Sequential(
            nn.Conv2d(in_channels, channels, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(channels, channels * 2, 1, bias=bias),
            make_norm(channels * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(channels * 2, 1, 1, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 1, H, W) logits
        return self.model(x)


DISCRIMINATORS: dict[str, type[nn.Module]] = {"patch": PatchDiscriminator, "pixel": PixelDiscriminator}


def build_discriminator(arch: str, **kwargs) -> nn.Module:
    """Build a discriminator from the registry, e.g. `build_discriminator("patch", channels=64, n_layers=3)`."""
    if arch not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator architecture {arch!r}; known: {sorted(DISCRIMINATORS)}")
    return DISCRIMINATORS[arch](**kwargs)

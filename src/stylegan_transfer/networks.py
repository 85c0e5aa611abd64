"""Generators of the CycleGAN family as plain `nn.Module`s, their registry, weight initialisation and padding.

Defaults reproduce the CycleGAN paper (Zhu et al. 2017): ResNet-9 generator with 64 base channels,
instance norm, reflection padding (the paper's 70x70 PatchGAN discriminator lives in `discriminators`).
Nothing here knows about Lightning or configuration files; every network is built from typed
keyword arguments, and `GENERATORS` is the explicit registry that exports use to rebuild a generator from its
JSON constructor arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from stylegan_transfer.layers import BlurPool2d, BlurUpsample2d, Norm, ResizeConv2d, norm_layer, uses_bias

Init = Literal["normal", "xavier", "kaiming", "orthogonal"]
Upsample = Literal["transpose", "resize", "blur"]


class ResnetBlock(nn.Module):
    def __init__(self, *, channels: int, norm: Norm, dropout: bool) -> None:
        super().__init__()
        make_norm, bias = norm_layer(norm), uses_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            make_norm(channels),
            nn.ReLU(inplace=True),
        ]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), make_norm(channels)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _upsample(in_ch: int, out_ch: int, *, mode: Upsample, bias: bool) -> list[nn.Module]:
    if mode == "transpose":
        return [nn.ConvTranspose2d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=1, bias=bias)]
    if mode == "resize":
        # Resize then convolve: avoids the checkerboard artefacts of strided transposed convolutions
        # (Odena et al. 2016, "Deconvolution and Checkerboard Artifacts"). Computed in one layer (`ResizeConv2d`);
        # the two empty slots keep the indices, and so the state-dict keys, of the three-layer form
        # (Upsample, ReflectionPad2d, Conv2d) that earlier exports and checkpoints were saved with.
        return [nn.Identity(), nn.Identity(), ResizeConv2d(in_ch, out_ch, bias=bias)]
    if mode == "blur":
        # Fixed low-pass upsampling, then a stride-1 conv (the CUT code's generator, Zhang 2019).
        return [BlurUpsample2d(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias)]
    raise ValueError(f"unknown upsample mode {mode!r}; choose transpose, resize or blur")


class ResnetGenerator(nn.Module):
    """Encoder (2 stride-2 convs) + residual blocks + decoder; input H and W must be multiples of 4.

    upsample: transpose (paper: stride-2 transposed convs), resize (nearest x2 + conv) or blur (fixed low-pass
    x2, `BlurUpsample2d`, + conv). antialias: each stride-2 conv becomes a stride-1 conv → norm → ReLU →
    `BlurPool2d` (Zhang 2019). `antialias=True, upsample="blur"` is the generator of the CUT code.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        channels: int = 64,
        n_blocks: int = 9,
        norm: Norm = "instance",
        upsample: Upsample = "transpose",
        dropout: bool = False,
        antialias: bool = False,
    ) -> None:
        super().__init__()
        make_norm, bias = norm_layer(norm), uses_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, channels, 7, bias=bias),
            make_norm(channels),
            nn.ReLU(inplace=True),
        ]
        width = channels
        for _ in range(2):  # downsample x4 overall
            layers += [
                nn.Conv2d(width, width * 2, 3, stride=1 if antialias else 2, padding=1, bias=bias),
                make_norm(width * 2),
                nn.ReLU(inplace=True),
            ]
            if antialias:
                layers.append(BlurPool2d(width * 2))
            width *= 2
        layers += [ResnetBlock(channels=width, norm=norm, dropout=dropout) for _ in range(n_blocks)]
        for _ in range(2):
            layers += [*_upsample(width, width // 2, mode=upsample, bias=bias), make_norm(width // 2)]
            layers.append(nn.ReLU(inplace=True))
            width //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [-1, 1]
        return self.model(x)

    # ------------------------------------------------------------------------- encoder features (CUT)
    def encoder_layers(self) -> list[int]:
        """Indices into `self.model` whose outputs PatchNCE compares, CUT's choice by meaning: the padded
        input, the outputs of the two downsampling convolutions (before their norm), the first residual block
        and the middle one (block n_blocks // 2 + 1). With `antialias` and 9 blocks these are CUT's own indices
        [0, 4, 8, 12, 16]; without `antialias` they are [0, 4, 7, 10, 14]."""
        blocks = [i for i, m in enumerate(self.model) if isinstance(m, ResnetBlock)]
        first_block = blocks[0] if blocks else len(self.model)
        convs = [i for i, m in enumerate(self.model[:first_block]) if isinstance(m, nn.Conv2d)][1:]
        chosen = [0, *convs]
        if blocks:
            chosen += [blocks[0], blocks[len(blocks) // 2]]
        return sorted(set(chosen))

    def encoder_channels(self, layers: Sequence[int]) -> list[int]:
        """Channel count of the output of each of `layers` (for building a head on top of them)."""
        widths, width = [], self.model[1].in_channels
        for module in self.model:
            width = module.out_channels if isinstance(module, nn.Conv2d | nn.ConvTranspose2d) else width
            widths.append(width)
        return [widths[i] for i in layers]

    def encode(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """The outputs of `self.model[i]` for i in `layers` (ascending), running only as far as needed."""
        wanted, found = set(layers), {}
        for index, module in enumerate(self.model[: max(layers) + 1]):
            x = module(x)
            if index in wanted:
                found[index] = x
        return [found[i] for i in layers]


class PatchSampleMLP(nn.Module):
    """CUT's projection head for PatchNCE (Park et al. 2020): per feature layer, the same random positions
    are sampled in every image, each position's feature vector goes through Linear → ReLU → Linear to
    `channels` and is L2-normalised. Built eagerly from the layers' channel counts."""

    def __init__(self, *, in_channels: Sequence[int], channels: int = 256) -> None:
        super().__init__()
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(c, channels), nn.ReLU(), nn.Linear(channels, channels))
            for c in in_channels
        )

    def forward(
        self,
        features: Sequence[torch.Tensor],  # per layer (B, C_l, H_l, W_l)
        num_patches: int,
        patch_ids: Sequence[torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Returns per layer (B, N, channels) unit vectors and the sampled flat positions (N,), N = min(
        num_patches, H_l·W_l). Pass `patch_ids` to sample the same positions again (for the other image)."""
        samples, ids = [], []
        for layer, (feat, mlp) in enumerate(zip(features, self.mlps, strict=True)):
            b, c, h, w = feat.shape
            flat = feat.permute(0, 2, 3, 1).reshape(b, h * w, c)  # (B, H·W, C)
            if patch_ids is None:
                index = torch.randperm(h * w, generator=generator)[:num_patches].to(feat.device)
            else:
                index = patch_ids[layer]
            projected = mlp(flat[:, index])  # (B, N, channels)
            samples.append(F.normalize(projected, dim=-1, eps=1e-7))
            ids.append(index)
        return samples, ids


class _UnetLevel(nn.Module):
    """One level of the U-Net: down, (inner levels), up, with a skip connection around it."""

    def __init__(
        self,
        *,
        outer: int,
        inner: int,
        in_channels: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        norm: Norm = "batch",
        dropout: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        make_norm, bias = norm_layer(norm), uses_bias(norm)
        in_channels = outer if in_channels is None else in_channels
        down_conv = nn.Conv2d(in_channels, inner, 4, stride=2, padding=1, bias=bias)
        if outermost:
            up = [nn.ReLU(True), nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1), nn.Tanh()]
            layers = [down_conv, submodule, *up]
        elif submodule is None:  # innermost
            up = [nn.ReLU(True), nn.ConvTranspose2d(inner, outer, 4, stride=2, padding=1, bias=bias)]
            layers = [nn.LeakyReLU(0.2, True), down_conv, *up, make_norm(outer)]
        else:
            up = [nn.ReLU(True), nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1, bias=bias)]
            layers = [nn.LeakyReLU(0.2, True), down_conv, make_norm(inner), submodule, *up, make_norm(outer)]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], dim=1)


class UnetGenerator(nn.Module):
    """U-Net with `num_downs` stride-2 levels: 7 for 128x128 inputs, 8 for 256x256 (pix2pix)."""

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        channels: int = 64,
        num_downs: int = 8,
        norm: Norm = "batch",
        dropout: bool = False,
    ) -> None:
        super().__init__()
        if num_downs < 5:
            raise ValueError("UnetGenerator needs num_downs >= 5")
        c = channels
        level = _UnetLevel(outer=c * 8, inner=c * 8, norm=norm)
        for _ in range(num_downs - 5):
            level = _UnetLevel(outer=c * 8, inner=c * 8, submodule=level, norm=norm, dropout=dropout)
        for mult in (4, 2, 1):
            level = _UnetLevel(outer=c * mult, inner=c * mult * 2, submodule=level, norm=norm)
        self.model = _UnetLevel(
            outer=out_channels, inner=c, in_channels=in_channels, submodule=level, outermost=True, norm=norm
        )
        self.num_downs = num_downs

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W), H and W multiples of 2**num_downs
        return self.model(x)


class JohnsonGenerator(nn.Module):
    """Feed-forward style network of Johnson et al. 2016 with instance norm (Ulyanov et al. 2016).

    9x9 conv, two stride-2 3x3 convs, `n_blocks` residual blocks, two resize-then-conv upsamplings (no
    checkerboard), 9x9 conv, tanh to [-1, 1]. Widths channels, 2·channels, 4·channels (paper: 32, 64, 128).
    Input H and W must be multiples of 4, like `ResnetGenerator`.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        channels: int = 32,
        n_blocks: int = 5,
        norm: Norm = "instance",
    ) -> None:
        super().__init__()
        make_norm, bias = norm_layer(norm), uses_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(4),
            nn.Conv2d(in_channels, channels, 9, bias=bias),
            make_norm(channels),
            nn.ReLU(inplace=True),
        ]
        width = channels
        for _ in range(2):
            layers += [
                nn.ReflectionPad2d(1),
                nn.Conv2d(width, width * 2, 3, stride=2, bias=bias),
                make_norm(width * 2),
                nn.ReLU(inplace=True),
            ]
            width *= 2
        layers += [ResnetBlock(channels=width, norm=norm, dropout=False) for _ in range(n_blocks)]
        for _ in range(2):
            layers += [*_upsample(width, width // 2, mode="resize", bias=bias), make_norm(width // 2)]
            layers.append(nn.ReLU(inplace=True))
            width //= 2
        layers += [nn.ReflectionPad2d(4), nn.Conv2d(width, out_channels, 9), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [-1, 1]
        return self.model(x)


GENERATORS: dict[str, type[nn.Module]] = {
    "resnet": ResnetGenerator,
    "unet": UnetGenerator,
    "johnson": JohnsonGenerator,
}


def build_generator(arch: str, **kwargs) -> nn.Module:
    """Build a generator from the registry, e.g. `build_generator("resnet", channels=64, n_blocks=9)`."""
    if arch not in GENERATORS:
        raise ValueError(f"unknown generator architecture {arch!r}; known: {sorted(GENERATORS)}")
    return GENERATORS[arch](**kwargs)


@torch.no_grad()
def init_weights(net: nn.Module, *, init_type: Init = "normal", gain: float = 0.02) -> nn.Module:
    """Initialise conv/linear weights (and batch-norm scales) the way the CycleGAN reference does.

    A spectrally normalised weight is initialised as a plain one and normalised again afterwards (fresh power
    iterations for the new weight).
    """
    for module in list(net.modules()):
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            normalised = parametrize.is_parametrized(module, "weight")
            if normalised:
                kinds = [type(p).__name__ for p in module.parametrizations.weight]
                if kinds != ["_SpectralNorm"]:
                    raise ValueError(f"init_weights knows spectral norm only, not {kinds}")
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
            if init_type == "normal":
                nn.init.normal_(module.weight, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(module.weight, gain=gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(module.weight, a=0, mode="fan_in")
            elif init_type == "orthogonal":
                nn.init.orthogonal_(module.weight, gain=gain)
            else:
                raise ValueError(
                    f"unknown init_type {init_type!r}; choose normal, xavier, kaiming or orthogonal"
                )
            if module.bias is not None:
                nn.init.zeros_(module.bias)
            if normalised:
                _spectral_norm(module)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, gain)
            nn.init.zeros_(module.bias)
    return net


# ----------------------------------------------------------------------------- any input size
PAD_MODE = "replicate"  # the one border mode for padding images to a size multiple (recorded in exports)


def size_multiple(arch: str, kwargs: dict) -> int:
    """Input height and width must be multiples of this for the generator `arch` built with `kwargs`."""
    if arch == "unet":
        return 2 ** int(kwargs.get("num_downs", 8))
    return 4


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (..., H, W) at the bottom and right, repeating the edge pixels, to multiples of `multiple`."""
    pad_h, pad_w = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    if not pad_h and not pad_w:
        return x
    batched = x if x.dim() == 4 else x.unsqueeze(0)  # F.pad's replicate mode wants (B, C, H, W)
    padded = nn.functional.pad(batched, (0, pad_w, 0, pad_h), mode=PAD_MODE)
    return padded if x.dim() == 4 else padded.squeeze(0)


class PaddedGenerator(nn.Module):
    """A generator that takes any H and W: pads to `multiple` (see `pad_to_multiple`) and crops back.

    The crop uses `index_select` rather than slicing so that `torch.export` keeps H and W fully dynamic
    (a slice up to the padded size would specialise on whether padding happened).
    """

    def __init__(self, generator: nn.Module, multiple: int) -> None:
        super().__init__()
        self.generator = generator
        self.multiple = int(multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [-1, 1]
        height, width = x.shape[-2], x.shape[-1]
        pad_h = (self.multiple - height % self.multiple) % self.multiple
        pad_w = (self.multiple - width % self.multiple) % self.multiple
        padded = nn.functional.pad(x, (0, pad_w, 0, pad_h), mode=PAD_MODE)  # (B, C, H', W')
        y = self.generator(padded)  # (B, C, H', W')
        rows = torch.arange(height, device=x.device)
        cols = torch.arange(width, device=x.device)
        return y.index_select(2, rows).index_select(3, cols)  # (B, C, H, W)

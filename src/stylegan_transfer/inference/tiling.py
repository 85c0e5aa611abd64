"""Translate images of any size in overlapping tiles with results consistent across tile borders.

Instance normalisation would otherwise normalise every tile with its own statistics and make neighbouring
tiles visibly inconsistent, so the statistics of every InstanceNorm layer are first recorded on one pass over
a downscaled copy of the whole image and then used, fixed, for every tile; tiles sit on the network's stride
grid and are blended with a raised-cosine window. The same held statistics keep video frames consistent.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stylegan_transfer.inference.generator_file import generator_multiple
from stylegan_transfer.networks import PaddedGenerator

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Smaller inputs are padded to this side first: two stride-2 steps must leave at least 2×2 for the
# residual blocks' reflection padding and instance norm (a 1×1 photo would otherwise fail deep inside).
MIN_SIDE = 8


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision on accelerators; a no-op for fp32 and on the CPU."""
    if dtype == torch.float32 or device.type == "cpu":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# ----------------------------------------------------------------------------- instance-norm statistics
def _instance_norms(generator: nn.Module) -> list[nn.InstanceNorm2d]:
    return [m for m in generator.modules() if isinstance(m, nn.InstanceNorm2d)]


@torch.no_grad()
def record_instance_norm_stats(
    generator: nn.Module, x: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Run `generator` on `x` (1, C, H, W) and return each InstanceNorm layer's (mean, var) per channel."""
    stats: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(_module, inputs, _output):
        features = inputs[0].float()  # (1, C, H, W)
        var, mean = torch.var_mean(features, dim=(2, 3), unbiased=False)  # (1, C) each
        stats.append((mean.cpu(), var.cpu()))

    handles = [m.register_forward_hook(hook) for m in _instance_norms(generator)]
    try:
        PaddedGenerator(generator, generator_multiple(generator))(x)
    finally:
        for handle in handles:
            handle.remove()
    return stats


@contextlib.contextmanager
def fixed_instance_norm_stats(
    generator: nn.Module, stats: Sequence[tuple[torch.Tensor, torch.Tensor]]
) -> Iterator[None]:
    """Within the block, every InstanceNorm layer normalises with the given (mean, var), not its input's."""
    norms = _instance_norms(generator)
    if len(norms) != len(stats):
        raise ValueError(
            f"got statistics for {len(stats)} InstanceNorm layers, the generator has {len(norms)}"
        )

    def fixed_forward(module: nn.InstanceNorm2d, mean: torch.Tensor, var: torch.Tensor):
        def forward(x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
            m = mean.to(x.device, torch.float32)[:, :, None, None]  # (1, C, 1, 1)
            v = var.to(x.device, torch.float32)[:, :, None, None]
            y = (x.float() - m) * torch.rsqrt(v + module.eps)
            if module.affine:
                y = y * module.weight[None, :, None, None] + module.bias[None, :, None, None]
            return y.to(x.dtype)

        return forward

    for module, (mean, var) in zip(norms, stats, strict=True):
        module.forward = fixed_forward(module, mean, var)
    try:
        yield
    finally:
        for module in norms:
            del module.forward  # back to the class's forward


# ----------------------------------------------------------------------------- tiling
def _spans(length: int, tile: int, overlap: int, multiple: int) -> list[tuple[int, int]]:
    """(start, size) of tiles along one axis. Starts are multiples of `multiple` so that every tile sits
    on the same stride grid as the whole image (a strided network is not shift-equivariant)."""
    if length <= tile:
        return [(0, length)]
    step = max(multiple, (tile - overlap) // multiple * multiple)
    last = (length - tile) // multiple * multiple
    return [(start, tile) for start in range(0, last, step)] + [(last, length - last)]


def _ramp(length: int, overlap: int, *, start_edge: bool, end_edge: bool) -> torch.Tensor:
    """1-D blending weights of one tile. At an edge shared with a neighbour, the outer quarter of the
    overlap gets weight 0 (it sees the tile border through the receptive field), the middle half a
    raised-cosine ramp (which sums to 1 with the neighbour's), the rest 1."""
    weights = torch.ones(length, dtype=torch.float32)
    margin, ramp_len = overlap // 4, overlap - 2 * (overlap // 4)
    if ramp_len > 0 and length >= 2 * overlap:
        t = (torch.arange(ramp_len, dtype=torch.float32) + 0.5) / ramp_len
        ramp = torch.cat([torch.zeros(margin), 0.5 - 0.5 * torch.cos(math.pi * t)])  # (margin + ramp_len,)
        if not start_edge:
            weights[: len(ramp)] = ramp
        if not end_edge:
            weights[length - len(ramp) :] = ramp.flip(0)
    return weights


@dataclass(frozen=True)
class TileOptions:
    tile: int = 512  # side of a tile in pixels; 0: one untiled pass
    overlap: int = 128
    consistent: bool = True  # fixed instance-norm statistics from a downscaled pass
    stats_size: int = 1024  # longest side of the copy the statistics are computed on

    @property
    def tiled(self) -> bool:
        return self.tile > 0


NO_TILES = TileOptions(tile=0)


# ----------------------------------------------------------------------------- the one tiling rule
CPU_UNTILED_BUDGET = 1 << 30  # bytes of activations an untiled pass may take on the CPU (or MPS)
GPU_FREE_FRACTION = 0.5  # ... and on a GPU, this fraction of its free memory


@dataclass(frozen=True)
class AutoTiling:
    """The automatic rule (what `tile=None` means everywhere): tiles of `options` when one untiled pass would
    need more memory than the device's budget, or when the long side exceeds `above` (a caller's own limit,
    such as the web app's)."""

    options: TileOptions = TileOptions()
    above: int | None = None


Tiling = int | TileOptions | AutoTiling | None  # a request: None automatic, 0 never, N tiles of N pixels


def bytes_per_pixel(generator: nn.Module) -> int:
    """Rough peak bytes per input pixel of an untiled float32 pass: measured ≈ 13 per channel of the
    full-resolution layers + 60 (see docs/benchmarks.md), rounded up to 16 per channel + 64."""
    first = next((m for m in generator.modules() if isinstance(m, nn.Conv2d)), None)
    channels = first.out_channels if first is not None else 64
    return 16 * channels + 64


def untiled_budget(device: torch.device) -> int:
    """Bytes one untiled pass may take on `device`."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * GPU_FREE_FRACTION)
    return CPU_UNTILED_BUDGET


def plan_tiles(
    generator: nn.Module, shape: Sequence[int], device: torch.device, tile: Tiling = None
) -> TileOptions:
    """How a pass over a batch of `shape` (B, C, H, W) runs: the one tiling rule every caller (images, batches,
    video frames, the web app) goes through. `tile`: None (or an `AutoTiling`) decides by memory, 0 never tiles,
    N tiles at N pixels, a TileOptions is used as given. The plan is a TileOptions; `NO_TILES` (tile 0) is one
    untiled pass, as is any image that fits in one tile. A plan passed back as `tile` plans itself again."""
    _, _, height, width = shape
    if tile is None:
        tile = AutoTiling()
    if isinstance(tile, bool) or not isinstance(tile, int | TileOptions | AutoTiling):
        raise TypeError(f"tile must be None, an int, TileOptions or AutoTiling, not {tile!r}")
    if isinstance(tile, int):
        if tile < 0:
            raise ValueError(f"tile must be 0 (never tile) or a size in pixels, got {tile}")
        tile = TileOptions(tile=tile)
    if isinstance(tile, AutoTiling):
        options = tile.options
        above = tile.above is not None and max(height, width) > tile.above
        need = shape[0] * height * width * bytes_per_pixel(generator)
        if not (above or need > untiled_budget(device)):
            return NO_TILES
        tile = options
    return tile if tile.tiled and max(height, width) > tile.tile else NO_TILES


@torch.no_grad()
def translate_tiled(
    generator: nn.Module,
    x: torch.Tensor,
    options: TileOptions,
    device: torch.device,
    dtype: torch.dtype,
    progress: bool = False,
) -> torch.Tensor:
    _, _, height, width = x.shape  # x: (1, 3, H, W) on the CPU
    multiple = generator_multiple(generator)
    tile = max(multiple, options.tile // multiple * multiple)
    overlap = min(max(0, options.overlap), tile // 2)
    model = PaddedGenerator(generator, multiple)
    context: contextlib.AbstractContextManager = contextlib.nullcontext()
    if options.consistent and _instance_norms(generator):
        scale = min(1.0, options.stats_size / max(height, width))
        small = x
        if scale < 1.0:  # no side below MIN_SIDE: a 20000x20 strip's copy is stretched, not collapsed
            size = (max(MIN_SIDE, round(height * scale)), max(MIN_SIDE, round(width * scale)))
            small = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        with autocast(device, dtype):
            stats = record_instance_norm_stats(generator, small.to(device))
        del small
        context = fixed_instance_norm_stats(generator, stats)
    out = torch.zeros(1, 3, height, width, dtype=torch.float32)  # (1, 3, H, W) weighted sum
    weight = torch.zeros(1, 1, height, width, dtype=torch.float32)  # (1, 1, H, W)
    ys, xs = _spans(height, tile, overlap, multiple), _spans(width, tile, overlap, multiple)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(ys) * len(xs), desc="tiles", leave=False, unit="tile")
    with context:
        for y0, th in ys:
            wy = _ramp(th, overlap, start_edge=y0 == 0, end_edge=y0 + th >= height)
            for x0, tw in xs:
                wx = _ramp(tw, overlap, start_edge=x0 == 0, end_edge=x0 + tw >= width)
                piece = x[:, :, y0 : y0 + th, x0 : x0 + tw].to(device)  # (1, 3, th, tw)
                with autocast(device, dtype):
                    result = model(piece).float().cpu()  # (1, 3, th, tw)
                window = wy[:, None] * wx[None, :]  # (th, tw)
                out[:, :, y0 : y0 + th, x0 : x0 + tw] += result * window
                weight[:, :, y0 : y0 + th, x0 : x0 + tw] += window
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    return out.div_(weight.clamp_min_(1e-6))

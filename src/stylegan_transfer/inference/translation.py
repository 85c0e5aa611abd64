"""Translate images with a generator: tensors and PIL images of any size, tiled when they would not fit.

    from stylegan_transfer.inference.translation import load, translate
    translate(load("export/g_ab.safetensors"), Image.open("photo.jpg")).save("out.png")

Every image keeps its size and aspect (padded to the generator's size multiple, cropped back). Large
images are translated in overlapping tiles with consistent normalisation (see `tiling`): automatically
(as `tile=512`) when an untiled pass would need more than 1 GiB on the CPU or half the free GPU memory,
or at the size given with `tile=`; `tile=0` never tiles. The `stylegan-translate` command is `translate.py`;
videos are `video.py`. This module imports neither.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from stylegan_transfer.devices import pick_device
from stylegan_transfer.images import to_image, to_tensor
from stylegan_transfer.inference import pretrained
from stylegan_transfer.inference.checkpoint import generator_from_checkpoint
from stylegan_transfer.inference.generator_file import generator_multiple, load_generator
from stylegan_transfer.inference.tiling import (
    MIN_SIDE,
    PRECISIONS,
    Tiling,
    autocast,
    plan_tiles,
    translate_tiled,
)
from stylegan_transfer.networks import PAD_MODE, PaddedGenerator


# ----------------------------------------------------------------------------- public API
class NonFiniteOutputError(RuntimeError):
    """The generator's output holds NaN or infinity: nothing is written."""


@torch.no_grad()
def translate_tensor(
    generator: nn.Module,
    x: torch.Tensor,
    *,
    tile: Tiling = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    progress: bool = False,
) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, 3, H, W) in [-1, 1] on the CPU, any H and W.

    `tile`: None tiles automatically when an untiled pass would not fit in memory, 0 never tiles, N or a
    TileOptions tile at that size (the rule: `tiling.plan_tiles`)."""
    _, _, height, width = x.shape
    if height < MIN_SIDE or width < MIN_SIDE:  # too small for the bottleneck: pad like any border, crop back
        padded = F.pad(x, (0, max(0, MIN_SIDE - width), 0, max(0, MIN_SIDE - height)), mode=PAD_MODE)
        y = translate_tensor(
            generator, padded, tile=tile, device=device, precision=precision, progress=progress
        )
        return y[:, :, :height, :width].contiguous()
    device = pick_device() if device is None else torch.device(device)
    dtype = PRECISIONS[precision]
    generator = generator.to(device).eval()
    options = plan_tiles(generator, x.shape, device, tile)
    if not options.tiled:
        with autocast(device, dtype):
            y = PaddedGenerator(generator, generator_multiple(generator))(x.to(device)).float().cpu()
    else:
        y = torch.cat(
            [
                translate_tiled(generator, x[i : i + 1], options, device, dtype, progress)
                for i in range(len(x))
            ]
        )
    if not bool(torch.isfinite(y).all()):  # would be saved as black or garbage pixels
        raise NonFiniteOutputError(
            "the generator produced NaN or infinite values"
            + (f" at precision {precision} (try --precision fp32)" if precision != "fp32" else "")
            + "; its weights may be damaged (the training diverged?)"
        )
    return y


def translate(
    generator: nn.Module,
    image: Image.Image,
    *,
    tile: Tiling = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> Image.Image:
    """Translate one PIL image; the result has the same size. Huge images are tiled automatically
    (`tile=None`); `tile=N` tiles at N pixels, `tile=0` never tiles."""
    x = to_tensor(image).unsqueeze(0)  # (1, 3, H, W)
    return to_image(translate_tensor(generator, x, tile=tile, device=device, precision=precision))


def load(path: str | Path, *, role: str = "g_ab") -> nn.Module:
    """A generator from a .safetensors export, straight from a training .ckpt (`role` g_ab or g_ba), or a
    pretrained model name such as `style_vangogh` (downloaded and converted on first use)."""
    if Path(path).suffix == ".ckpt":
        return generator_from_checkpoint(Path(path), role=role)
    return load_generator(pretrained.resolve(path))

"""Reading and writing images, with no Lightning, Hydra or wandb import (the inference CLI uses it too).

`load_rgb` turns anything Pillow opens into 8-bit RGB (EXIF rotation applied, 16-bit scaled rather than
clipped, alpha composited on white, decompression bombs refused); `scan_images` lists a folder's usable
images with one warning line per skipped file.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from stylegan_transfer.atomic import atomic_path

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})

# Images above this many pixels are refused as decompression bombs (Pillow's own default limit).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


class FolderError(OSError):
    """A folder of images cannot be read; the message names it and why."""


_SKIPS_REPORTED: set[str] = set()  # the skip warnings this process already gave


def _skip_once(message: str) -> None:
    """Warn `message` (which names the skipped path) once per process: a run lists its folders several times (the
    check before training, the data module, the evaluation files), and each bad path is named once."""
    if message not in _SKIPS_REPORTED:
        _SKIPS_REPORTED.add(message)
        log.warning(message)


def list_images(
    folder: str | Path, *, recursive: bool = True, extensions: frozenset[str] = IMAGE_EXTENSIONS
) -> list[Path]:
    """Sorted image files under `folder` (by extension, `extensions`; other files are ignored).

    Raises FolderError when `folder` itself cannot be read. Sub-folders that cannot be read, links to a
    folder already listed (symbolic link loops) and broken links are skipped with one warning each per process,
    however many times the folder is listed.
    """
    folder = Path(folder)
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            info = current.stat()
            with os.scandir(current) as handle:
                entries = list(handle)
        except OSError as err:
            if current == folder:
                raise FolderError(f"cannot read folder {folder}: {err.strerror or err}") from None
            _skip_once(f"skipping folder {current}: {err.strerror or err}")
            continue
        key = (info.st_dev, info.st_ino)
        if key in seen:
            _skip_once(f"skipping {current}: it links to a folder already listed (a symbolic link loop?)")
            continue
        seen.add(key)
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir, is_file = entry.is_dir(), entry.is_file()
            except OSError:
                is_dir = is_file = False
            if is_dir:
                if recursive:
                    pending.append(path)
            elif is_file:
                if path.suffix.lower() in extensions:
                    found.append(path)
            elif entry.is_symlink() and path.suffix.lower() in extensions:
                _skip_once(f"skipping {path}: a broken symbolic link")
    return sorted(found)


def probe_image(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> str | None:
    """Cheap header-only check: None if `path` looks usable, else the reason it is not.

    Catches empty, unreadable, non-image and oversized (decompression bomb) files without decoding
    pixels; files whose data is damaged further in are caught at load time (see UnpairedDataset).
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with warnings.catch_warnings():  # the explicit max_pixels check below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
    except PermissionError:
        return "permission denied"
    except UnidentifiedImageError:
        return "not an image Pillow can read"
    except Image.DecompressionBombError as err:  # Pillow refuses > 2x its limit before we see the size
        return f"decompression bomb: {err}"
    except Exception as err:  # damaged headers raise many types (OSError, SyntaxError, struct.error ...)
        return f"{type(err).__name__}: {err}"
    if width < 1 or height < 1:
        return f"invalid size {width}x{height}"
    if width * height > max_pixels:
        return f"decompression bomb: {width}x{height} pixels exceeds the limit of {max_pixels}"
    return None


def scan_images(folder: str | Path, *, label: str = "", max_pixels: int = MAX_PIXELS) -> list[Path]:
    """The usable images under `folder`: one warning line per skipped file and a summary count."""
    files = list_images(folder)
    usable = []
    skipped = 0
    for path in files:
        reason = probe_image(path, max_pixels=max_pixels)
        if reason is None:
            usable.append(path)
        else:
            skipped += 1
            log.warning("skipping %s: %s", path, reason)
    if skipped:
        log.warning(
            "%s%s: skipped %d of %d image files, using %d",
            f"domain {label} " if label else "",
            folder,
            skipped,
            len(files),
            len(usable),
        )
    return usable


def load_rgb(path: str | Path, *, draft_size: int | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open any image as 8-bit RGB: EXIF rotation applied, 16-bit scaled (not clipped), alpha on white.

    `draft_size`: let JPEG decoding shrink by 1/2, 1/4 or 1/8 while both sides stay >= draft_size
    (much faster for large photos that are resized down anyway). Images above `max_pixels` are refused.
    """
    with warnings.catch_warnings():  # the explicit max_pixels check below decides
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(path)
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise Image.DecompressionBombError(f"{path}: {width}x{height} pixels exceeds {max_pixels}")
        if draft_size is not None and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
        image.load()  # decode now so truncated files fail here, naming the file
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            array = np.asarray(image, dtype=np.float64)
            top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
            image = Image.fromarray(np.clip(array * (255.0 / top) + 0.5, 0, 255).astype(np.uint8), mode="L")
        elif image.mode == "F":
            array = np.asarray(image, dtype=np.float64)
            image = Image.fromarray(np.clip(array * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
        if image.mode == "P":
            image = image.convert("RGBA")
        if image.mode in ("RGBA", "LA", "PA"):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image)
        return image.convert("RGB")


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> (3, H, W) float32 RGB in [-1, 1]."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    # numpy, not torch ops: small multi-threaded torch kernels are slow in a busy main process
    array = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)  # (3, H, W)
    array /= 127.5
    array -= 1.0
    return torch.from_numpy(array)


def to_image(tensor: torch.Tensor) -> Image.Image:
    """(3, H, W) or (1, 3, H, W) in [-1, 1] -> PIL RGB."""
    tensor = tensor.detach()
    if tensor.dim() == 4:
        tensor = tensor.squeeze(0)
    scaled = tensor.float().clamp(-1, 1)  # a new tensor: the in-place steps below keep memory at one copy
    array = scaled.add_(1).mul_(127.5).round_().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, mode="RGB")


def save_image(image: Image.Image | torch.Tensor, path: str | Path, *, quality: int = 95) -> Path:
    """Write an image (PIL, or a tensor in [-1, 1]) atomically; the format follows the file's suffix."""
    if isinstance(image, torch.Tensor):
        image = to_image(image)
    path = Path(path)
    with atomic_path(path, fsync=False) as tmp:
        if path.suffix.lower() in (".jpg", ".jpeg"):
            image.save(tmp, quality=quality)
        else:
            image.save(tmp)
    return path


def resize_long_side(image: torch.Tensor, long_side: int) -> torch.Tensor:
    """Resize (antialiased bicubic) so the longer side is `long_side`, both sides rounded to multiples of 4."""
    h, w = image.shape[-2:]
    scale = long_side / max(h, w)
    size = (max(4, round(h * scale / 4) * 4), max(4, round(w * scale / 4) * 4))
    if size == (h, w):
        return image
    return F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(-1, 1)

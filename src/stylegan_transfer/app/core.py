"""The web app's work, with no Gradio import: reading uploads, finding generators, translating images and video.

Every refusal is an `AppInputError` whose message is one readable sentence for the page (naming the file
and what to do); the Gradio layer (`app.handlers`) only shows it.
Stylisation lives in `app.stylise`.
"""

from __future__ import annotations

import shutil
import threading
import time
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from stylegan_transfer.app.limits import DEFAULT_MAX_PIXELS, MIN_SIDE, TILE, TILE_ABOVE
from stylegan_transfer.atomic import atomic_path
from stylegan_transfer.images import load_rgb, to_image, to_tensor
from stylegan_transfer.inference.generator_file import ExportError, read_metadata
from stylegan_transfer.inference.pretrained import MODELS, model_path
from stylegan_transfer.inference.tiling import AutoTiling, TileOptions, plan_tiles
from stylegan_transfer.inference.translation import load, translate_tensor
from stylegan_transfer.inference.video import (
    VideoError,
    VideoInfo,
    VideoReport,
    is_video,
    probe_video,
    translate_video,
)


class AppInputError(ValueError):
    """Input the app cannot use; the message is meant for the person in front of the page."""


def megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.3g} megapixels"


# ----------------------------------------------------------------------------- uploads
def read_upload(
    path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = MIN_SIDE
) -> Image.Image:
    """An uploaded file as 8-bit RGB, or `AppInputError` saying in one sentence why not."""
    path = Path(path)
    name = path.name
    try:
        if path.stat().st_size == 0:
            raise AppInputError(f"{name} is empty (0 bytes); upload the picture again.")
        with warnings.catch_warnings():  # our own limit below decides, with a clearer message
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as probe:
                width, height = probe.size
    except AppInputError:
        raise
    except Image.DecompressionBombError as err:  # Pillow refuses > 2× its own limit before we see the size
        raise AppInputError(
            f"{name} has far more pixels than this app accepts (at most {megapixels(max_pixels)}); "
            "it may be a decompression bomb. Downscale it, or start the app with a larger --max-pixels."
        ) from err
    except UnidentifiedImageError as err:
        raise AppInputError(
            f"{name} is not an image this app can read; upload a JPEG, PNG, WebP, TIFF or BMP picture."
        ) from err
    except Exception as err:  # damaged headers raise many types (OSError, SyntaxError, struct.error ...)
        raise AppInputError(f"{name} could not be read ({err}); the file may be damaged.") from err
    if width * height > max_pixels:
        raise AppInputError(
            f"{name} is {width}×{height} pixels ({megapixels(width * height)}); this app accepts at most "
            f"{megapixels(max_pixels)}. Downscale it, or start the app with a larger --max-pixels."
        )
    if min(width, height) < min_side:
        raise AppInputError(
            f"{name} is only {width}×{height} pixels; give a picture at least {min_side} pixels on each side."
        )
    try:
        return load_rgb(path, max_pixels=max_pixels)
    except Exception as err:  # truncated data, unsupported compression ...
        raise AppInputError(
            f"{name} could not be decoded ({err}); the file may be damaged or cut short."
        ) from err


def preview(image: Image.Image, long_side: int = 1024) -> Image.Image:
    """A downscaled copy for showing in the page (huge photos need not travel to the browser)."""
    if max(image.size) <= long_side:
        return image
    copy = image.copy()
    copy.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
    return copy


def output_names(inputs: Sequence[str | Path], suffix: str) -> list[str]:
    """`<stem><suffix>.png` for each input, made unique when two uploads share a name."""
    names: list[str] = []
    taken: set[str] = set()
    for item in inputs:
        stem = Path(item).stem or "image"
        name, n = f"{stem}{suffix}.png", 1
        while name.lower() in taken:
            n += 1
            name = f"{stem}{suffix}_{n}.png"
        taken.add(name.lower())
        names.append(name)
    return names


def zip_files(paths: Sequence[Path], destination: Path) -> Path:
    """One zip archive holding `paths` under their own names (written atomically)."""
    with (
        atomic_path(destination, fsync=False) as tmp,
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive,
    ):
        for path in paths:
            archive.write(path, arcname=path.name)
    return destination


def sweep_old(folder: Path, *, max_age_s: float) -> None:
    """Remove the sub-folders of `folder` older than `max_age_s` (finished jobs' results)."""
    if not folder.is_dir():
        return
    now = time.time()
    for child in folder.iterdir():
        try:
            if child.is_dir() and now - child.stat().st_mtime > max_age_s:
                shutil.rmtree(child, ignore_errors=True)
        except FileNotFoundError:
            continue


# ----------------------------------------------------------------------------- generators
@dataclass(frozen=True)
class GeneratorEntry:
    label: str  # what the page shows
    path: Path
    pretrained: bool = False  # an official CycleGAN generator from the cache


def pretrained_generators() -> list[GeneratorEntry]:
    """The official CycleGAN generators already converted into the cache (`stylegan-download model
    NAME` puts them there); the app never downloads during a request."""
    found = []
    for name, model in MODELS.items():
        path = model_path(name)
        try:
            if path.is_file():
                read_metadata(path)
                label = f"{name} (pretrained CycleGAN, {model.source} → {model.target})"
                found.append(GeneratorEntry(label, path, pretrained=True))
        except (ExportError, OSError):
            continue
    return found


def find_generators(folder: str | Path | None) -> tuple[list[GeneratorEntry], list[str]]:
    """Every usable .safetensors generator export under `folder` (recursively), then the cached pretrained
    generators; and a line per unusable file."""
    pretrained = pretrained_generators()
    if folder is None:
        return pretrained, []
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return pretrained, [f"generator folder {folder} does not exist"]
    found, problems = [], []
    for path in sorted(folder.rglob("*.safetensors")):
        try:
            meta = read_metadata(path)
        except ExportError as err:
            problems.append(str(err))
            continue
        relative = path.relative_to(folder).as_posix()
        direction = {"AtoB": "A→B", "BtoA": "B→A"}.get(
            str(meta.get("direction")), str(meta.get("direction", ""))
        )
        found.append(GeneratorEntry(f"{relative} ({meta['arch']}, {direction})", path))
    return found + pretrained, problems


class GeneratorCache:
    """Keeps the last used generator on its device (one at a time, to bound memory); reloads a changed file.

    A load that fails leaves the cache as it was: the generator held before still serves the next request.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._key: tuple[str, float] | None = None
        self._generator: nn.Module | None = None
        self._lock = threading.Lock()

    def get(self, path: Path) -> nn.Module:
        try:
            key = (str(path.resolve()), path.stat().st_mtime)
        except FileNotFoundError as err:
            raise AppInputError(f"generator {path.name} is gone from its folder; press Refresh.") from err
        with self._lock:
            if key == self._key and self._generator is not None:
                return self._generator
            try:
                generator = load(path)  # on the CPU: the device still holds only the cached generator
            except ExportError as err:
                raise AppInputError(str(err)) from err
            except Exception as err:  # anything else a damaged file may raise; the cache stays as it was
                detail = " ".join(str(err).split())[:300] or type(err).__name__
                raise AppInputError(f"generator {path.name} could not be loaded ({detail}).") from err
            self._generator, self._key = None, None  # free the old one before the new one takes the device
            self._generator, self._key = generator.to(self.device).eval(), key
            return self._generator


def translate_image(
    generator: nn.Module,
    image: Image.Image,
    *,
    device: torch.device,
    precision: str = "fp32",
    tile_above: int = TILE_ABOVE,
    tile: int = TILE,
) -> tuple[Image.Image, bool]:
    """The translated image (same size) and whether it went through tiles of `tile` pixels (long side above
    `tile_above`, or too large for the device's memory: `tiling.plan_tiles`)."""
    x = to_tensor(image).unsqueeze(0)  # (1, 3, H, W)
    options = plan_tiles(generator, x.shape, device, app_tiling(tile_above, tile))
    y = translate_tensor(generator, x, tile=options, device=device, precision=precision)
    return to_image(y), options.tiled


def app_tiling(tile_above: int, tile: int) -> AutoTiling:
    """The app's limits as the automatic tiling rule's arguments."""
    return AutoTiling(TileOptions(tile=tile), above=tile_above)


# ----------------------------------------------------------------------------- video
def video_available() -> bool:
    """Whether PyAV (the `[video]` extra) is installed."""
    import importlib.util

    return importlib.util.find_spec("av") is not None


def check_video(
    path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = MIN_SIDE
) -> VideoInfo:
    """An uploaded video's description, or `AppInputError` saying in one sentence why it cannot be used."""
    path = Path(path)
    name = path.name
    if not is_video(path):
        raise AppInputError(
            f"{name} is not a video this app reads; upload an MP4, MOV, MKV, WebM or GIF file."
        )
    try:
        info = probe_video(path)
    except VideoError as err:
        reason = str(err).removeprefix(f"{path}: ")
        raise AppInputError(f"{name} cannot be used as a video ({reason}).") from err
    if info.width * info.height > max_pixels:
        raise AppInputError(
            f"{name} has {info.width}×{info.height} frames ({megapixels(info.width * info.height)}); this app "
            f"accepts at most {megapixels(max_pixels)} per frame. Start the app with a larger --max-pixels."
        )
    if min(info.width, info.height) < min_side:
        raise AppInputError(
            f"{name} is only {info.width}×{info.height} pixels; give a video at least {min_side} pixels on each side."
        )
    return info


def translate_video_file(
    generator: nn.Module,
    source: Path,
    output: Path,
    *,
    size: int | None = None,
    audio: bool = True,
    device: torch.device,
    precision: str = "fp32",
    tile_above: int = TILE_ABOVE,
    tile: int = TILE,
    progress: bool = False,
) -> VideoReport:
    """`inference.video.translate_video` with the app's tiling rule; `VideoError` becomes `AppInputError`."""
    try:
        return translate_video(
            generator,
            source,
            output,
            size=size,
            audio=audio,
            tile=app_tiling(tile_above, tile),
            device=device,
            precision=precision,
            progress=progress,
        )
    except VideoError as err:
        raise AppInputError(
            str(err).replace(f"{source.parent}/", "").replace(f"{output.parent}/", "")
        ) from err

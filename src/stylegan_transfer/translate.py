"""Translate images with an exported generator: Python API and the `stylegan-translate` CLI.

    stylegan-translate --checkpoint export/g_ab.safetensors --input photos/ --output out/

Every image keeps its size and aspect (padded to the generator's size multiple, cropped back). Large
images can be translated in overlapping tiles (`tile=`): instance normalisation would otherwise
normalise every tile with its own statistics and make neighbouring tiles visibly inconsistent, so the
statistics of every InstanceNorm layer are first recorded on one pass over a downscaled copy of the
whole image and then used, fixed, for every tile; tiles are blended with a raised-cosine window.
Imports neither Lightning, Hydra nor wandb.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import nn

from stylegan_transfer.export import ExportError, PaddedGenerator, generator_from_checkpoint, load_generator
from stylegan_transfer.images import load_rgb

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ----------------------------------------------------------------------------- images <-> tensors
def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> (1, 3, H, W) float32 in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).float().div_(127.5).sub_(1.0)


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """(3, H, W) or (1, 3, H, W) in [-1, 1] -> PIL RGB."""
    tensor = tensor.detach().float().squeeze(0).clamp(-1, 1)
    array = (tensor.add(1).mul_(127.5)).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, mode="RGB")


# ----------------------------------------------------------------------------- devices
def pick_device(name: str = "auto") -> torch.device:
    """`auto`: CUDA if available, else Apple MPS, else CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32 or device.type == "cpu":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _multiple(generator: nn.Module) -> int:
    return int(getattr(generator, "export_metadata", {}).get("size_multiple", 4))


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
        PaddedGenerator(generator, _multiple(generator))(x)
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
    tile: int = 512
    overlap: int = 128
    consistent: bool = True  # fixed instance-norm statistics from a downscaled pass
    stats_size: int = 1024  # longest side of the copy the statistics are computed on


@torch.no_grad()
def _translate_tiled(
    generator: nn.Module,
    x: torch.Tensor,
    options: TileOptions,
    device: torch.device,
    dtype: torch.dtype,
    progress: bool = False,
) -> torch.Tensor:
    _, _, height, width = x.shape  # x: (1, 3, H, W) on the CPU
    multiple = _multiple(generator)
    tile = max(multiple, options.tile // multiple * multiple)
    overlap = min(max(0, options.overlap), tile // 2)
    model = PaddedGenerator(generator, multiple)
    context: contextlib.AbstractContextManager = contextlib.nullcontext()
    if options.consistent and _instance_norms(generator):
        scale = min(1.0, options.stats_size / max(height, width))
        small = x
        if scale < 1.0:
            size = (max(multiple, round(height * scale)), max(multiple, round(width * scale)))
            small = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        with _autocast(device, dtype):
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
                with _autocast(device, dtype):
                    result = model(piece).float().cpu()  # (1, 3, th, tw)
                window = wy[:, None] * wx[None, :]  # (th, tw)
                out[:, :, y0 : y0 + th, x0 : x0 + tw] += result * window
                weight[:, :, y0 : y0 + th, x0 : x0 + tw] += window
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    return out.div_(weight.clamp_min_(1e-6))


# ----------------------------------------------------------------------------- public API
@torch.no_grad()
def translate_tensor(
    generator: nn.Module,
    x: torch.Tensor,
    *,
    tile: int | TileOptions | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    progress: bool = False,
) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, 3, H, W) in [-1, 1] on the CPU, any H and W."""
    device = pick_device() if device is None else torch.device(device)
    dtype = PRECISIONS[precision]
    generator = generator.to(device).eval()
    options = TileOptions(tile=tile) if isinstance(tile, int) else tile
    _, _, height, width = x.shape
    if options is None or max(height, width) <= options.tile:
        with _autocast(device, dtype):
            return PaddedGenerator(generator, _multiple(generator))(x.to(device)).float().cpu()
    return torch.cat(
        [_translate_tiled(generator, x[i : i + 1], options, device, dtype, progress) for i in range(len(x))]
    )


def translate(
    generator: nn.Module,
    image: Image.Image,
    *,
    tile: int | TileOptions | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> Image.Image:
    """Translate one PIL image; the result has the same size. `tile=512` bounds memory for huge images."""
    x = image_to_tensor(image.convert("RGB"))  # (1, 3, H, W)
    return tensor_to_image(translate_tensor(generator, x, tile=tile, device=device, precision=precision))


def load(path: str | Path, *, direction: str = "ab") -> nn.Module:
    """A generator from a .safetensors export or straight from a Lightning .ckpt (`direction` ab or ba)."""
    path = Path(path)
    if path.suffix == ".ckpt":
        return generator_from_checkpoint(path, role=f"g_{direction}")
    return load_generator(path)


# ----------------------------------------------------------------------------- CLI
class InputError(ValueError):
    pass


def collect_inputs(inputs: Sequence[str], *, recursive: bool) -> list[tuple[Path, Path]]:
    """(image path, output path relative to the output folder) for files, folders and glob patterns."""
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        if any(ch in item for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True))
            files = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
            if not files:
                raise InputError(f"no image matches the pattern {item!r}")
            found += [(p, Path(p.name)) for p in files]
        elif Path(item).is_dir():
            folder = Path(item)
            pattern = "**/*" if recursive else "*"
            files = sorted(
                p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not files:
                hint = "" if recursive else " (use --recursive to look in sub-folders)"
                raise InputError(f"folder {folder} holds no images{hint}")
            found += [(p, p.relative_to(folder)) for p in files]
        elif Path(item).is_file():
            found.append((Path(item), Path(Path(item).name)))
        else:
            raise InputError(f"input {item} does not exist; give image files, folders or glob patterns")
    return found


def side_by_side(left: Image.Image, right: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", (left.width + right.width, max(left.height, right.height)), (255, 255, 255))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, 0))
    return canvas


def _save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    image.save(tmp, quality=95) if path.suffix.lower() in (".jpg", ".jpeg") else image.save(tmp)
    tmp.replace(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stylegan-translate",
        description="Translate images with a trained generator (safetensors export or Lightning .ckpt).",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help=".safetensors export or .ckpt")
    parser.add_argument("--input", required=True, nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("--output", required=True, type=Path, help="output folder")
    parser.add_argument("--recursive", action="store_true", help="look for images in sub-folders too")
    parser.add_argument("--direction", choices=("ab", "ba"), default="ab", help="for .ckpt inputs only")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass (same size)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:1, mps")
    parser.add_argument(
        "--precision",
        choices=tuple(PRECISIONS),
        default=None,
        help="default: bf16 on CUDA, fp16 on MPS, fp32 on CPU",
    )
    parser.add_argument("--tile", type=int, default=None, help="tile images larger than this many pixels")
    parser.add_argument("--overlap", type=int, default=128, help="tile overlap in pixels (default 128)")
    parser.add_argument(
        "--naive-tiles", action="store_true", help="per-tile normalisation statistics (shows seams)"
    )
    parser.add_argument("--format", choices=("png", "jpg", "same"), default="png", help="output format")
    parser.add_argument("--side-by-side", action="store_true", help="also write <name>_side_by_side.<ext>")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _output_path(out_dir: Path, relative: Path, fmt: str) -> Path:
    suffix = relative.suffix if fmt == "same" else f".{fmt}"
    return out_dir / relative.with_suffix(suffix)


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    args = build_parser().parse_args(argv)

    def fail(message: str) -> int:
        print(f"stylegan-translate: error: {message}", file=sys.stderr)
        return 2

    if args.batch_size < 1:
        return fail("--batch-size must be at least 1")
    if args.tile is not None and args.tile < 16:
        return fail("--tile must be at least 16 pixels (try 512)")
    try:
        device = pick_device(args.device)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:
        return fail(f"device {args.device!r} is not usable here ({err}); try --device cpu")
    precision = args.precision or {"cpu": "fp32", "mps": "fp16"}.get(device.type, "bf16")
    if device.type == "cpu" and precision != "fp32":
        return fail(f"--precision {precision} needs a GPU; use fp32 on the CPU")
    try:
        generator = load(args.checkpoint, direction=args.direction).to(device)
        jobs = collect_inputs(args.input, recursive=args.recursive)
    except (ExportError, InputError) as err:
        return fail(str(err))
    tile = None
    if args.tile is not None:
        tile = TileOptions(tile=args.tile, overlap=args.overlap, consistent=not args.naive_tiles)

    planned: dict[Path, Path] = {}  # output -> input; the same file named twice is translated once
    for src, relative in jobs:
        dst = _output_path(args.output, relative, args.format)
        other = planned.setdefault(dst, src)
        if other.resolve() != src.resolve():
            return fail(
                f"{other} and {src} would both be written to {dst}; translate them in separate runs "
                "(different --output folders) or give their common parent folder with --recursive"
            )
    todo, skipped, failed, written = [], 0, 0, 0
    for dst, src in planned.items():
        if dst.exists() and not args.overwrite:
            skipped += 1
        else:
            todo.append((src, dst))

    def emit(src: Path, dst: Path, image: Image.Image, result: Image.Image) -> None:
        _save(result, dst)
        if args.side_by_side:
            _save(side_by_side(image, result), dst.with_name(f"{dst.stem}_side_by_side{dst.suffix}"))

    bar = tqdm(total=len(todo), unit="img", disable=args.quiet, desc="translate")
    for start in range(0, len(todo), args.batch_size):
        chunk = todo[start : start + args.batch_size]
        loaded: list[tuple[Path, Path, Image.Image]] = []
        for src, dst in chunk:
            try:
                loaded.append((src, dst, load_rgb(src)))
            except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
                failed += 1
                tqdm.write(f"error: {src}: cannot read image ({err}); skipped", file=sys.stderr)
                bar.update(1)
        by_size: dict[tuple[int, int], list[tuple[Path, Path, Image.Image]]] = {}
        for entry in loaded:
            by_size.setdefault(entry[2].size, []).append(entry)
        for group in by_size.values():
            try:
                x = torch.cat([image_to_tensor(image) for _, _, image in group])  # (B, 3, H, W)
                y = translate_tensor(
                    generator, x, tile=tile, device=device, precision=precision, progress=not args.quiet
                )
                for (src, dst, image), out in zip(group, y, strict=True):
                    emit(src, dst, image, tensor_to_image(out))
                    written += 1
            except (RuntimeError, OSError, ValueError) as err:
                failed += len(group)
                names = ", ".join(str(src) for src, _, _ in group)
                tqdm.write(f"error: {names}: {err}; skipped", file=sys.stderr)
            bar.update(len(group))
    bar.close()
    summary = f"{written} written, {skipped} skipped (already exist; --overwrite replaces), {failed} failed"
    print(f"stylegan-translate: {summary} -> {args.output}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

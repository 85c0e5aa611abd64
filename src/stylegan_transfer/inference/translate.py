"""The `stylegan-translate` command: images, folders, globs and videos through a generator (the Python API is
`translation`; videos go to `video.translate_video`).

    stylegan-translate --checkpoint export/g_ab.safetensors --input photos/ --output out/
    stylegan-translate --model style_vangogh photo.jpg --output out/     # a pretrained CycleGAN model

Every image keeps its size and aspect; large images are tiled (`--tile`, see `translation.translate_tensor`).
Videos (mp4, mov, mkv, webm, gif) go to `video.translate_video`: streamed, without flicker, audio kept.
"""

from __future__ import annotations

import argparse
import glob
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from stylegan_transfer.devices import pick_device
from stylegan_transfer.images import (
    IMAGE_EXTENSIONS,
    FolderError,
    list_images,
    load_rgb,
    save_image,
    to_image,
    to_tensor,
)
from stylegan_transfer.inference import pretrained, video
from stylegan_transfer.inference.generator_file import ExportError, load_generator
from stylegan_transfer.inference.tiling import PRECISIONS, TileOptions, Tiling, plan_tiles
from stylegan_transfer.inference.translation import load, translate_tensor


# ----------------------------------------------------------------------------- CLI
class InputError(ValueError):
    pass


def collect_inputs(inputs: Sequence[str], *, recursive: bool) -> list[tuple[Path, Path]]:
    """(image or video path, output path relative to the output folder) for files, folders and globs."""
    media = IMAGE_EXTENSIONS | video.VIDEO_EXTENSIONS
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        if any(ch in item for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True))
            files = [p for p in matches if p.is_file() and p.suffix.lower() in media]
            if not files:
                raise InputError(f"no image or video matches the pattern {item!r}")
            found += [(p, Path(p.name)) for p in files]
        elif Path(item).is_dir():
            folder = Path(item)
            try:
                files = list_images(folder, recursive=recursive, extensions=media)
            except FolderError as err:
                raise InputError(f"{err}; check its permissions") from None
            if not files:
                hint = "" if recursive else " (use --recursive to look in sub-folders)"
                raise InputError(f"folder {folder} holds no images or videos{hint}")
            found += [(p, p.relative_to(folder)) for p in files]
        elif Path(item).is_file():
            found.append((Path(item), Path(Path(item).name)))
        else:
            raise InputError(f"input {item} does not exist; give image files, folders or glob patterns")
    return found


def plan_outputs(
    jobs: Sequence[tuple[Path, Path]], output_for: Callable[[Path, Path], Path]
) -> dict[Path, Path]:
    """output path -> input path, `output_for(input, relative path)` naming each output. The same file named
    twice is translated once; files whose names differ only in their extension (x.jpg, x.png) get it in
    their output name (x_jpg.png, x_png.png)."""
    unique: dict[Path, tuple[Path, Path]] = {}  # resolved input -> (input as given, relative output)
    for src, relative in jobs:
        unique.setdefault(src.resolve(), (src, relative))
    by_output: dict[Path, list[tuple[Path, Path]]] = {}
    for src, relative in unique.values():
        by_output.setdefault(output_for(src, relative), []).append((src, relative))
    planned: dict[Path, Path] = {}
    for dst, sources in by_output.items():
        if len(sources) == 1:
            planned[dst] = sources[0][0]
            continue
        suffixes = [relative.suffix.lower() for _, relative in sources]
        if len(set(suffixes)) < len(suffixes):  # same name in different folders (glob patterns)
            names = " and ".join(str(src) for src, _ in sources[:2])
            raise InputError(
                f"{names} would both be written to {dst}; give their common parent folder (with --recursive, "
                "outputs keep the sub-folders) or translate them into different --output folders"
            )
        tagged_names = []
        for src, relative in sources:
            tagged = relative.with_name(f"{relative.stem}_{relative.suffix[1:]}{relative.suffix}")
            planned[output_for(src, tagged)] = src
            tagged_names.append(output_for(src, tagged).name)
        print(
            f"stylegan-translate: note: {', '.join(relative.name for _, relative in sources)} share a name; "
            f"their outputs keep the extension in the name ({', '.join(tagged_names)})",
            file=sys.stderr,
        )
    if len(planned) != len(unique):
        raise InputError(
            "two inputs would be written to the same output name even with their extension added; "
            "rename them or use different --output folders"
        )
    return planned


def side_by_side(left: Image.Image, right: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", (left.width + right.width, max(left.height, right.height)), (255, 255, 255))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, 0))
    return canvas


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stylegan-translate",
        description="Translate images and videos with a trained generator (safetensors export, training "
        ".ckpt or a pretrained model name).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help=".safetensors export or .ckpt")
    source.add_argument(
        "--model",
        help="pretrained model name, e.g. style_vangogh (`stylegan-download model --list`); "
        "downloaded and converted on first use",
    )
    parser.add_argument("inputs", nargs="*", help="image/video files, folders or globs (or --input)")
    parser.add_argument("--input", nargs="+", default=[], help="image/video files, folders or globs")
    parser.add_argument("--output", required=True, type=Path, help="output folder")
    parser.add_argument("--recursive", action="store_true", help="look for images in sub-folders too")
    parser.add_argument(
        "--role", choices=("g_ab", "g_ba"), default="g_ab", help="which generator of a .ckpt (A→B or B→A)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=4, help="images (same size) or video frames per forward pass"
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:1, mps")
    parser.add_argument(
        "--precision",
        choices=tuple(PRECISIONS),
        default=None,
        help="default: bf16 on CUDA, fp16 on MPS, fp32 on CPU",
    )
    parser.add_argument(
        "--tile",
        type=int,
        default=None,
        help="tile images larger than this many pixels; default: automatically, as --tile 512, when an "
        "untiled pass would need more than 1 GiB on the CPU or half the free GPU memory; 0: never tile",
    )
    parser.add_argument("--overlap", type=int, default=128, help="tile overlap in pixels (default 128)")
    parser.add_argument(
        "--naive-tiles", action="store_true", help="per-tile normalisation statistics (shows seams)"
    )
    parser.add_argument("--format", choices=("png", "jpg", "same"), default="png", help="output format")
    parser.add_argument("--side-by-side", action="store_true", help="also write <name>_side_by_side.<ext>")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    video.add_video_arguments(parser)
    return parser


def _output_path(out_dir: Path, relative: Path, fmt: str) -> Path:
    suffix = relative.suffix if fmt == "same" else f".{fmt}"
    return out_dir / relative.with_suffix(suffix)


# ----------------------------------------------------------------------------- the image loop
Jobs = list[tuple[Path, Path]]  # (input, output path)
Loaded = tuple[Path, Path, Image.Image]  # (input, output path, the input image)


def _load_chunk(chunk: Jobs, bar) -> tuple[list[Loaded], int]:
    """The readable images of `chunk`, and how many could not be read (each named in one line)."""
    from tqdm import tqdm

    loaded: list[Loaded] = []
    failed = 0
    for src, dst in chunk:
        try:
            loaded.append((src, dst, load_rgb(src)))
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
            failed += 1
            tqdm.write(f"error: {src}: cannot read image ({err}); skipped", file=sys.stderr)
            bar.update(1)
    return loaded, failed


def _batches_by_size(
    loaded: list[Loaded], generator: torch.nn.Module, device: torch.device, tile: Tiling
) -> list[list[Loaded]]:
    """Images of the same size batched together; one image per batch where the batch would be tiled (tiling
    one image at a time bounds memory)."""
    by_size: dict[tuple[int, int], list[Loaded]] = {}
    for entry in loaded:
        by_size.setdefault(entry[2].size, []).append(entry)
    batches: list[list[Loaded]] = []
    for group in by_size.values():
        width, height = group[0][2].size
        if plan_tiles(generator, (len(group), 3, height, width), device, tile).tiled:
            batches += [[entry] for entry in group]
        else:
            batches.append(group)
    return batches


def _translate_batch(
    generator: torch.nn.Module,
    batch: list[Loaded],
    args: argparse.Namespace,
    *,
    device: torch.device,
    precision: str,
    tile: Tiling,
) -> tuple[int, int]:
    """Translate and save one batch (with its side-by-side files if asked for); (written, failed)."""
    from tqdm import tqdm

    written = 0
    try:
        images = [to_tensor(image) for _, _, image in batch]
        x = images[0].unsqueeze(0) if len(batch) == 1 else torch.stack(images)  # (B, 3, H, W)
        del images
        y = translate_tensor(
            generator, x, tile=tile, device=device, precision=precision, progress=not args.quiet
        )
        del x
        for (_src, dst, image), out in zip(batch, y, strict=True):
            result = to_image(out)
            save_image(result, dst)
            if args.side_by_side:
                save_image(side_by_side(image, result), dst.with_name(f"{dst.stem}_side_by_side{dst.suffix}"))
            written += 1
    except (RuntimeError, OSError, ValueError) as err:
        names = ", ".join(str(src) for src, _, _ in batch)
        tqdm.write(f"error: {names}: {err}; skipped", file=sys.stderr)
        return written, len(batch)
    return written, 0


def translate_images(
    generator: torch.nn.Module,
    jobs: Jobs,
    args: argparse.Namespace,
    *,
    device: torch.device,
    precision: str,
    tile: Tiling,
) -> tuple[int, int]:
    """Translate each (image, output path) in chunks of `--batch-size`, with a progress bar; (written, failed)."""
    from tqdm import tqdm

    written = failed = 0
    bar = tqdm(total=len(jobs), unit="img", disable=args.quiet or not jobs, desc="translate")
    for start in range(0, len(jobs), args.batch_size):
        loaded, unreadable = _load_chunk(jobs[start : start + args.batch_size], bar)
        failed += unreadable
        for batch in _batches_by_size(loaded, generator, device, tile):
            done, broken = _translate_batch(
                generator, batch, args, device=device, precision=precision, tile=tile
            )
            written, failed = written + done, failed + broken
            bar.update(len(batch))
    bar.close()
    return written, failed


# ----------------------------------------------------------------------------- the command
class _Refused(Exception):
    """A problem found before any translation: `main` prints it as one `error:` line and exits with 2."""


def _fail(message: str) -> int:
    print(f"stylegan-translate: error: {message}", file=sys.stderr)
    return 2


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse options no translation can use (`_Refused`)."""
    if args.batch_size < 1:
        raise _Refused("--batch-size must be at least 1")
    if args.tile is not None and (args.tile < 0 or 0 < args.tile < 16):
        raise _Refused("--tile must be at least 16 pixels (try 512), or 0 to never tile")
    if problem := video.check_video_arguments(args):
        raise _Refused(problem)


def _device_and_precision(args: argparse.Namespace) -> tuple[torch.device, str]:
    """The device asked for, checked usable, and the precision (default: bf16 on CUDA, fp16 on MPS, fp32)."""
    try:
        device = pick_device(args.device)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:
        raise _Refused(f"device {args.device!r} is not usable here ({err}); try --device cpu") from None
    precision = args.precision or {"cpu": "fp32", "mps": "fp16"}.get(device.type, "bf16")
    if device.type == "cpu" and precision != "fp32":
        raise _Refused(f"--precision {precision} needs a GPU; use fp32 on the CPU")
    return device, precision


def _load_generator(args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    """The generator of `--model` (downloaded and converted on first use) or `--checkpoint`, on `device`."""
    if args.model is not None:
        generator = load_generator(pretrained.download_pretrained(args.model, progress=not args.quiet))
    else:
        generator = load(args.checkpoint, role=args.role)
    return generator.to(device)


def _tiling(args: argparse.Namespace) -> Tiling:
    """`--tile`: None (automatic), 0 (never) or the tile options it names."""
    if args.tile == 0:
        return 0
    if args.tile is not None:
        return TileOptions(tile=args.tile, overlap=args.overlap, consistent=not args.naive_tiles)
    return None


def _plan_jobs(args: argparse.Namespace, inputs: list[str]) -> tuple[Jobs, Jobs, int]:
    """(image jobs, video jobs, outputs skipped because they exist), each job (input, output path); videos
    are refused before any work when PyAV or their codec options are missing."""

    def output_for(src: Path, relative: Path) -> Path:
        if video.is_video(src):
            return video.video_output_path(args.output, relative, args.video_format)
        return _output_path(args.output, relative, args.format)

    try:
        planned = plan_outputs(collect_inputs(inputs, recursive=args.recursive), output_for)
    except InputError as err:
        raise _Refused(str(err)) from None
    todo = [(src, dst) for dst, src in planned.items() if args.overwrite or not dst.exists()]
    skipped = len(planned) - len(todo)
    videos = [(src, dst) for src, dst in todo if video.is_video(src)]
    images = [(src, dst) for src, dst in todo if not video.is_video(src)]
    if videos:
        try:
            video.import_av()
        except video.VideoError as err:
            raise _Refused(f"{videos[0][0]}: {err}") from None
        if problem := video.check_outputs([dst for _, dst in videos], args):
            raise _Refused(problem)
    return images, videos, skipped


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_arguments(args)
        device, precision = _device_and_precision(args)
        inputs = [*args.inputs, *args.input]
        if not inputs:
            raise _Refused("give the images to translate: files, folders or glob patterns")
        try:
            generator = _load_generator(args, device)
        except ExportError as err:
            raise _Refused(str(err)) from None
        tile = _tiling(args)
        images, videos, skipped = _plan_jobs(args, inputs)
    except _Refused as err:
        return _fail(str(err))
    written, failed = translate_images(generator, images, args, device=device, precision=precision, tile=tile)
    if videos:
        done, broken = video.run_videos(
            generator, videos, args, device=device, precision=precision, tile=tile
        )
        written, failed = written + done, failed + broken
    summary = f"{written} written, {skipped} skipped (already exist; --overwrite replaces), {failed} failed"
    print(f"stylegan-translate: {summary} -> {args.output}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

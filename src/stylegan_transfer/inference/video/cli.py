"""The video side of `stylegan-translate`: its options, their checks before any work, and the loop that
translates each video with them, one line per video (`inference.translate.main` calls these)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from stylegan_transfer.inference.tiling import Tiling
from stylegan_transfer.inference.video.clip import STATS_MODES, translate_video
from stylegan_transfer.inference.video.encode import (
    DEFAULT_CODECS,
    check_codec,
    container_name,
    encoder_options,
)
from stylegan_transfer.inference.video.probe import INSTALL_HINT, VideoError, import_av, reason

VIDEO_FORMATS = ("same", "mp4", "mov", "mkv", "webm", "gif")


def add_video_arguments(parser: argparse.ArgumentParser) -> None:
    """The video options of `stylegan-translate` (see `inference.translate.main`, which imports this module)."""
    group = parser.add_argument_group(f"video inputs (mp4, mov, mkv, webm, gif; needs PyAV: {INSTALL_HINT})")
    group.add_argument(
        "--video-format",
        choices=VIDEO_FORMATS,
        default="same",
        help="output container (default: the input's)",
    )
    group.add_argument(
        "--video-stats",
        choices=STATS_MODES,
        default="clip",
        help="instance-norm statistics held for the whole clip (default, no flicker added) or per frame",
    )
    group.add_argument(
        "--stats-frames", type=int, default=8, help="frames spread over the clip for --video-stats clip"
    )
    group.add_argument("--size", type=int, default=None, help="long side of the output video (default: kept)")
    group.add_argument(
        "--codec", default=None, help="video encoder (default libx264; libvpx-vp9 for webm, gif for gif)"
    )
    group.add_argument(
        "--crf", type=int, default=None, help="quality, lower is better (default 18 for H.264, 32 for VP9)"
    )
    group.add_argument("--preset", default=None, help="x264/x265 speed preset (default medium)")
    group.add_argument("--no-audio", action="store_true", help="leave the audio out")


def video_output_path(out_dir: Path, relative: Path, video_format: str) -> Path:
    suffix = relative.suffix if video_format == "same" else f".{video_format}"
    return out_dir / relative.with_suffix(suffix)


def check_video_arguments(args: argparse.Namespace) -> str | None:
    """The problem with the video options, or None."""
    if args.stats_frames < 1:
        return "--stats-frames must be at least 1"
    if args.size is not None and args.size < 16:
        return "--size must be at least 16 pixels"
    if args.crf is not None and args.crf < 0:
        return "--crf must be 0 (lossless) or more"
    return None


def check_outputs(outputs: Iterable[Path], args: argparse.Namespace) -> str | None:
    """The problem with writing these outputs with the CLI's codec options (before any work), or None."""
    av = import_av()
    seen: set[str] = set()
    try:
        for output in outputs:
            if output.suffix.lower() in seen:
                continue
            seen.add(output.suffix.lower())
            container = container_name(av, output)
            descriptor = check_codec(av, args.codec or DEFAULT_CODECS[container], container, output)
            encoder_options(descriptor.name, args.crf, args.preset)
    except VideoError as err:
        return str(err)
    return None


def run_videos(
    generator: nn.Module,
    jobs: list[tuple[Path, Path]],
    args: argparse.Namespace,
    *,
    device: torch.device,
    precision: str,
    tile: Tiling,
) -> tuple[int, int]:
    """Translate each (video, output path) with the CLI's options, one line per video; (written, failed)."""
    written = failed = 0
    for source, output in jobs:
        try:
            report = translate_video(
                generator,
                source,
                output,
                stats=args.video_stats,
                stats_frames=args.stats_frames,
                batch_size=args.batch_size,
                size=args.size,
                tile=tile,
                device=device,
                precision=precision,
                codec=args.codec,
                crf=args.crf,
                preset=args.preset,
                audio=not args.no_audio,
                side_by_side=output.with_name(f"{output.stem}_side_by_side{output.suffix}")
                if args.side_by_side
                else None,
                progress=not args.quiet,
            )
        except VideoError as err:
            failed += 1
            print(f"error: {err}", file=sys.stderr)
            continue
        except (RuntimeError, ValueError) as err:  # e.g. out of memory: the next video may still fit
            failed += 1
            print(f"error: {source}: {reason(err)}; no output written", file=sys.stderr)
            continue
        if report.damaged:
            failed += 1
            print(
                f"error: {source}: {report.damaged}; the {report.frames} frames before it are in {output}",
                file=sys.stderr,
            )
        else:
            written += 1
            if not args.quiet:
                print(f"{source} -> {output}: {report.summary()}", file=sys.stderr)
    return written, failed

"""`translate_video`: one clip decoded, translated in batches and encoded, streaming (docs/video.md).

Order of work, each step refusing in one `VideoError` line before the next begins: options, containers
and codecs, the probe of the source, the frame size; then the statistics pass (`statistics`), then one
pass that decodes, translates and writes every output through a temporary file renamed at the end, so an
error leaves no output file. A video found damaged part-way keeps the frames before the damage in a
valid file and says so in `VideoReport.damaged`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stylegan_transfer.atomic import atomic_path
from stylegan_transfer.devices import pick_device
from stylegan_transfer.images import MAX_PIXELS
from stylegan_transfer.inference.tiling import (
    PRECISIONS,
    TileOptions,
    Tiling,
    fixed_instance_norm_stats,
    plan_tiles,
)
from stylegan_transfer.inference.translation import translate_tensor
from stylegan_transfer.inference.video.encode import (
    DEFAULT_CODECS,
    EVEN_FORMATS,
    Timestamps,
    Writer,
    check_codec,
    container_name,
    encoder_options,
    pixel_format,
)
from stylegan_transfer.inference.video.frames import (
    Geometry,
    decoded_size,
    frame_array,
    frame_bar,
    quarter_turns,
    to_arrays,
    to_batch,
)
from stylegan_transfer.inference.video.probe import VideoError, VideoInfo, import_av, probe_video, reason
from stylegan_transfer.inference.video.statistics import FlickerMeter, clip_statistics, has_instance_norm

STATS_MODES = ("clip", "per-frame")


@dataclass
class VideoReport:
    source: Path
    output: Path
    frames: int = 0  # frames written
    expected_frames: int | None = None
    fps: Fraction = Fraction(0)
    size: tuple[int, int] = (0, 0)  # output (width, height) as stored
    rotation: int = 0
    codec: str = ""
    audio: list[str] = field(default_factory=list)  # per input audio stream: "copied aac", ...
    stats: str = ""
    tiles: int = 0  # side of the tiles the frames were translated in; 0: whole frames
    flicker: float | None = None
    damaged: str | None = None  # why decoding stopped early; the output holds the frames before it

    def summary(self) -> str:
        width, height = self.size
        parts = [f"{self.frames} frames {width}x{height} at {float(self.fps):.3g} fps ({self.codec})"]
        parts.append("audio " + ", ".join(self.audio) if self.audio else "no audio")
        parts.append(f"statistics {self.stats}")
        if self.tiles:
            parts.append(f"in {self.tiles}-pixel tiles")
        if self.flicker is not None:
            parts.append(f"flicker ratio {self.flicker:.3f}")
        return "; ".join(parts)


@dataclass(frozen=True)
class VideoOptions:
    """The keyword arguments of `translate_video`, with the same names, defaults and meaning."""

    stats: str = "clip"
    stats_frames: int = 8
    batch_size: int = 4
    size: int | None = None
    tile: Tiling = None
    max_pixels: int = MAX_PIXELS
    device: str | torch.device | None = None
    precision: str = "fp32"
    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    audio: bool = True
    side_by_side: str | Path | None = None
    progress: bool = False

    def check(self) -> None:
        """ValueError for a statistics mode or a count the translation cannot use."""
        if self.stats not in STATS_MODES:
            raise ValueError(f"unknown stats mode {self.stats!r}; choose {' or '.join(STATS_MODES)}")
        if self.batch_size < 1 or self.stats_frames < 1:
            raise ValueError("batch_size and stats_frames must be at least 1")


@torch.no_grad()
def translate_video(
    generator: nn.Module,
    source: str | Path,
    output: str | Path,
    *,
    stats: str = "clip",
    stats_frames: int = 8,
    batch_size: int = 4,
    size: int | None = None,
    tile: Tiling = None,
    max_pixels: int = MAX_PIXELS,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    codec: str | None = None,
    crf: int | None = None,
    preset: str | None = None,
    audio: bool = True,
    side_by_side: str | Path | None = None,
    progress: bool = False,
) -> VideoReport:
    """Translate the video `source` into `output` (container from its suffix: mp4, mov, mkv, webm, gif).

    `stats`: "clip" holds instance-norm statistics averaged over `stats_frames` frames spread over the clip
    (no flicker added), "per-frame" recomputes them on every frame. `batch_size` frames go through the
    generator together. `size`: long side of the output (None: the input's). `tile`: as for images (None:
    tiles when a batch of frames would not fit in memory, 0 never, N tiles of N pixels; `tiling.plan_tiles`);
    frames of more than `max_pixels` are refused. `codec` (default H.264, VP9 for WebM), `crf`, `preset`: the
    encoder and its quality. `audio=False` leaves the audio out. `side_by_side`: also write this file
    with input and translation next to each other (same container as `output`). Raises `VideoError` (one
    line naming the file) when a file cannot be read or written, leaving no output; a video found damaged
    part-way is reported in the result's `damaged`, and the output holds the frames translated before."""
    options = VideoOptions(
        stats=stats,
        stats_frames=stats_frames,
        batch_size=batch_size,
        size=size,
        tile=tile,
        max_pixels=max_pixels,
        device=device,
        precision=precision,
        codec=codec,
        crf=crf,
        preset=preset,
        audio=audio,
        side_by_side=side_by_side,
        progress=progress,
    )
    return _translate_clip(generator, Path(source), Path(output), options)


@dataclass(frozen=True)
class _Plan:
    """What the checks before any work settled: where to write, with what, at which size."""

    source: Path
    outputs: list[Path]  # the translation, then the side-by-side file if asked for
    device: torch.device
    dtype: torch.dtype
    container: str
    descriptor: Any  # the video encoder
    info: VideoInfo
    geometry: Geometry


def _plan(av: Any, source: Path, output: Path, options: VideoOptions) -> _Plan:
    """Every check that needs no generator, in the order the user meets their errors."""
    outputs = [output] if options.side_by_side is None else [output, Path(options.side_by_side)]
    device = pick_device() if options.device is None else torch.device(options.device)
    dtype = PRECISIONS[options.precision]
    container = container_name(av, output)
    if options.side_by_side is not None and container_name(av, Path(options.side_by_side)) != container:
        raise VideoError(f"{options.side_by_side}: the side-by-side video must use the container of {output}")
    descriptor = check_codec(av, options.codec or DEFAULT_CODECS[container], container, output)
    encoder_options(descriptor.name, options.crf, options.preset)  # refuse unsupported quality options early
    info = probe_video(source)
    even = pixel_format(descriptor, container) in EVEN_FORMATS
    geometry = Geometry(
        *decoded_size(info, options.size, even),
        turns=quarter_turns(info.rotation),
        upright_output=container == "gif",
    )
    if geometry.width * geometry.height > options.max_pixels:
        raise VideoError(
            f"{source}: frames of {geometry.width}x{geometry.height} are more than {options.max_pixels:,} "
            "pixels; give a smaller size (--size)"
        )
    return _Plan(source, outputs, device, dtype, container, descriptor, info, geometry)


def _translate_clip(generator: nn.Module, source: Path, output: Path, options: VideoOptions) -> VideoReport:
    """`translate_video` with its options grouped (the keyword API is the one to call)."""
    av = import_av()
    options.check()
    plan = _plan(av, source, output, options)
    generator = generator.to(plan.device).eval()
    geometry = plan.geometry
    tiles = plan_tiles(
        generator, (options.batch_size, 3, geometry.height, geometry.width), plan.device, options.tile
    )
    report = VideoReport(
        source=source, output=output, expected_frames=plan.info.frames, fps=plan.info.fps, tiles=tiles.tile
    )
    held, tiles = _hold_statistics(av, generator, plan, options, tiles, report)
    batches = _Batches(generator, plan, tiles, options, report)
    writers = _write_outputs(av, plan, options, held, batches, report)
    main = writers[0]
    report.codec, report.size, report.rotation, report.audio = (
        main.codec,
        main.size,
        main.rotation,
        main.audio_notes,
    )
    report.flicker = batches.meter.ratio
    return report


def _hold_statistics(
    av: Any, generator: nn.Module, plan: _Plan, options: VideoOptions, tiles: TileOptions, report: VideoReport
) -> tuple[contextlib.AbstractContextManager, TileOptions]:
    """(the context that holds the clip's statistics, or does nothing; the tile options to use), with
    `report.stats` saying which statistics the frames get."""
    if not has_instance_norm(generator):
        report.stats = "none (the generator has no instance norm)"
        return contextlib.nullcontext(), tiles
    if options.stats == "per-frame":
        report.stats = "per frame"
        return contextlib.nullcontext(), tiles
    clip_stats, used = clip_statistics(
        av,
        generator,
        plan.info,
        plan.geometry,
        samples=options.stats_frames,
        stats_size=tiles.stats_size if tiles.tiled else None,
        device=plan.device,
        dtype=plan.dtype,
        progress=options.progress,
    )
    report.stats = f"held, averaged over {used} frames"
    if tiles.tiled:
        tiles = replace(tiles, consistent=False)  # the clip's statistics hold for every tile too
    return fixed_instance_norm_stats(generator, clip_stats), tiles


class _Batches:
    """Decoded frames gathered into batches of `batch_size`, translated, measured for flicker and handed to
    every writer in their stored orientation; `report.frames` counts the frames written."""

    def __init__(
        self,
        generator: nn.Module,
        plan: _Plan,
        tiles: TileOptions,
        options: VideoOptions,
        report: VideoReport,
    ) -> None:
        self.generator, self.geometry, self.tiles = generator, plan.geometry, tiles
        self.device, self.precision, self.batch_size = plan.device, options.precision, options.batch_size
        self.report = report
        self.meter = FlickerMeter()
        self.timestamps = Timestamps(plan.info)
        self.pending: list[tuple[np.ndarray, tuple[int, Fraction]]] = []  # decoded frames waiting for a batch
        self.writers: list[Writer] = []
        self.bar = frame_bar(options.progress, total=plan.info.frames, desc=plan.source.name)

    def add(self, frame: Any) -> None:
        self.pending.append((frame_array(frame, self.geometry), self.timestamps(frame)))
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        geometry = self.geometry
        x = to_batch([array for array, _ in self.pending], geometry.turns)  # (B, 3, H, W), upright
        y = translate_tensor(self.generator, x, tile=self.tiles, device=self.device, precision=self.precision)
        self.meter.update(x, y)
        stamps = [stamp for _, stamp in self.pending]
        for writer in self.writers:
            frames = torch.cat([x, y], dim=3) if writer.pair else y  # (B, 3, H, W or 2W) as displayed
            if geometry.turns and not geometry.upright_output:
                frames = torch.rot90(frames, -geometry.turns, dims=(2, 3))  # back to the stored orientation
            writer.video_frames(to_arrays(frames), stamps)
        self.report.frames += len(self.pending)
        if self.bar is not None:
            self.bar.update(len(self.pending))
        self.pending.clear()


def _write_outputs(
    av: Any,
    plan: _Plan,
    options: VideoOptions,
    held: contextlib.AbstractContextManager,
    batches: _Batches,
    report: VideoReport,
) -> list[Writer]:
    """Decode, translate and encode every output through temporary files renamed only when all are
    complete; returns the closed writers (the translation's first)."""
    writers = batches.writers
    try:
        with contextlib.ExitStack() as stack:
            temporary = [stack.enter_context(atomic_path(path)) for path in plan.outputs]
            container = stack.enter_context(av.open(str(plan.source)))
            stack.enter_context(held)
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            try:
                for index, tmp in enumerate(temporary):
                    writers.append(
                        Writer(
                            av,
                            tmp,
                            plan.container,
                            container,
                            plan.info,
                            plan.geometry,
                            plan.descriptor,
                            pair=index == 1,
                            crf=options.crf,
                            preset=options.preset,
                            audio=options.audio,
                        )
                    )
                _stream(av, container, stream, batches, report)
                _check_complete(plan, report)
            except BaseException:
                for writer in writers:
                    writer.abort()
                raise
            for writer in writers:
                writer.close()
    except (av.error.FFmpegError, OSError) as err:
        raise VideoError(f"{plan.source}: cannot translate into {plan.outputs[0]} ({reason(err)})") from None
    finally:
        if batches.bar is not None:
            batches.bar.close()
    return writers


def _stream(av: Any, container: Any, stream: Any, batches: _Batches, report: VideoReport) -> None:
    """Demux the source once: audio packets go to every writer as they come, video frames to `batches`. A
    decoding error stops the stream there and is recorded in `report.damaged`."""
    writers = batches.writers
    audio_streams = [s for s in container.streams.audio if s.index in writers[0].audio]
    try:
        for packet in container.demux([stream, *audio_streams]):
            if packet.stream.index != stream.index:
                copy = writers[0].copies(packet.stream.index)
                frames = None if copy else packet.decode()
                for writer in writers:
                    writer.audio_packet(packet, frames)
                continue
            for frame in packet.decode():
                batches.add(frame)
    except av.error.FFmpegError as err:
        decoded = report.frames + len(batches.pending)
        report.damaged = f"damaged: decoding stopped after frame {decoded} ({reason(err)})"
    batches.flush()


def _slack(info: VideoInfo) -> int:
    """How many frames fewer than announced still count as complete: 2 for a count from the header, half a
    second for a count estimated from a duration (which may be the longer audio track's)."""
    return 2 if info.frames_exact else max(2, math.ceil(float(info.fps) / 2))


def _check_complete(plan: _Plan, report: VideoReport) -> None:
    """`VideoError` when no frame was decoded; `report.damaged` set when clearly fewer frames were decoded
    than the source announces."""
    info = plan.info
    if report.frames == 0:
        raise VideoError(f"{plan.source}: no frame could be decoded ({report.damaged or 'empty'})")
    if report.damaged is None and info.frames and report.frames < info.frames - _slack(info):
        announced = "the header announces" if info.frames_exact else "its duration announces"
        report.damaged = (
            f"truncated or damaged: decoded {report.frames} of the {info.frames} frames {announced}"
        )

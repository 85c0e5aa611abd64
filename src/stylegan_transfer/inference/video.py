"""Translate videos frame by frame without added flicker, streaming, with the audio kept.

    stylegan-translate --checkpoint export/g_ab.safetensors --input clip.mp4 --output out/

Pipeline: decode (PyAV) -> batches of `batch_size` frames -> translate -> encode, so memory depends on the
batch and the frame size, never on the length of the video. Audio packets are copied into the output
as they are read (or transcoded, to AAC, or Opus for WebM, when the output container cannot hold the
codec); subtitle and data streams are not carried over.

Temporal stability. Instance normalisation recomputes each layer's mean and variance on every frame, so a
change anywhere in the frame (something entering the picture, a light flickering in a corner) shifts the
colours and contrast of the whole output frame: flicker. The default `stats="clip"` records every
InstanceNorm layer's statistics on `stats_frames` frames spread evenly over the clip, averages them (the
mean of the per-frame means and of the per-frame variances, i.e. the normalisation a typical frame of the
clip gets) and holds that average fixed for every frame (`tiling.fixed_instance_norm_stats`). With fixed
statistics the network is the same function for every frame, so the output changes only where and as
much as the input does. Per clip rather than a sliding window per scene: any statistics that move over
time, however slowly, reintroduce a global drift of colour and contrast, and a window needs a look-ahead
buffer of frames; a clip that joins very different scenes is better cut into scenes first (or translated
with `stats="per-frame"`, the behaviour of translating the frames as separate images, kept to compare).
The statistics pass decodes the video once more before translating (decoding is cheap next to
translating) and runs the generator on the sampled frames only. Note that per-frame statistics cancel a
change of brightness or contrast of the *whole* frame (an affine change of the input is normalised away
by the first layer), which held statistics pass through like any other change of the input.

`flicker_ratio`: the mean absolute difference between consecutive output frames divided by the same for
the input frames (1.0 = the translation adds no flicker), measured on the translated frames before
encoding.

Geometry and timing. Output frames keep the input's timestamps (frame rate, variable rates included) and
stored size (or `size`, the long side); dimensions are rounded down to even numbers for yuv420p. Rotation
metadata (the display matrix of phone videos) is copied, and the stored frames keep their stored
orientation, so the output displays the way the input does; for multiples of 90 degrees the frames are
turned upright for the generator and turned back after it. GIF has no rotation metadata, so GIF output
is written upright and holds no audio; it uses one 256-colour palette taken from the first translated
batch, without dithering (a palette or a dither pattern that changed from frame to frame would flicker).
The colour description (matrix, range, primaries, transfer) is kept: frames go back to YUV with the matrix
and range they were decoded with, and the output is tagged like the input. `side_by_side` writes a second
file with input and translation next to each other, from the same pass.

Failures. A file that cannot be opened ends with one `VideoError` line naming it and leaves no output. A
video that turns out damaged or truncated while decoding stops there: the frames translated so far are
kept in a valid, properly closed output file and the report's `damaged` names the problem (the CLI prints
one line and exits with 1). The output is written to a temporary file renamed at the end, so an
interruption or any other error leaves no output file at all.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import re
import sys
from collections.abc import Iterable, Iterator
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
    Tiling,
    autocast,
    fixed_instance_norm_stats,
    plan_tiles,
    record_instance_norm_stats,
)
from stylegan_transfer.inference.translation import translate_tensor

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".gif"})
CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".gif": "gif"}
DEFAULT_CODECS = {
    "mp4": "libx264",
    "mov": "libx264",
    "matroska": "libx264",
    "webm": "libvpx-vp9",
    "gif": "gif",
}
AUDIO_FALLBACK = {"webm": "libopus"}  # any other container: aac
STATS_MODES = ("clip", "per-frame")
INSTALL_HINT = 'pip install "stylegan-transfer[video]"'
DEFAULT_CRF = {
    "libx264": 18,
    "libx265": 22,
    "libvpx-vp9": 32,
}  # constant quality; other codecs: their defaults
EVEN_FORMATS = frozenset({"yuv420p", "yuvj420p", "nv12", "yuv422p", "yuvj422p"})


class VideoError(ValueError):
    """A one-line, user-facing problem with a video file, its container or its codec."""


def import_av() -> Any:
    """PyAV, imported lazily so that the base install works without it."""
    try:
        import av
    except ImportError:
        raise VideoError(f"reading and writing video needs PyAV: {INSTALL_HINT}") from None
    return av


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


# ----------------------------------------------------------------------------- flicker
class FlickerMeter:
    """Running flicker ratio over a stream of (input, output) frame batches, each (B, 3, H, W)."""

    def __init__(self) -> None:
        self._previous: tuple[torch.Tensor, torch.Tensor] | None = None
        self.input_change = 0.0  # sum over consecutive pairs of the mean absolute difference
        self.output_change = 0.0
        self.pairs = 0

    def update(self, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
        inputs, outputs = inputs.detach().float().cpu(), outputs.detach().float().cpu()
        for frames, previous, attribute in ((inputs, 0, "input_change"), (outputs, 1, "output_change")):
            change = (frames[1:] - frames[:-1]).abs().mean(dim=(1, 2, 3)).sum().item()
            if self._previous is not None:
                change += (frames[0] - self._previous[previous]).abs().mean().item()
            setattr(self, attribute, getattr(self, attribute) + change)
        self.pairs += len(inputs) - 1 + (self._previous is not None)
        self._previous = (inputs[-1], outputs[-1])

    @property
    def ratio(self) -> float | None:
        """Output change / input change; None for fewer than two frames or an input that never changes."""
        if self.pairs == 0 or self.input_change == 0.0:
            return None
        return self.output_change / self.input_change


def flicker_ratio(inputs: torch.Tensor | Iterable, outputs: torch.Tensor | Iterable) -> float | None:
    """Mean |out[t] - out[t-1]| / mean |in[t] - in[t-1]| over frames (T, 3, H, W) in the same value range.

    1.0: the output changes from frame to frame exactly as much as the input (no flicker added); above 1:
    flicker added; below 1: the translation smooths changes away."""
    meter = FlickerMeter()
    for x, y in zip(inputs, outputs, strict=True):
        meter.update(torch.as_tensor(x)[None], torch.as_tensor(y)[None])
    return meter.ratio


# ----------------------------------------------------------------------------- probing
@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int  # stored (coded) size
    height: int
    rotation: int  # counter-clockwise degrees of the display matrix (0 when none)
    fps: Fraction
    time_base: Fraction  # of the video stream's timestamps
    frames: int | None  # from the header, or estimated from the duration; None when unknown
    frames_exact: bool  # the frame count comes from the header
    duration: float | None  # seconds
    audio_codecs: tuple[str, ...] = ()
    colour: tuple[int, int, int, int] = (0, 0, 0, 0)  # FFmpeg's colorspace, range, primaries, transfer


def _duration_tag(metadata: dict) -> float | None:
    """Matroska's per-track `DURATION` tag, HH:MM:SS.nnnnnnnnn."""
    match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", str(metadata.get("DURATION", "")).strip())
    if not match:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _first_frame(container: Any, stream: Any) -> Any | None:
    for frame in container.decode(stream):
        return frame
    return None


def _describe(container: Any, path: Path) -> VideoInfo:
    stream = container.streams.video[0]
    fps = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(25)
    duration = None
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    duration = duration or _duration_tag(dict(stream.metadata))
    if duration is None and container.duration:
        duration = container.duration / 1_000_000  # AV_TIME_BASE
    frames = stream.frames or (round(duration * fps) if duration else None)
    first = _first_frame(container, stream)
    rotation = round(first.rotation or 0) if first is not None else 0
    colour = (0, 0, 0, 0)
    if first is not None:
        colour = (
            int(first.colorspace),
            int(first.color_range),
            int(first.color_primaries),
            int(first.color_trc),
        )
    return VideoInfo(
        path=path,
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        rotation=rotation,
        fps=Fraction(fps),
        time_base=stream.time_base or Fraction(1, 90_000),
        frames=frames or None,
        frames_exact=bool(stream.frames),
        duration=duration,
        audio_codecs=tuple(a.codec_context.name for a in container.streams.audio),
        colour=colour,
    )


def _reason(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return re.sub(r"\s+", " ", str(text)).strip() or type(err).__name__


def probe_video(path: str | Path) -> VideoInfo:
    """Size, rotation, frame rate, frame count and audio of a video; `VideoError` if it cannot be read."""
    av = import_av()
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: holds no video stream")
            return _describe(container, path)
    except (av.error.FFmpegError, OSError) as err:
        raise VideoError(f"{path}: cannot read video ({_reason(err)})") from None


# ----------------------------------------------------------------------------- frames <-> tensors
@dataclass(frozen=True)
class _Geometry:
    width: int  # size the frames are decoded to (stored orientation)
    height: int
    turns: int  # quarter turns counter-clockwise that make the stored frame upright
    upright_output: bool  # GIF: write upright frames (no rotation metadata in the container)

    def output_size(self, pair: bool = False) -> tuple[int, int]:
        """(width, height) written: the translation, or with `pair` input and translation side by side."""
        width, height = self.width, self.height
        if self.upright_output and self.turns % 2:
            width, height = height, width
        if pair:
            if self.upright_output or self.turns % 2 == 0:
                width *= 2
            else:
                height *= 2  # side by side as displayed = stacked in the stored frame
        return width, height


def _decoded_size(info: VideoInfo, size: int | None, even: bool) -> tuple[int, int]:
    width, height = info.width, info.height
    if size is not None:
        scale = size / max(width, height)
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
    if even:
        width, height = max(2, width - width % 2), max(2, height - height % 2)
    return width, height


def _frame_array(frame: Any, geometry: _Geometry) -> np.ndarray:
    """A decoded frame as (H, W, 3) uint8 RGB at the decode size."""
    return frame.to_ndarray(
        format="rgb24", width=geometry.width, height=geometry.height, interpolation="AREA"
    )


def _to_batch(arrays: list[np.ndarray], turns: int) -> torch.Tensor:
    """(H, W, 3) uint8 frames -> (B, 3, H, W) float in [-1, 1], turned upright."""
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return torch.rot90(batch, turns, dims=(2, 3)) if turns else batch


def _to_arrays(batch: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return ((batch.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).contiguous().numpy()


# ----------------------------------------------------------------------------- held statistics
def _has_instance_norm(generator: nn.Module) -> bool:
    return any(isinstance(m, nn.InstanceNorm2d) for m in generator.modules())


def _sample_indices(count: int, samples: int) -> set[int]:
    """`samples` frame indices spread evenly over `count` frames (the middle of equal parts)."""
    samples = max(1, min(samples, count))
    return {min(count - 1, int((i + 0.5) * count / samples)) for i in range(samples)}


def _count_packets(av: Any, path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size)


def _decode_quietly(av: Any, container: Any, stream: Any) -> Iterator[Any]:
    """Decoded frames until the end or the first decoding error (the translation pass reports errors)."""
    try:
        for packet in container.demux(stream):
            yield from packet.decode()
    except av.error.FFmpegError:
        return


def _shrink(x: torch.Tensor, longest: int | None) -> torch.Tensor:
    """(B, 3, H, W) downscaled (antialiased) so that its long side is at most `longest`."""
    if longest is None or max(x.shape[-2:]) <= longest:
        return x
    scale = longest / max(x.shape[-2:])
    size = (max(4, round(x.shape[-2] * scale)), max(4, round(x.shape[-1] * scale)))
    return nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def _clip_statistics(
    av: Any,
    generator: nn.Module,
    info: VideoInfo,
    geometry: _Geometry,
    *,
    samples: int,
    stats_size: int | None,
    device: torch.device,
    dtype: torch.dtype,
    progress: bool,
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
    """Every InstanceNorm layer's (mean, var), averaged over `samples` frames spread over the clip, which
    are decoded like the frames to translate (and shrunk to `stats_size` when tiling). Returns
    (statistics, number of frames used)."""
    count = info.frames or _count_packets(av, info.path)
    wanted = _sample_indices(max(1, count), samples)
    last = max(wanted)
    sums: list[list[torch.Tensor]] | None = None
    used = 0
    bar = _bar(progress, total=last + 1, desc=f"statistics {info.path.name}")
    try:
        with av.open(str(info.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(_decode_quietly(av, container, stream)):
                if bar is not None:
                    bar.update(1)
                if index in wanted:
                    x = _shrink(_to_batch([_frame_array(frame, geometry)], geometry.turns), stats_size)
                    with autocast(device, dtype):
                        stats = record_instance_norm_stats(generator, x.to(device))  # (1, C) each
                    if sums is None:
                        sums = [[mean.double(), var.double()] for mean, var in stats]
                    else:
                        for total, (mean, var) in zip(sums, stats, strict=True):
                            total[0] += mean.double()
                            total[1] += var.double()
                    used += 1
                if index >= last:
                    break
    except (av.error.FFmpegError, OSError) as err:
        raise VideoError(f"{info.path}: cannot read video ({_reason(err)})") from None
    finally:
        if bar is not None:
            bar.close()
    if sums is None:
        raise VideoError(f"{info.path}: no frame could be decoded")
    return [((mean / used).float(), (var / used).float()) for mean, var in sums], used


def _quarter_turns(rotation: int) -> int:
    return (rotation // 90) % 4 if rotation % 90 == 0 else 0


def _bar(enabled: bool, *, total: int | None, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", leave=False, dynamic_ncols=True)


# ----------------------------------------------------------------------------- output
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


def _check_codec(av: Any, codec: str, container_name: str, output: Path) -> Any:
    try:
        descriptor = av.codec.Codec(codec, "w")
    except Exception:
        raise VideoError(
            f"{output}: the video codec {codec!r} is not available in this PyAV/FFmpeg build; "
            f"the default for {output.suffix} is {DEFAULT_CODECS[container_name]}"
        ) from None
    if descriptor.type != "video":
        raise VideoError(f"{output}: {codec!r} is not a video codec")
    with av.open(io.BytesIO(), "w", format=container_name) as probe:
        supported = probe.supported_codecs
    if descriptor.name not in supported:
        raise VideoError(
            f"{output}: the {output.suffix} container cannot hold {codec} video; "
            f"use --codec {DEFAULT_CODECS[container_name]} or another --video-format"
        )
    return descriptor


def _container_name(av: Any, output: Path) -> str:
    name = CONTAINERS.get(output.suffix.lower())
    if name is None:
        known = ", ".join(sorted(CONTAINERS))
        raise VideoError(f"{output}: unknown video container {output.suffix!r}; use one of {known}")
    if name not in av.formats_available:
        raise VideoError(f"{output}: the {name} container is not available in this PyAV/FFmpeg build")
    return name


def _pixel_format(descriptor: Any, container_name: str) -> str:
    if container_name == "gif":
        return "pal8"
    formats = [f.name for f in (descriptor.video_formats or [])]
    if not formats or "yuv420p" in formats:
        return "yuv420p"
    return formats[0]


def _encoder_options(codec: str, crf: int | None, preset: str | None) -> tuple[dict[str, str], bool]:
    """(encoder options, constant quality?) for `codec` (an encoder name such as libx264)."""
    if preset is not None and codec not in ("libx264", "libx265"):
        raise VideoError(f"--preset applies to libx264 and libx265, not {codec}")
    if codec not in DEFAULT_CRF:
        if crf is not None:
            raise VideoError(
                f"--crf applies to {', '.join(sorted(DEFAULT_CRF))}; {codec} uses its own defaults"
            )
        return {}, False
    options = {"crf": str(DEFAULT_CRF[codec] if crf is None else crf)}
    if codec in ("libx264", "libx265"):
        options["preset"] = preset or "medium"
    if codec == "libx265":
        options["x265-params"] = "log-level=error"  # x265 prints its settings otherwise
    if codec == "libvpx-vp9":
        options.update({"b": "0", "row-mt": "1", "cpu-used": "4"})  # constant quality, usable speed
    return options, True


class _GifPalette:
    """One 256-colour palette from the first translated batch, applied to every frame without dithering."""

    def __init__(self) -> None:
        self._palette_image = None
        self._argb: np.ndarray | None = None

    def frame(self, av: Any, array: np.ndarray) -> Any:  # (H, W, 3) uint8
        from PIL import Image

        image = Image.fromarray(array, mode="RGB")
        indices = np.asarray(image.quantize(palette=self._palette_image, dither=Image.Dither.NONE))
        return av.VideoFrame.from_ndarray((indices, self._argb), format="pal8")

    def fit(self, arrays: np.ndarray) -> None:  # (B, H, W, 3)
        from PIL import Image

        if self._palette_image is not None:
            return
        mosaic = Image.fromarray(np.concatenate(list(arrays), axis=0), mode="RGB")
        self._palette_image = mosaic.quantize(256, method=Image.Quantize.MEDIANCUT)
        rgb = np.zeros((256, 3), np.uint8)
        colours = np.asarray(self._palette_image.getpalette()[: 256 * 3], np.uint8).reshape(-1, 3)
        rgb[: len(colours)] = colours
        self._argb = np.concatenate([np.full((256, 1), 255, np.uint8), rgb], axis=1)  # (256, 4)


class _Writer:
    """One output container: the translated video stream plus the audio streams, copied or transcoded."""

    def __init__(
        self,
        av: Any,
        path: Path,
        container_name: str,
        source: Any,
        info: VideoInfo,
        geometry: _Geometry,
        descriptor: Any,
        *,
        pair: bool,
        crf: int | None,
        preset: str | None,
        audio: bool,
    ) -> None:
        self.av, self.pair = av, pair
        self.container = av.open(str(path), "w", format=container_name)
        self.size = geometry.output_size(pair)
        self.codec = descriptor.name
        self.rotation = 0 if geometry.upright_output else info.rotation
        stream = self.container.add_stream(descriptor.name, rate=info.fps)
        stream.width, stream.height = self.size
        stream.pix_fmt = _pixel_format(descriptor, container_name)
        stream.codec_context.time_base = Fraction(1, 100) if container_name == "gif" else info.time_base
        options, constant_quality = _encoder_options(descriptor.name, crf, preset)
        if constant_quality and descriptor.name == "libvpx-vp9":
            stream.bit_rate = 0
        stream.options = options
        if self.rotation:
            stream.set_display_rotation(self.rotation)
        self.video = stream
        self.gif = _GifPalette() if container_name == "gif" else None
        # The input's colour description (matrix, range, primaries, transfer) is kept: the frames are
        # converted back to YUV with the matrix and range they were decoded with, and tagged the same.
        self.colour = info.colour if self.gif is None else (0, 0, 0, 0)
        colorspace, color_range, primaries, transfer = self.colour
        context = stream.codec_context
        for name, value in (("colorspace", colorspace), ("color_range", color_range),
                            ("color_primaries", primaries), ("color_trc", transfer)):  # fmt: skip
            if value:
                setattr(context, name, value)
        self.audio: dict[int, tuple[Any, bool]] = {}  # input stream index -> (output stream, copy?)
        self.audio_notes: list[str] = []
        for in_audio in source.streams.audio:
            name = in_audio.codec_context.name
            if not audio:
                self.audio_notes.append(f"{name} left out")
            elif container_name == "gif":
                self.audio_notes.append(f"{name} dropped (GIF holds no audio)")
            elif name in self.container.supported_codecs:
                self.audio[in_audio.index] = (self.container.add_stream_from_template(in_audio), True)
                self.audio_notes.append(f"copied {name}")
            else:
                target = AUDIO_FALLBACK.get(container_name, "aac")
                rate = in_audio.codec_context.sample_rate or 48000
                rates = av.codec.Codec(target, "w").audio_rates
                if rates and rate not in rates:
                    rate = 48000
                out_audio = self.container.add_stream(target, rate=rate)
                with contextlib.suppress(Exception):  # encoders pick their own layout otherwise
                    out_audio.layout = in_audio.codec_context.layout.name
                self.audio[in_audio.index] = (out_audio, False)
                self.audio_notes.append(f"{name} transcoded to {target}")

    def copies(self, index: int) -> bool:
        return self.audio[index][1]

    def audio_packet(self, packet: Any, frames: list[Any] | None) -> None:
        """Copy `packet`, or encode its decoded `frames` (decoded once for all writers)."""
        out_stream, copy = self.audio[packet.stream.index]
        if copy:
            if packet.dts is not None and packet.size:  # not one of demux's flush packets
                packet.stream = out_stream
                self.container.mux(packet)
            return
        for frame in frames or []:
            self.container.mux(out_stream.encode(frame))

    def video_frames(self, arrays: np.ndarray, stamps: list[tuple[int, Fraction]]) -> None:
        if self.gif is not None:
            self.gif.fit(arrays)
        for array, (pts, time_base) in zip(arrays, stamps, strict=True):
            if self.gif is not None:
                frame = self.gif.frame(self.av, array)
            else:
                frame = self.av.VideoFrame.from_ndarray(array, format="rgb24")
                colorspace, color_range = self.colour[:2]
                if colorspace or color_range:
                    if colorspace:
                        frame.colorspace = colorspace  # reformat's target matrix
                    frame = frame.reformat(format=self.video.pix_fmt, dst_color_range=color_range or None)
            frame.pts, frame.time_base = pts, time_base
            self.container.mux(self.video.encode(frame))

    def close(self) -> None:
        """Flush the encoders and write the trailer: a complete, valid file."""
        self.container.mux(self.video.encode())
        for out_stream, copy in self.audio.values():
            if not copy:
                self.container.mux(out_stream.encode())
        self.container.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()


# ----------------------------------------------------------------------------- translation
class _Timestamps:
    """Output timestamps: the input's (made strictly increasing), or made up from the frame rate where the
    input has none."""

    def __init__(self, info: VideoInfo) -> None:
        self.time_base = info.time_base
        self.step = max(1, round(1 / (info.fps * self.time_base)))
        self.last: int | None = None

    def __call__(self, frame: Any) -> tuple[int, Fraction]:
        pts = frame.pts
        if pts is not None and frame.time_base is not None and frame.time_base != self.time_base:
            pts = round(pts * frame.time_base / self.time_base)
        if pts is None:
            pts = 0 if self.last is None else self.last + self.step
        if self.last is not None and pts <= self.last:
            pts = self.last + 1
        self.last = pts
        return pts, self.time_base


def _slack(info: VideoInfo) -> int:
    """How many frames fewer than announced still count as complete: 2 for a count from the header, half a
    second for a count estimated from a duration (which may be the longer audio track's)."""
    return 2 if info.frames_exact else max(2, math.ceil(float(info.fps) / 2))


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
    av = import_av()
    if stats not in STATS_MODES:
        raise ValueError(f"unknown stats mode {stats!r}; choose {' or '.join(STATS_MODES)}")
    if batch_size < 1 or stats_frames < 1:
        raise ValueError("batch_size and stats_frames must be at least 1")
    source, output = Path(source), Path(output)
    outputs = [output] if side_by_side is None else [output, Path(side_by_side)]
    device = pick_device() if device is None else torch.device(device)
    dtype = PRECISIONS[precision]
    container_name = _container_name(av, output)
    if side_by_side is not None and _container_name(av, Path(side_by_side)) != container_name:
        raise VideoError(f"{side_by_side}: the side-by-side video must use the container of {output}")
    descriptor = _check_codec(av, codec or DEFAULT_CODECS[container_name], container_name, output)
    _encoder_options(descriptor.name, crf, preset)  # refuse unsupported quality options before any work
    info = probe_video(source)
    even = _pixel_format(descriptor, container_name) in EVEN_FORMATS
    geometry = _Geometry(
        *_decoded_size(info, size, even),
        turns=_quarter_turns(info.rotation),
        upright_output=container_name == "gif",
    )
    if geometry.width * geometry.height > max_pixels:
        raise VideoError(
            f"{source}: frames of {geometry.width}x{geometry.height} are more than {max_pixels:,} pixels; "
            "give a smaller size (--size)"
        )
    generator = generator.to(device).eval()
    options = plan_tiles(generator, (batch_size, 3, geometry.height, geometry.width), device, tile)
    report = VideoReport(
        source=source, output=output, expected_frames=info.frames, fps=info.fps, tiles=options.tile
    )

    held: contextlib.AbstractContextManager = contextlib.nullcontext()
    if not _has_instance_norm(generator):
        report.stats = "none (the generator has no instance norm)"
    elif stats == "per-frame":
        report.stats = "per frame"
    else:
        clip_stats, used = _clip_statistics(
            av,
            generator,
            info,
            geometry,
            samples=stats_frames,
            stats_size=options.stats_size if options.tiled else None,
            device=device,
            dtype=dtype,
            progress=progress,
        )
        held = fixed_instance_norm_stats(generator, clip_stats)
        report.stats = f"held, averaged over {used} frames"
        if options.tiled:
            options = replace(options, consistent=False)  # the clip's statistics hold for every tile too

    meter = FlickerMeter()
    timestamps = _Timestamps(info)
    pending: list[tuple[np.ndarray, tuple[int, Fraction]]] = []  # decoded frames waiting for a batch
    writers: list[_Writer] = []
    bar = _bar(progress, total=info.frames, desc=source.name)

    def flush() -> None:
        if not pending:
            return
        x = _to_batch([array for array, _ in pending], geometry.turns)  # (B, 3, H, W), upright
        y = translate_tensor(generator, x, tile=options, device=device, precision=precision)
        meter.update(x, y)
        stamps = [stamp for _, stamp in pending]
        for writer in writers:
            frames = torch.cat([x, y], dim=3) if writer.pair else y  # (B, 3, H, W or 2W) as displayed
            if geometry.turns and not geometry.upright_output:
                frames = torch.rot90(frames, -geometry.turns, dims=(2, 3))  # back to the stored orientation
            writer.video_frames(_to_arrays(frames), stamps)
        report.frames += len(pending)
        if bar is not None:
            bar.update(len(pending))
        pending.clear()

    try:
        with contextlib.ExitStack() as stack:
            temporary = [stack.enter_context(atomic_path(path)) for path in outputs]
            container = stack.enter_context(av.open(str(source)))
            stack.enter_context(held)
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            try:
                for index, tmp in enumerate(temporary):
                    writers.append(
                        _Writer(
                            av,
                            tmp,
                            container_name,
                            container,
                            info,
                            geometry,
                            descriptor,
                            pair=index == 1,
                            crf=crf,
                            preset=preset,
                            audio=audio,
                        )
                    )
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
                            pending.append((_frame_array(frame, geometry), timestamps(frame)))
                            if len(pending) >= batch_size:
                                flush()
                except av.error.FFmpegError as err:
                    decoded = report.frames + len(pending)
                    report.damaged = f"damaged: decoding stopped after frame {decoded} ({_reason(err)})"
                flush()
                if report.frames == 0:
                    raise VideoError(f"{source}: no frame could be decoded ({report.damaged or 'empty'})")
                if report.damaged is None and info.frames and report.frames < info.frames - _slack(info):
                    announced = "the header announces" if info.frames_exact else "its duration announces"
                    report.damaged = f"truncated or damaged: decoded {report.frames} of the {info.frames} frames {announced}"
            except BaseException:
                for writer in writers:
                    writer.abort()
                raise
            for writer in writers:
                writer.close()
    except (av.error.FFmpegError, OSError) as err:
        raise VideoError(f"{source}: cannot translate into {output} ({_reason(err)})") from None
    finally:
        if bar is not None:
            bar.close()
    main = writers[0]
    report.codec, report.size, report.rotation, report.audio = (
        main.codec,
        main.size,
        main.rotation,
        main.audio_notes,
    )
    report.flicker = meter.ratio
    return report


# ----------------------------------------------------------------------------- CLI (stylegan-translate)
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
            container_name = _container_name(av, output)
            descriptor = _check_codec(
                av, args.codec or DEFAULT_CODECS[container_name], container_name, output
            )
            _encoder_options(descriptor.name, args.crf, args.preset)
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
            print(f"error: {source}: {_reason(err)}; no output written", file=sys.stderr)
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

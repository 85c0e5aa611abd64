"""Writing the translated frames: containers, codecs and their quality options, pixel formats, timestamps,
GIF palettes, and the audio streams copied or transcoded beside the video.

Invariants: a codec or option the container or the FFmpeg build cannot honour is refused (`VideoError`, one
line) before any work; output timestamps are strictly increasing; the input's colour description is kept;
`Writer.close` always leaves a complete, valid file.
"""

from __future__ import annotations

import contextlib
import io
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from stylegan_transfer.inference.video.frames import Geometry
from stylegan_transfer.inference.video.probe import VideoError, VideoInfo

CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".gif": "gif"}
DEFAULT_CODECS = {
    "mp4": "libx264",
    "mov": "libx264",
    "matroska": "libx264",
    "webm": "libvpx-vp9",
    "gif": "gif",
}
AUDIO_FALLBACK = {"webm": "libopus"}  # any other container: aac
DEFAULT_CRF = {
    "libx264": 18,
    "libx265": 22,
    "libvpx-vp9": 32,
}  # constant quality; other codecs: their defaults
EVEN_FORMATS = frozenset({"yuv420p", "yuvj420p", "nv12", "yuv422p", "yuvj422p"})


# ----------------------------------------------------------------------------- containers and codecs
def container_name(av: Any, output: Path) -> str:
    """FFmpeg's name of the container `output`'s suffix stands for; `VideoError` if unknown or unavailable."""
    name = CONTAINERS.get(output.suffix.lower())
    if name is None:
        known = ", ".join(sorted(CONTAINERS))
        raise VideoError(f"{output}: unknown video container {output.suffix!r}; use one of {known}")
    if name not in av.formats_available:
        raise VideoError(f"{output}: the {name} container is not available in this PyAV/FFmpeg build")
    return name


def check_codec(av: Any, codec: str, container: str, output: Path) -> Any:
    """The encoder `codec`, refused (`VideoError`) unless it is an available video codec `container` holds."""
    try:
        descriptor = av.codec.Codec(codec, "w")
    except Exception:
        raise VideoError(
            f"{output}: the video codec {codec!r} is not available in this PyAV/FFmpeg build; "
            f"the default for {output.suffix} is {DEFAULT_CODECS[container]}"
        ) from None
    if descriptor.type != "video":
        raise VideoError(f"{output}: {codec!r} is not a video codec")
    with av.open(io.BytesIO(), "w", format=container) as probe:
        supported = probe.supported_codecs
    if descriptor.name not in supported:
        raise VideoError(
            f"{output}: the {output.suffix} container cannot hold {codec} video; "
            f"use --codec {DEFAULT_CODECS[container]} or another --video-format"
        )
    return descriptor


def pixel_format(descriptor: Any, container: str) -> str:
    if container == "gif":
        return "pal8"
    formats = [f.name for f in (descriptor.video_formats or [])]
    if not formats or "yuv420p" in formats:
        return "yuv420p"
    return formats[0]


def encoder_options(codec: str, crf: int | None, preset: str | None) -> tuple[dict[str, str], bool]:
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


# ----------------------------------------------------------------------------- timestamps
class Timestamps:
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


# ----------------------------------------------------------------------------- writers
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


class Writer:
    """One output container: the translated video stream plus the audio streams, copied or transcoded."""

    def __init__(
        self,
        av: Any,
        path: Path,
        container: str,
        source: Any,
        info: VideoInfo,
        geometry: Geometry,
        descriptor: Any,
        *,
        pair: bool,
        crf: int | None,
        preset: str | None,
        audio: bool,
    ) -> None:
        self.av, self.pair = av, pair
        self.container = av.open(str(path), "w", format=container)
        self.size = geometry.output_size(pair)
        self.codec = descriptor.name
        self.rotation = 0 if geometry.upright_output else info.rotation
        self.video = self._add_video(container, info, descriptor, crf=crf, preset=preset)
        self.gif = _GifPalette() if container == "gif" else None
        # The input's colour description (matrix, range, primaries, transfer) is kept: the frames are
        # converted back to YUV with the matrix and range they were decoded with, and tagged the same.
        self.colour = info.colour if self.gif is None else (0, 0, 0, 0)
        colorspace, color_range, primaries, transfer = self.colour
        context = self.video.codec_context
        for name, value in (("colorspace", colorspace), ("color_range", color_range),
                            ("color_primaries", primaries), ("color_trc", transfer)):  # fmt: skip
            if value:
                setattr(context, name, value)
        self.audio: dict[int, tuple[Any, bool]] = {}  # input stream index -> (output stream, copy?)
        self.audio_notes: list[str] = []
        for in_audio in source.streams.audio:
            self._add_audio(in_audio, container, keep=audio)

    def _add_video(
        self, container: str, info: VideoInfo, descriptor: Any, *, crf: int | None, preset: str | None
    ) -> Any:
        stream = self.container.add_stream(descriptor.name, rate=info.fps)
        stream.width, stream.height = self.size
        stream.pix_fmt = pixel_format(descriptor, container)
        stream.codec_context.time_base = Fraction(1, 100) if container == "gif" else info.time_base
        options, constant_quality = encoder_options(descriptor.name, crf, preset)
        if constant_quality and descriptor.name == "libvpx-vp9":
            stream.bit_rate = 0
        stream.options = options
        if self.rotation:
            stream.set_display_rotation(self.rotation)
        return stream

    def _add_audio(self, in_audio: Any, container: str, *, keep: bool) -> None:
        """An output stream for the input audio stream `in_audio` (copied where the container can hold its
        codec, else transcoded), or a note saying why it is left out."""
        name = in_audio.codec_context.name
        if not keep:
            self.audio_notes.append(f"{name} left out")
        elif container == "gif":
            self.audio_notes.append(f"{name} dropped (GIF holds no audio)")
        elif name in self.container.supported_codecs:
            self.audio[in_audio.index] = (self.container.add_stream_from_template(in_audio), True)
            self.audio_notes.append(f"copied {name}")
        else:
            target = AUDIO_FALLBACK.get(container, "aac")
            rate = in_audio.codec_context.sample_rate or 48000
            rates = self.av.codec.Codec(target, "w").audio_rates
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

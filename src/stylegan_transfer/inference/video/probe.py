"""What a video file holds (size, rotation, frame rate, frame count, audio, colour), read before any work.

PyAV is imported lazily (`import_av`) so that the base install works without the `[video]` extra; every
problem with a file reaches the user as one `VideoError` line naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".gif"})
INSTALL_HINT = 'pip install "stylegan-transfer[video]"'


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


def reason(err: BaseException) -> str:
    """`err` as one line of text (an OSError's strerror, else its message, else its type's name)."""
    text = getattr(err, "strerror", None) or str(err)
    return re.sub(r"\s+", " ", str(text)).strip() or type(err).__name__


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
        raise VideoError(f"{path}: cannot read video ({reason(err)})") from None

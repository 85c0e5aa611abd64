"""Temporal stability: instance-norm statistics held over a clip, and the flicker meter that measures it.

`clip_statistics` averages every InstanceNorm layer's (mean, var) over frames spread evenly over the clip;
held fixed (`tiling.fixed_instance_norm_stats`) they make the generator one function for every frame.
`FlickerMeter` compares consecutive output frames with consecutive input frames (docs/video.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stylegan_transfer.inference.tiling import autocast, record_instance_norm_stats
from stylegan_transfer.inference.video.frames import Geometry, frame_array, frame_bar, to_batch
from stylegan_transfer.inference.video.probe import VideoError, VideoInfo, reason


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


# ----------------------------------------------------------------------------- held statistics
def has_instance_norm(generator: nn.Module) -> bool:
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


class _Sums:
    """Per-layer running sums of (mean, var) in float64; `average()` divides by the frames added."""

    def __init__(self) -> None:
        self.totals: list[list[torch.Tensor]] | None = None
        self.used = 0

    def add(self, stats: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        if self.totals is None:
            self.totals = [[mean.double(), var.double()] for mean, var in stats]
        else:
            for total, (mean, var) in zip(self.totals, stats, strict=True):
                total[0] += mean.double()
                total[1] += var.double()
        self.used += 1

    def average(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        assert self.totals is not None
        return [((mean / self.used).float(), (var / self.used).float()) for mean, var in self.totals]


def clip_statistics(
    av: Any,
    generator: nn.Module,
    info: VideoInfo,
    geometry: Geometry,
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
    sums = _Sums()
    bar = frame_bar(progress, total=last + 1, desc=f"statistics {info.path.name}")
    try:
        with av.open(str(info.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(_decode_quietly(av, container, stream)):
                if bar is not None:
                    bar.update(1)
                if index in wanted:
                    x = _shrink(to_batch([frame_array(frame, geometry)], geometry.turns), stats_size)
                    with autocast(device, dtype):
                        stats = record_instance_norm_stats(generator, x.to(device))  # (1, C) each
                    sums.add(stats)
                if index >= last:
                    break
    except (av.error.FFmpegError, OSError) as err:
        raise VideoError(f"{info.path}: cannot read video ({reason(err)})") from None
    finally:
        if bar is not None:
            bar.close()
    if sums.totals is None:
        raise VideoError(f"{info.path}: no frame could be decoded")
    return sums.average(), sums.used

"""Decoded frames <-> generator tensors, and the geometry that connects them.

Frames are decoded at the output size in their stored orientation; a rotation of a multiple of 90 degrees
is undone for the generator only (`to_batch`) and, except for GIF, redone before encoding, so the output
keeps the input's stored orientation and rotation metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stylegan_transfer.inference.video.probe import VideoInfo


@dataclass(frozen=True)
class Geometry:
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


def decoded_size(info: VideoInfo, size: int | None, even: bool) -> tuple[int, int]:
    """The stored size, scaled so that its long side is `size` (when given), rounded down to even sides
    (at least 2) when the pixel format needs them."""
    width, height = info.width, info.height
    if size is not None:
        scale = size / max(width, height)
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
    if even:
        width, height = max(2, width - width % 2), max(2, height - height % 2)
    return width, height


def quarter_turns(rotation: int) -> int:
    """Counter-clockwise quarter turns for a rotation in degrees; 0 for angles that are not multiples of 90."""
    return (rotation // 90) % 4 if rotation % 90 == 0 else 0


def frame_array(frame: Any, geometry: Geometry) -> np.ndarray:
    """A decoded frame as (H, W, 3) uint8 RGB at the decode size."""
    return frame.to_ndarray(
        format="rgb24", width=geometry.width, height=geometry.height, interpolation="AREA"
    )


def to_batch(arrays: list[np.ndarray], turns: int) -> torch.Tensor:
    """(H, W, 3) uint8 frames -> (B, 3, H, W) float in [-1, 1], turned upright."""
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return torch.rot90(batch, turns, dims=(2, 3)) if turns else batch


def to_arrays(batch: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return ((batch.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).contiguous().numpy()


def frame_bar(enabled: bool, *, total: int | None, desc: str):
    """A progress bar counting frames, or None when `enabled` is false."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", leave=False, dynamic_ncols=True)

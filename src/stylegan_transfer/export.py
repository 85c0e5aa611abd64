"""Generator-only exports: safetensors weights + JSON metadata, rebuilt through an explicit registry.

Loading never unpickles or instantiates anything named by the file: the metadata's `arch` must be a
key of `networks.GENERATORS` and its `kwargs` are passed as plain keyword arguments. This module
imports neither Lightning, Hydra nor wandb.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from stylegan_transfer import __version__
from stylegan_transfer.networks import GENERATORS, build_generator

FORMAT = "stylegan-transfer/generator"
FORMAT_VERSION = 1


class ExportError(RuntimeError):
    """An export file is missing, corrupt, or not a stylegan-transfer generator."""


def save_generator(
    generator: nn.Module,
    path: str | Path,
    *,
    arch: str,
    kwargs: dict[str, Any],
    direction: str = "AtoB",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `generator`'s weights and everything needed to rebuild and use it. Written atomically."""
    if arch not in GENERATORS:
        raise ValueError(f"unknown generator arch {arch!r}")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "kwargs": kwargs,
        "direction": direction,
        "value_range": [-1.0, 1.0],
        "input": "RGB, H and W padded to a multiple of 4",
        "package_version": __version__,
        **(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"stylegan_transfer": json.dumps(meta)})
    tmp.replace(path)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path} does not exist")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get("stylegan_transfer")
    except (SafetensorError, OSError, ValueError) as err:
        raise ExportError(
            f"{path} is not a readable safetensors file ({err}); re-export the generator."
        ) from err
    if raw is None:
        raise ExportError(
            f"{path} is a safetensors file but not a stylegan-transfer generator export (no metadata)."
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ExportError(f"{path} has corrupt metadata: {err}") from err
    if meta.get("format") != FORMAT:
        raise ExportError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def load_generator(path: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a generator from an export. The result is in eval mode; its metadata is `.export_metadata`."""
    meta = read_metadata(path)
    if meta["arch"] not in GENERATORS:
        raise ExportError(f"{path}: unknown generator arch {meta['arch']!r}; known: {sorted(GENERATORS)}")
    try:
        generator = build_generator(meta["arch"], **meta["kwargs"])
    except TypeError as err:
        raise ExportError(f"{path}: constructor arguments do not fit {meta['arch']}: {err}") from err
    try:
        state = load_file(str(path), device="cpu")
        generator.load_state_dict(state)
    except (SafetensorError, RuntimeError, OSError) as err:
        raise ExportError(
            f"{path}: weights do not match the recorded architecture or are corrupt: {err}"
        ) from err
    generator.export_metadata = meta
    return generator.to(device).eval()

"""The generator file format: safetensors weights + JSON metadata, rebuilt through an explicit registry.

Loading never unpickles or instantiates anything named by the file: the metadata's `arch` must be a
key of `networks.GENERATORS` and its `kwargs` are passed as plain keyword arguments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from stylegan_transfer import __version__
from stylegan_transfer.atomic import atomic_path
from stylegan_transfer.networks import GENERATORS, PAD_MODE, build_generator, size_multiple

FORMAT = "stylegan-transfer/generator"
FORMAT_VERSION = 1


_PLAIN = (bool, int, float, str, type(None))


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
        "input": "RGB",
        "size_multiple": size_multiple(arch, kwargs),
        "pad_mode": PAD_MODE,
        "input_transform": f"to [-1, 1] as (x / 127.5 - 1); pad H and W to size_multiple ({PAD_MODE}), crop back",
        "package_version": __version__,
        **(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"stylegan_transfer": json.dumps(meta)})
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The export's metadata, validated; raises ExportError for missing, corrupt or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path} does not exist; give the path of a .safetensors generator export.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get("stylegan_transfer")
    except (SafetensorError, OSError, ValueError, UnicodeDecodeError) as err:
        raise ExportError(
            f"{path} is not a readable safetensors file ({err}); it may be truncated or another format. "
            "Re-export it with `stylegan-export`."
        ) from err
    if raw is None:
        raise ExportError(
            f"{path} is a safetensors file but not a stylegan-transfer generator export (no metadata)."
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ExportError(f"{path} has corrupt metadata: {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ExportError(f"{path} has format {found!r}, expected {FORMAT!r}")
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ExportError(
            f"{path} uses export format version {version!r}, newer than this package reads "
            f"({FORMAT_VERSION}); upgrade stylegan-transfer."
        )
    if not isinstance(meta.get("arch"), str) or not isinstance(meta.get("kwargs"), dict):
        raise ExportError(f"{path}: metadata lacks a generator 'arch' string and 'kwargs' object.")
    bad = {k: v for k, v in meta["kwargs"].items() if not isinstance(v, _PLAIN)}
    if bad:
        raise ExportError(f"{path}: constructor arguments must be plain values, got {bad!r}")
    return meta


def load_generator(path: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a generator from an export. The result is in eval mode; its metadata is `.export_metadata`.

    `path` may also name a pretrained model (`"style_vangogh"`, see `inference.pretrained`): it is
    downloaded and converted into the cache on first use. A file of that name takes precedence.
    """
    if not Path(path).exists():
        from stylegan_transfer.inference import pretrained  # it imports this module: resolve names lazily

        if pretrained.is_pretrained_name(str(path)):
            path = pretrained.download_pretrained(str(path))
    meta = read_metadata(path)
    if meta["arch"] not in GENERATORS:
        raise ExportError(f"{path}: unknown generator arch {meta['arch']!r}; known: {sorted(GENERATORS)}")
    try:
        generator = build_generator(meta["arch"], **meta["kwargs"])
    except (TypeError, ValueError) as err:
        raise ExportError(f"{path}: constructor arguments do not fit {meta['arch']}: {err}") from err
    try:
        state = load_file(str(path), device="cpu")
        generator.load_state_dict(state)
    except (SafetensorError, RuntimeError, OSError, ValueError) as err:
        raise ExportError(
            f"{path}: weights do not match the recorded architecture or are corrupt: {err}"
        ) from err
    generator.export_metadata = meta
    return generator.to(device).eval()


def generator_multiple(generator: nn.Module) -> int:
    """The size multiple a loaded generator needs (recorded in its metadata; 4 when unknown)."""
    return int(getattr(generator, "export_metadata", {}).get("size_multiple", 4))

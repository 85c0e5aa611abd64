"""The generator file format: safetensors weights + JSON metadata, rebuilt through an explicit registry.

Loading never unpickles or instantiates anything named by the file: the metadata's `arch` must be a
key of `networks.GENERATORS` and its `kwargs` are passed as plain keyword arguments, each checked against
sane bounds (`check_generator_args`, with a parameter budget) before anything is built. Weights holding
NaN or infinite values are refused at load.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, get_args

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from stylegan_transfer import __version__
from stylegan_transfer.atomic import atomic_path
from stylegan_transfer.layers import Norm
from stylegan_transfer.networks import GENERATORS, PAD_MODE, Upsample, build_generator, size_multiple

FORMAT = "stylegan-transfer/generator"
FORMAT_VERSION = 1


_PLAIN = (bool, int, float, str, type(None))
MAX_METADATA_CHARS = 1_000_000  # ours are < 2 kB
MAX_PARAMETERS = 200_000_000  # per generator (the paper's ResNet-9: 11 M, U-Net 256: 54 M)
MAX_SIZE_MULTIPLE = 4096
# Bounds of every constructor argument a generator file may carry (others are refused).
INT_BOUNDS = {"in_channels": (1, 64), "out_channels": (1, 64), "channels": (1, 1024), "n_blocks": (0, 64)}
INT_BOUNDS_BY_ARCH = {"unet": {"num_downs": (5, 12)}}
CHOICES = {"norm": get_args(Norm), "upsample": get_args(Upsample)}
FLAGS = ("dropout", "antialias")


class ExportError(RuntimeError):
    """An export file is missing, corrupt, or not a stylegan-transfer generator."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parameter_count(arch: str, kwargs: dict[str, Any]) -> int:
    """Number of parameters of `arch` built with `kwargs`, counted on the meta device (no memory used)."""
    with torch.device("meta"):
        return sum(p.numel() for p in build_generator(arch, **kwargs).parameters())


def check_generator_args(arch: Any, kwargs: Any) -> None:
    """Raise ValueError (one line, no file name) unless `arch` and `kwargs` are a known generator built
    with arguments within sane bounds and at most MAX_PARAMETERS parameters. Nothing real is built."""
    if not isinstance(arch, str) or arch not in GENERATORS:
        raise ValueError(f"unknown generator arch {arch!r}; known: {sorted(GENERATORS)}")
    if not isinstance(kwargs, dict):
        raise ValueError(f"constructor arguments must be an object, got {type(kwargs).__name__}")
    accepted = {
        name
        for name, param in inspect.signature(GENERATORS[arch]).parameters.items()
        if param.kind is inspect.Parameter.KEYWORD_ONLY
    }
    bounds = {**INT_BOUNDS, **INT_BOUNDS_BY_ARCH.get(arch, {})}
    for key, value in kwargs.items():
        if key not in accepted:
            raise ValueError(f"{arch} takes no argument {key!r} (it takes {', '.join(sorted(accepted))})")
        if key in bounds:
            low, high = bounds[key]
            if not _is_int(value) or not low <= value <= high:
                raise ValueError(f"{key} must be an integer from {low} to {high}, got {value!r}")
        elif key in CHOICES:
            if value not in CHOICES[key] or not isinstance(value, str):
                raise ValueError(f"{key} must be one of {', '.join(CHOICES[key])}, got {value!r}")
        elif key in FLAGS:
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false, got {value!r}")
        else:
            raise ValueError(f"{arch} argument {key!r} is not one a generator file may set")
    try:
        count = parameter_count(arch, kwargs)
    except Exception as err:  # any constructor failure, reported without a traceback
        raise ValueError(f"{arch}{kwargs} cannot be built: {type(err).__name__}: {err}") from None
    if count > MAX_PARAMETERS:
        raise ValueError(
            f"{arch}{kwargs} would have {count:,} parameters, more than the {MAX_PARAMETERS:,} allowed"
        )


def nonfinite_weight(state: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or infinity, or None."""
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return key
    return None


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
    if len(raw) > MAX_METADATA_CHARS:
        raise ExportError(
            f"{path} has {len(raw):,} characters of metadata, more than an export holds; refused."
        )
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as err:  # RecursionError: absurdly nested JSON
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise ExportError(f"{path} has corrupt metadata: {reason}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ExportError(f"{path} has format {found!r}, expected {FORMAT!r}")
    version = meta.get("format_version", 0)
    if not _is_int(version) or version > FORMAT_VERSION:
        raise ExportError(
            f"{path} uses export format version {version!r}, newer than this package reads "
            f"({FORMAT_VERSION}); upgrade stylegan-transfer."
        )
    if not isinstance(meta.get("arch"), str) or not isinstance(meta.get("kwargs"), dict):
        raise ExportError(f"{path}: metadata lacks a generator 'arch' string and 'kwargs' object.")
    bad = {k: v for k, v in meta["kwargs"].items() if not isinstance(v, _PLAIN)}
    if bad:
        raise ExportError(f"{path}: constructor arguments must be plain values, got {bad!r}")
    if meta["arch"] not in GENERATORS:
        raise ExportError(f"{path}: unknown generator arch {meta['arch']!r}; known: {sorted(GENERATORS)}")
    try:
        check_generator_args(meta["arch"], meta["kwargs"])
    except ValueError as err:
        raise ExportError(
            f"{path}: constructor arguments do not fit {meta['arch']}: {err}; the file is damaged or was not "
            "written by stylegan-export."
        ) from None
    multiple = meta.get("size_multiple", 4)
    needed = size_multiple(meta["arch"], meta["kwargs"])
    if not _is_int(multiple) or not 1 <= multiple <= MAX_SIZE_MULTIPLE or multiple % needed:
        raise ExportError(
            f"{path}: size_multiple must be a multiple of {needed} up to {MAX_SIZE_MULTIPLE}, got {multiple!r}; "
            "the file is damaged or was not written by stylegan-export."
        )
    return meta


def load_generator(path: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a generator from an export file. The result is in eval mode; its metadata is `.export_metadata`.

    A file reader only: it never downloads (a pretrained model's name is resolved to its file by
    `pretrained.resolve`, which `translation.load` calls). Every problem (bounds, building, weights that do not
    fit, NaN or infinite weights) is an ExportError of one line naming the file.
    """
    meta = read_metadata(path)  # arch and arguments checked: building cannot exhaust memory
    try:
        generator = build_generator(meta["arch"], **meta["kwargs"])
    except Exception as err:
        raise ExportError(f"{path}: constructor arguments do not fit {meta['arch']}: {err}") from None
    try:
        state = load_file(str(path), device="cpu")
        generator.load_state_dict(state)
    except Exception as err:  # safetensors, torch and the OS raise many types for damaged files
        detail = " ".join(str(err).split())[:300] or type(err).__name__
        raise ExportError(
            f"{path}: weights do not match the recorded architecture or are corrupt: {detail}"
        ) from None
    bad = nonfinite_weight(state)
    if bad is not None:
        raise ExportError(
            f"{path}: weight {bad} holds NaN or infinite values (the training diverged); "
            "export an earlier checkpoint (best.ckpt or an epoch_*.ckpt)."
        )
    generator.export_metadata = meta
    return generator.to(device).eval()


def generator_multiple(generator: nn.Module) -> int:
    """The size multiple a loaded generator needs (recorded in its metadata; 4 when unknown)."""
    return int(getattr(generator, "export_metadata", {}).get("size_multiple", 4))

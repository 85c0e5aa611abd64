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
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from stylegan_transfer import __version__
from stylegan_transfer.networks import GENERATORS, build_generator

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
        "input_transform": "to [-1, 1] as (x / 127.5 - 1); pad H and W to size_multiple (replicate), crop back",
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


def size_multiple(arch: str, kwargs: dict[str, Any]) -> int:
    """Input height and width must be multiples of this for the generator `arch` built with `kwargs`."""
    if arch == "unet":
        return 2 ** int(kwargs.get("num_downs", 8))
    return 4


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
    """Rebuild a generator from an export. The result is in eval mode; its metadata is `.export_metadata`."""
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


class PaddedGenerator(nn.Module):
    """A generator that takes any H and W: pads to `multiple` (replicate) and crops the result back.

    The crop uses `index_select` rather than slicing so that `torch.export` keeps H and W fully dynamic
    (a slice up to the padded size would specialise on whether padding happened).
    """

    def __init__(self, generator: nn.Module, multiple: int) -> None:
        super().__init__()
        self.generator = generator
        self.multiple = int(multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [-1, 1]
        height, width = x.shape[-2], x.shape[-1]
        pad_h = (self.multiple - height % self.multiple) % self.multiple
        pad_w = (self.multiple - width % self.multiple) % self.multiple
        padded = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")  # (B, C, H', W')
        y = self.generator(padded)  # (B, C, H', W')
        rows = torch.arange(height, device=x.device)
        cols = torch.arange(width, device=x.device)
        return y.index_select(2, rows).index_select(3, cols)  # (B, C, H, W)


# ----------------------------------------------------------------------------- Lightning checkpoints
ROLES = {"g_ab": ("a", "b"), "g_ba": ("b", "a")}


def generators_from_checkpoint(
    path: str | Path,
) -> tuple[str, dict[str, Any], dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """Read (arch, kwargs, {role: state_dict}, info) from a Lightning .ckpt without Lightning.

    The file is read with `torch.load(weights_only=True)`, which refuses arbitrary pickled objects.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(
            f"checkpoint {path} does not exist; give a .ckpt file (e.g. <run>/checkpoints/last.ckpt)"
        )
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for corrupt/foreign files
        raise ExportError(
            f"{path} is not a readable Lightning checkpoint ({type(err).__name__}: {err}). "
            "Give a .ckpt written by `train.py` (or a .safetensors export)."
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ExportError(f"{path} is not a Lightning checkpoint (no 'state_dict').")
    hparams = ckpt.get("hyper_parameters") or {}
    gen = hparams.get("generator") if isinstance(hparams, dict) else None
    if not isinstance(gen, dict) or not isinstance(gen.get("arch"), str):
        raise ExportError(
            f"{path} has no generator hyper-parameters ('hyper_parameters.generator.arch'); "
            "it was not written by stylegan-transfer's CycleGANModule."
        )
    kwargs = {k: v for k, v in gen.items() if k != "arch"}
    states: dict[str, dict[str, torch.Tensor]] = {}
    for role in ROLES:
        prefix = role + "."
        state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        if state:
            states[role] = state
    if not states:
        raise ExportError(f"{path} holds no g_ab.* or g_ba.* weights.")
    info = {"epoch": int(ckpt.get("epoch", 0)), "global_step": int(ckpt.get("global_step", 0))}
    return gen["arch"], kwargs, states, info


def generator_from_checkpoint(path: str | Path, role: str = "g_ab") -> nn.Module:
    """Rebuild one generator (eval mode) straight from a Lightning .ckpt."""
    arch, kwargs, states, _ = generators_from_checkpoint(path)
    if role not in states:
        raise ExportError(f"{path} has no {role} weights; it has {sorted(states)}")
    generator = build_generator(arch, **kwargs)
    generator.load_state_dict(states[role])
    generator.export_metadata = {"arch": arch, "kwargs": kwargs, "size_multiple": size_multiple(arch, kwargs)}
    return generator.eval()


def _run_config(checkpoint: Path) -> dict[str, Any]:
    """Style name, domains and preprocessing from the Hydra run folder next to a checkpoint, if present."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        config = folder / ".hydra" / "config.yaml"
        if config.is_file():
            try:
                import yaml

                cfg = yaml.safe_load(config.read_text()) or {}
            except Exception:
                return {}
            style, data = cfg.get("style") or {}, cfg.get("data") or {}
            found = {
                "style": style.get("name"),
                "domain_a": style.get("domain_a"),
                "domain_b": style.get("domain_b"),
                "preprocess": data.get("preprocess"),
                "train_size": data.get("crop_size"),
            }
            # Unresolved interpolations (${...}) carry no information here.
            return {k: v for k, v in found.items() if v is not None and "${" not in str(v)}
    return {}


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    roles: tuple[str, ...] = ("g_ab", "g_ba"),
    style: str | None = None,
    domain_a: str | None = None,
    domain_b: str | None = None,
    onnx: bool = False,
    pt2: bool = False,
    atol: float = 1e-4,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
    log=print,
) -> list[Path]:
    """Export the chosen generators of a Lightning checkpoint as safetensors (+ optional ONNX / .pt2).

    `extra` adds plain values to every file's metadata (e.g. how the checkpoint was selected).
    """
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    arch, kwargs, states, info = generators_from_checkpoint(checkpoint)
    found = _run_config(checkpoint)
    style = style or found.get("style", "")
    domains = {"a": domain_a or found.get("domain_a", "A"), "b": domain_b or found.get("domain_b", "B")}
    written: list[Path] = []
    for role in roles:
        if role not in states:
            raise ExportError(f"{checkpoint} has no {role} weights; it has {sorted(states)}")
        generator = build_generator(arch, **kwargs)
        generator.load_state_dict(states[role])
        generator.eval()
        src, dst = ROLES[role]
        targets = [out_dir / f"{role}.safetensors"]
        if onnx:
            targets.append(out_dir / f"{role}.onnx")
        if pt2:
            targets.append(out_dir / f"{role}.pt2")
        existing = [t for t in targets if t.exists()]
        if existing and not overwrite:
            raise ExportError(f"{existing[0]} already exists; pass --overwrite to replace it.")
        extra = {
            "style": style,
            "role": role,
            "source_checkpoint": checkpoint.name,
            **info,
            **{k: found[k] for k in ("preprocess", "train_size") if k in found},
            **(extra or {}),
        }
        written.append(
            save_generator(
                generator,
                targets[0],
                arch=arch,
                kwargs=kwargs,
                direction=f"{domains[src]} -> {domains[dst]}",
                extra=extra,
            )
        )
        log(f"wrote {targets[0]}")
        if onnx or pt2:
            from stylegan_transfer import exporters

            multiple = size_multiple(arch, kwargs)
            if onnx:
                diff = exporters.export_onnx(
                    generator, out_dir / f"{role}.onnx", multiple=multiple, atol=atol
                )
                written.append(out_dir / f"{role}.onnx")
                log(f"wrote {out_dir / f'{role}.onnx'} (max |onnx - eager| = {diff:.2e})")
            if pt2:
                diff = exporters.export_pt2(generator, out_dir / f"{role}.pt2", multiple=multiple, atol=atol)
                written.append(out_dir / f"{role}.pt2")
                log(f"wrote {out_dir / f'{role}.pt2'} (max |torch.export - eager| = {diff:.2e})")
    return written


def _default_out_dir(checkpoint: Path) -> Path:
    run = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    return run / "export"


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="stylegan-export",
        description="Export the generators of a training checkpoint as safetensors (+ ONNX / torch.export).",
    )
    parser.add_argument("checkpoint", type=Path, help="Lightning .ckpt written by train.py")
    parser.add_argument("-o", "--output", type=Path, help="output folder (default: <run>/export)")
    parser.add_argument(
        "--direction", choices=("ab", "ba", "both"), default="both", help="which generator(s) to export"
    )
    parser.add_argument("--style", help="style name stored in the metadata (default: from the run's config)")
    parser.add_argument("--domain-a", help="name of domain A, e.g. photo (default: from the run's config)")
    parser.add_argument("--domain-b", help="name of domain B, e.g. painting (default: from the run's config)")
    parser.add_argument("--onnx", action="store_true", help="also write <role>.onnx (needs the export extra)")
    parser.add_argument("--pt2", action="store_true", help="also write <role>.pt2 (torch.export)")
    parser.add_argument(
        "--atol", type=float, default=1e-4, help="max allowed |exported - eager| (default 1e-4)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = parser.parse_args(argv)
    roles = {"ab": ("g_ab",), "ba": ("g_ba",), "both": ("g_ab", "g_ba")}[args.direction]
    from stylegan_transfer import exporters

    try:
        export_checkpoint(
            args.checkpoint,
            args.output or _default_out_dir(args.checkpoint),
            roles=roles,
            style=args.style,
            domain_a=args.domain_a,
            domain_b=args.domain_b,
            onnx=args.onnx,
            pt2=args.pt2,
            atol=args.atol,
            overwrite=args.overwrite,
        )
    except (ExportError, exporters.MissingExtraError) as err:
        print(f"stylegan-export: error: {err}", file=sys.stderr)
        return 2
    except exporters.ParityError as err:
        print(f"stylegan-export: parity check FAILED: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

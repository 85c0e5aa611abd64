"""Export generators as files that run anywhere: safetensors (+ ONNX / torch.export), and `stylegan-export`.

    stylegan-export outputs/demo/<run>/checkpoints/last.ckpt [--onnx] [--pt2]
    stylegan-export --from-official checkpoints/horse2zebra/latest_net_G_A.pth [--name horse2zebra]

One function writes every export (`write_generators`): training calls it with its live networks at the
end of a run, the CLI with the networks of a checkpoint. The metadata (style, domains, preprocessing,
training size) comes from the checkpoint itself, written there at train time.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from stylegan_transfer.inference.checkpoint import ROLES, read_checkpoint
from stylegan_transfer.inference.generator_file import ExportError, load_generator, save_generator
from stylegan_transfer.inference.official import convert_official, role_of
from stylegan_transfer.networks import size_multiple

# Run metadata copied into every export when known (written into checkpoints at train time).
RUN_METADATA = ("style", "preprocess", "train_size")


def write_generators(
    generators: dict[str, nn.Module],
    out_dir: str | Path,
    *,
    arch: str,
    kwargs: dict[str, Any],
    metadata: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    onnx: bool = False,
    pt2: bool = False,
    atol: float = 1e-4,
    overwrite: bool = True,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Write `{role: generator}` as `<out_dir>/<role>.safetensors` (+ .onnx / .pt2, parity-checked).

    `metadata` holds the run's plain facts (style, domain_a, domain_b, preprocess, train_size); `extra` adds
    plain values to every file (e.g. how the checkpoint was selected).
    """
    out_dir, metadata = Path(out_dir), dict(metadata or {})
    domains = {"a": metadata.get("domain_a") or "A", "b": metadata.get("domain_b") or "B"}
    written: list[Path] = []
    for role, generator in generators.items():
        targets = [out_dir / f"{role}.safetensors"]
        targets += [out_dir / f"{role}.{ext}" for ext, on in (("onnx", onnx), ("pt2", pt2)) if on]
        existing = [t for t in targets if t.exists()]
        if existing and not overwrite:
            raise ExportError(f"{existing[0]} already exists; pass --overwrite to replace it.")
        src, dst = ROLES[role]
        info = {
            "style": metadata.get("style") or "",
            "role": role,
            **{k: metadata[k] for k in RUN_METADATA[1:] if metadata.get(k) is not None},
            **(extra or {}),
        }
        generator = generator.eval()
        written.append(
            save_generator(
                generator,
                targets[0],
                arch=arch,
                kwargs=kwargs,
                direction=f"{domains[src]} -> {domains[dst]}",
                extra=info,
            )
        )
        log(f"wrote {targets[0]}")
        if onnx or pt2:
            from stylegan_transfer.inference import onnx_pt2

            multiple = size_multiple(arch, kwargs)
            if onnx:
                diff = onnx_pt2.export_onnx(generator, out_dir / f"{role}.onnx", multiple=multiple, atol=atol)
                written.append(out_dir / f"{role}.onnx")
                log(f"wrote {out_dir / f'{role}.onnx'} (max |onnx - eager| = {diff:.2e})")
            if pt2:
                diff = onnx_pt2.export_pt2(generator, out_dir / f"{role}.pt2", multiple=multiple, atol=atol)
                written.append(out_dir / f"{role}.pt2")
                log(f"wrote {out_dir / f'{role}.pt2'} (max |torch.export - eager| = {diff:.2e})")
    return written


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    roles: tuple[str, ...] | None = None,
    style: str | None = None,
    domain_a: str | None = None,
    domain_b: str | None = None,
    onnx: bool = False,
    pt2: bool = False,
    atol: float = 1e-4,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Export the chosen generators of a training checkpoint (`roles` None: every one it holds; their moving
    averages when it kept them); explicit names override the recorded ones."""
    found = read_checkpoint(checkpoint)
    overrides = {"style": style, "domain_a": domain_a, "domain_b": domain_b}
    metadata = {**found.metadata, **{k: v for k, v in overrides.items() if v}}
    roles = tuple(found.states) if roles is None else roles
    generators = {role: found.build(role) for role in roles}
    info = {
        "source_checkpoint": found.path.name,
        "epoch": found.epoch,
        "global_step": found.global_step,
        "ema": all(role in found.ema_roles for role in roles),
    }
    return write_generators(
        generators,
        out_dir,
        arch=found.arch,
        kwargs=found.kwargs,
        metadata=metadata,
        extra={**info, **(extra or {})},
        onnx=onnx,
        pt2=pt2,
        atol=atol,
        overwrite=overwrite,
        log=log,
    )


def official_name(source: str | Path) -> str:
    """A model name for an official `<experiment>/<epoch>_net_<G_A>.pth`: `<experiment>_<G_A>`, else the stem."""
    source = Path(source)
    match = re.fullmatch(r"(?:latest|\d+)_net_(\w+)", source.stem)
    if match and source.parent.name not in ("", "."):
        return f"{source.parent.name}_{match[1]}"
    return source.stem


def export_official(
    source: str | Path,
    out_dir: str | Path | None = None,
    *,
    name: str | None = None,
    style: str | None = None,
    domain_a: str | None = None,
    domain_b: str | None = None,
    role: str | None = None,
    unet_dropout: bool = False,
    onnx: bool = False,
    pt2: bool = False,
    atol: float = 1e-4,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Convert a generator saved by the official CycleGAN/pix2pix code to `<out_dir>/<name>.safetensors`
    (+ .onnx / .pt2). `out_dir` defaults to the source's folder, `name` to `<experiment>_G_A`."""
    source = Path(source)
    name = name or official_name(source)
    out_dir = Path(out_dir) if out_dir is not None else source.parent
    targets = [out_dir / f"{name}.safetensors"]
    targets += [out_dir / f"{name}.{ext}" for ext, on in (("onnx", onnx), ("pt2", pt2)) if on]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise ExportError(f"{existing[0]} already exists; pass --overwrite to replace it.")
    role = role or role_of(source)
    convert_official(
        source,
        targets[0],
        name=name,
        style=style,
        domain_a=domain_a,
        domain_b=domain_b,
        role=role,
        unet_dropout=unet_dropout,
    )
    log(f"wrote {targets[0]}")
    written = [targets[0]]
    if onnx or pt2:
        from stylegan_transfer.inference import onnx_pt2

        generator = load_generator(targets[0])
        multiple = generator.export_metadata["size_multiple"]
        for target in targets[1:]:
            export = onnx_pt2.export_onnx if target.suffix == ".onnx" else onnx_pt2.export_pt2
            diff = export(generator, target, multiple=multiple, atol=atol)
            written.append(target)
            log(f"wrote {target} (max |{target.suffix[1:]} - eager| = {diff:.2e})")
    return written


def _default_out_dir(checkpoint: Path) -> Path:
    run = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    return run / "export"


def build_parser() -> argparse.ArgumentParser:
    """The options of `stylegan-export`."""
    parser = argparse.ArgumentParser(
        prog="stylegan-export",
        description="Export the generators of a training checkpoint, or convert a generator of the official "
        "CycleGAN/pix2pix code, as safetensors (+ ONNX / torch.export).",
    )
    parser.add_argument("checkpoint", type=Path, nargs="?", help="Lightning .ckpt written by train.py")
    parser.add_argument(
        "--from-official",
        type=Path,
        metavar="PTH",
        help="instead: a generator saved by the official CycleGAN/pix2pix code (latest_net_G_A.pth); "
        "architecture inferred from its tensors; writes <output>/<name>.safetensors (default: beside it); "
        "--role g_ab or g_ba sets its direction (default: G_B files are B -> A)",
    )
    parser.add_argument(
        "--name", help="with --from-official: model name and file stem (default: <experiment>_G_A)"
    )
    parser.add_argument(
        "--unet-dropout",
        action="store_true",
        help="with --from-official: record that a U-Net was trained with dropout (no effect at inference)",
    )
    parser.add_argument("-o", "--output", type=Path, help="output folder (default: <run>/export)")
    parser.add_argument(
        "--role",
        choices=("g_ab", "g_ba", "both"),
        default="both",
        help="which generator(s) to export (both: every one the checkpoint holds)",
    )
    parser.add_argument("--style", help="style name stored in the metadata (default: from the checkpoint)")
    parser.add_argument("--domain-a", help="name of domain A, e.g. photo (default: from the checkpoint)")
    parser.add_argument("--domain-b", help="name of domain B, e.g. painting (default: from the checkpoint)")
    parser.add_argument("--onnx", action="store_true", help="also write <role>.onnx (needs the export extra)")
    parser.add_argument("--pt2", action="store_true", help="also write <role>.pt2 (torch.export)")
    parser.add_argument(
        "--atol", type=float, default=1e-4, help="max allowed |exported - eager| (default 1e-4)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.checkpoint is None) == (args.from_official is None):
        parser.error("give either a checkpoint or --from-official PTH")
    roles = None if args.role == "both" else (args.role,)  # both: those the checkpoint has
    from stylegan_transfer.inference import onnx_pt2

    try:
        if args.from_official is not None:
            export_official(
                args.from_official,
                args.output,
                name=args.name,
                style=args.style,
                domain_a=args.domain_a,
                domain_b=args.domain_b,
                role=None if args.role == "both" else args.role,
                unet_dropout=args.unet_dropout,
                onnx=args.onnx,
                pt2=args.pt2,
                atol=args.atol,
                overwrite=args.overwrite,
            )
            return 0
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
    except (ExportError, onnx_pt2.MissingExtraError) as err:
        print(f"stylegan-export: error: {err}", file=sys.stderr)
        return 2
    except onnx_pt2.ParityError as err:
        print(f"stylegan-export: parity check FAILED: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

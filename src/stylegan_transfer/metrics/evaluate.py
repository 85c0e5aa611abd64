"""`stylegan-eval`: FID / KID / LPIPS from the command line.

  stylegan-eval folders REAL_DIR FAKE_DIR [--json out.json]
  stylegan-eval model (--generator g_ab.safetensors | --checkpoint last.ckpt) --data ROOT [--json out.json]
  stylegan-eval weights [--import FILE ...]        # show / fill the weights cache (offline route)

The protocol is in docs/evaluation.md. Imports neither Lightning, Hydra nor wandb.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from stylegan_transfer import atomic
from stylegan_transfer.datasets import DataError, domain_folders
from stylegan_transfer.devices import pick_device
from stylegan_transfer.images import FolderError, list_images, load_rgb, save_image, to_tensor
from stylegan_transfer.inference.checkpoint import generator_from_checkpoint
from stylegan_transfer.inference.generator_file import ExportError, load_generator
from stylegan_transfer.metrics import scores as metrics
from stylegan_transfer.metrics.weights import (
    MetricWeightsError,
    cache_dir,
    import_weights,
    load_inception_features,
    load_lpips,
)


class EvalError(RuntimeError):
    """Bad input for an evaluation; the message names the file and the fix."""


# --------------------------------------------------------------------------- images
def _images(folder: str | Path, role: str) -> list[Path]:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise EvalError(f"{role} folder {folder} does not exist.")
    try:
        files = list_images(folder)
    except FolderError as err:
        raise EvalError(f"{role} {err}") from None
    if len(files) < 2:
        raise EvalError(f"{role} folder {folder} holds {len(files)} image(s); FID and KID need at least 2.")
    return files


def load_image(path: Path, size: int | None = None) -> torch.Tensor:
    """(3, H, W) in [-1, 1]; square bicubic resize to `size` when given (the CycleGAN test preprocessing)."""
    try:
        image = load_rgb(path)
    except OSError as err:
        raise EvalError(f"cannot read image {path}: {err}") from err
    if size:
        image = image.resize((size, size), Image.BICUBIC)
    return to_tensor(image)


def inception_batches(files: Sequence[Path], batch_size: int, desc: str) -> Iterator[torch.Tensor]:
    """Each image resized on its own to 299² (any original size), batched."""
    batch: list[torch.Tensor] = []
    for path in tqdm(files, desc=desc, unit="img", leave=False):
        batch.append(metrics.resize_for_inception(load_image(path)[None])[0])
        if len(batch) == batch_size:
            yield torch.stack(batch)  # (B, 3, 299, 299)
            batch = []
    if batch:
        yield torch.stack(batch)


def distribution_scores(
    features_real: np.ndarray, features_fake: np.ndarray, *, kid_subsets: int, kid_subset_size: int, seed: int
) -> dict[str, float]:
    kid = metrics.kernel_inception_distance(
        features_real, features_fake, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed
    )
    return {
        "fid": metrics.fid_from_features(features_real, features_fake),
        "kid_mean": kid.mean,
        "kid_std": kid.std,
        "kid_subset_size": kid.subset_size,
        "kid_subsets": kid.subsets,
        "n_real": int(features_real.shape[0]),
        "n_fake": int(features_fake.shape[0]),
    }


def evaluate_translation(
    generator: nn.Module,
    inputs: Sequence[Path],
    targets: Sequence[Path],
    *,
    inception: nn.Module,
    lpips_nets: dict[str, nn.Module],
    size: int | None,
    batch_size: int = 8,
    device: str = "cpu",
    save_dir: Path | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Translate every input, score FID/KID against `targets` and LPIPS(input, output)."""
    generator = generator.to(device).eval()
    fake_features, lpips_values = [], {name: [] for name in lpips_nets}
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
    for path in tqdm(inputs, desc="translate", unit="img"):
        real = load_image(path, size)[None].to(device)  # (1, 3, H, W)
        fake = metrics.quantize(metrics.run_generator(generator, real))  # as if saved to 8-bit PNG
        fake_features.append(inception(fake).cpu())
        for name, net in lpips_nets.items():
            lpips_values[name].append(float(net(real, fake)[0]))
        if save_dir is not None:
            save_image(fake[0].cpu(), save_dir / f"{path.stem}.png")
    features_fake = torch.cat(fake_features).numpy()
    features_real = metrics.extract_features(
        inception, inception_batches(targets, batch_size, "target"), device=device
    )
    result = distribution_scores(
        features_real, features_fake, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed
    )
    for name, values in lpips_values.items():
        mean, std = metrics.summarize(values)
        result[f"lpips_{name}_mean"], result[f"lpips_{name}_std"] = mean, std
    return result


# --------------------------------------------------------------------------- output
def format_table(result: dict[str, Any]) -> str:
    rows = [
        ("FID", f"{result['fid']:.3f}"),
        ("KID ×1e3", f"{1e3 * result['kid_mean']:.3f} ± {1e3 * result['kid_std']:.3f}"),
    ]
    for net in ("vgg", "alex"):
        if f"lpips_{net}_mean" in result:
            rows.append(
                (
                    f"LPIPS-{net} (input↔output)",
                    f"{result[f'lpips_{net}_mean']:.4f} ± {result[f'lpips_{net}_std']:.4f}",
                )
            )
    rows.append(("images (real / fake)", f"{result['n_real']} / {result['n_fake']}"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def write_json(result: dict[str, Any], path: Path) -> None:
    atomic.write_text(path, json.dumps(result, indent=2) + "\n")


# --------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stylegan-eval", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", type=Path, help="also write the results to this JSON file")
        p.add_argument(
            "--inception-weights", type=Path, help="local FID Inception weights (see docs/evaluation.md)"
        )
        p.add_argument("--batch-size", type=int, default=16)
        p.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:1, mps")
        p.add_argument("--kid-subsets", type=int, default=100)
        p.add_argument("--kid-subset-size", type=int, default=1000)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--offline", action="store_true", help="never download weights; use the cache only")

    folders = sub.add_parser("folders", help="FID and KID between two image folders")
    folders.add_argument("real", type=Path)
    folders.add_argument("fake", type=Path)
    common(folders)

    model = sub.add_parser("model", help="translate a test split and score it")
    source = model.add_mutually_exclusive_group(required=True)
    source.add_argument("--generator", type=Path, help="an exported generator (.safetensors)")
    source.add_argument("--checkpoint", type=Path, help="a training checkpoint (.ckpt)")
    model.add_argument("--data", type=Path, help="CycleGAN-layout root (uses <split>A and <split>B)")
    model.add_argument("--split", default="test")
    model.add_argument("--input-dir", type=Path, help="instead of --data: the images to translate")
    model.add_argument("--target-dir", type=Path, help="instead of --data: real images of the target domain")
    model.add_argument(
        "--role",
        choices=("g_ab", "g_ba"),
        help="which generator: A→B or B→A (default: the export's, else g_ab)",
    )
    model.add_argument("--size", type=int, default=256, help="square resize of inputs; 0 keeps their size")
    model.add_argument("--lpips", default="vgg,alex", help="comma list of vgg, alex; empty for none")
    model.add_argument(
        "--lpips-weights", type=Path, help="local LPIPS weights (only with a single --lpips net)"
    )
    model.add_argument("--save-dir", type=Path, help="also save the translated images (PNG) here")
    common(model)

    weights = sub.add_parser("weights", help="show the weights cache, or import downloaded packages into it")
    weights.add_argument("--import", dest="imports", type=Path, nargs="*", default=[], metavar="FILE")
    return parser


def _run(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.command == "weights":
        for path in args.imports:
            for written in import_weights(path):
                print(f"imported {path.name} -> {written}")
        folder = cache_dir()
        print(f"cache: {folder}")
        for name in ("fid_inception_v3.safetensors", "lpips_vgg.safetensors", "lpips_alex.safetensors"):
            print(f"  {name:32s} {'present' if (folder / name).is_file() else 'missing'}")
        return None

    args.device = str(pick_device(args.device))
    url_kwargs = {"url": None} if args.offline else {}
    started = time.perf_counter()
    generator = role = None
    if args.command != "folders":  # a bad generator file fails before any weights are fetched
        if args.generator is not None:
            generator = load_generator(args.generator)
            role = args.role or generator.export_metadata.get("role", "g_ab")
        else:
            role = args.role or "g_ab"
            generator = generator_from_checkpoint(args.checkpoint, role)
    inception = load_inception_features(args.inception_weights, **url_kwargs).to(args.device)
    meta: dict[str, Any] = {
        "protocol": "FID Inception 2048-d pool, bilinear 299², [-1, 1]; KID unbiased cubic"
    }
    if args.command == "folders":
        real_files, fake_files = _images(args.real, "real"), _images(args.fake, "fake")
        features = [
            metrics.extract_features(
                inception, inception_batches(files, args.batch_size, desc), device=args.device
            )
            for files, desc in ((real_files, "real"), (fake_files, "fake"))
        ]
        result = distribution_scores(
            *features, kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size, seed=args.seed
        )
        meta |= {"real": str(args.real), "fake": str(args.fake)}
    else:
        if args.generator is not None:
            meta["generator"] = str(args.generator)
        else:
            meta["checkpoint"] = str(args.checkpoint)
        if args.input_dir is not None or args.target_dir is not None:
            if args.input_dir is None or args.target_dir is None:
                raise EvalError("give both --input-dir and --target-dir (or --data)")
            input_dir, target_dir = args.input_dir, args.target_dir
        elif args.data is not None:
            input_dir, target_dir = domain_folders(
                root=args.data, split=args.split, swap_domains=role == "g_ba"
            )
        else:
            raise EvalError("say which images to translate: --data ROOT, or --input-dir and --target-dir")
        nets = [n for n in args.lpips.split(",") if n]
        unknown = sorted(set(nets) - set(metrics.LPIPS_NETS))
        if unknown:
            raise EvalError(f"--lpips: unknown network(s) {unknown}; use vgg and/or alex")
        if args.lpips_weights is not None and len(nets) != 1:
            raise EvalError("--lpips-weights needs exactly one --lpips network")
        lpips_kwargs = {"lin_url": None} if args.offline else {}
        lpips_nets = {n: load_lpips(n, args.lpips_weights, **lpips_kwargs).to(args.device) for n in nets}
        result = evaluate_translation(
            generator,
            _images(input_dir, "input"),
            _images(target_dir, "target"),
            inception=inception,
            lpips_nets=lpips_nets,
            size=args.size or None,
            batch_size=args.batch_size,
            device=args.device,
            save_dir=args.save_dir,
            kid_subsets=args.kid_subsets,
            kid_subset_size=args.kid_subset_size,
            seed=args.seed,
        )
        meta |= {
            "role": role,
            "input": str(input_dir),
            "target": str(target_dir),
            "size": args.size,
        }
    result["seconds"] = round(time.perf_counter() - started, 3)
    result["meta"] = meta
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = _run(args)
    except (EvalError, MetricWeightsError, ExportError, DataError) as err:
        print(f"stylegan-eval: error: {err}", file=sys.stderr)
        return 2
    if result is not None:
        print(format_table(result))
        if args.json is not None:
            write_json(result, args.json)
            print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`stylegan-stylize`: Gatys neural style transfer from the command line.

stylegan-stylize --content photo.jpg --style painting.jpg --output out.png
python -m stylegan_transfer.nst.cli --content c.jpg --style s1.jpg --style s2.jpg --style-weights 0.7,0.3 ...
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from stylegan_transfer.devices import pick_device
from stylegan_transfer.images import save_image
from stylegan_transfer.nst import mmd
from stylegan_transfer.nst.stylize import StyleSettings, StylizeError, read_image, stylize
from stylegan_transfer.perceptual import VGGWeightsError, load_vgg_features


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    d = StyleSettings()
    p = argparse.ArgumentParser(
        prog="stylegan-stylize",
        description="Neural style transfer by optimisation (Gatys et al.), Gram or MMD style loss.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--content", required=True, help="content photo")
    p.add_argument("--style", action="append", required=True, help="style image (repeat to blend styles)")
    p.add_argument("--style-weights", type=_floats, help="blend weights, one per --style, e.g. 0.7,0.3")
    p.add_argument("--output", required=True, help="output image (.png, .jpg)")
    p.add_argument(
        "--size", type=int, default=512, help="long side of the output (when --scales is not given)"
    )
    p.add_argument(
        "--scales", type=_ints, help="coarse-to-fine long sides, e.g. 256,512 (last = output size)"
    )
    p.add_argument(
        "--style-scale", type=float, default=d.style_scale, help="style size relative to the output"
    )
    p.add_argument("--iterations", type=int, default=d.iterations, help="iterations per scale")
    p.add_argument("--optimizer", choices=["lbfgs", "adam"], default=d.optimizer)
    p.add_argument("--lr", type=float, help="step size (default 1.0 for lbfgs, 0.02 for adam)")
    p.add_argument("--init", choices=["content", "noise", "style"], default=d.init)
    p.add_argument("--content-weight", type=float, default=d.content_weight)
    p.add_argument("--style-weight", type=float, default=d.style_weight)
    p.add_argument("--tv-weight", type=float, default=d.tv_weight)
    p.add_argument("--content-layers", type=_names, default=list(d.content_layers))
    p.add_argument("--style-layers", type=_names, default=list(d.style_layers))
    p.add_argument("--style-layer-weights", type=_floats, help="one per style layer (default equal)")
    p.add_argument("--style-loss", choices=["gram", "mmd"], default=d.style_loss)
    p.add_argument("--kernel", choices=list(mmd.KERNELS), default=d.kernel, help="MMD kernel")
    p.add_argument("--degree", type=int, default=d.degree, help="polynomial kernel degree")
    p.add_argument("--offset", type=float, default=d.offset, help="polynomial kernel offset c in (x·y + c)^d")
    p.add_argument("--bandwidth", type=float, help="Gaussian kernel σ (default: median heuristic per layer)")
    p.add_argument("--max-samples", type=int, default=d.max_samples, help="MMD positions sampled per layer")
    p.add_argument("--preserve-color", choices=["none", "luminance", "histogram"], default=d.preserve_color)
    p.add_argument("--save-every", type=int, default=0, help="write an intermediate image every N iterations")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--vgg-weights", help="local VGG19 weights (torchvision state dict or quantised Caffe .bin)"
    )
    p.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = pick_device(args.device)
    lr = args.lr if args.lr is not None else (1.0 if args.optimizer == "lbfgs" else 0.02)
    settings = StyleSettings(
        content_weight=args.content_weight,
        style_weight=args.style_weight,
        tv_weight=args.tv_weight,
        content_layers=args.content_layers,
        style_layers=args.style_layers,
        style_layer_weights=args.style_layer_weights,
        style_loss=args.style_loss,
        kernel=args.kernel,
        degree=args.degree,
        offset=args.offset,
        bandwidth=args.bandwidth,
        max_samples=args.max_samples,
        optimizer=args.optimizer,
        iterations=args.iterations,
        lr=lr,
        init=args.init,
        scales=args.scales or [args.size],
        style_scale=args.style_scale,
        preserve_color=args.preserve_color,
        seed=args.seed,
    )
    output = Path(args.output)
    try:
        if output.suffix.lower() not in Image.registered_extensions():
            raise StylizeError(f"output {output} has no known image extension; use .png or .jpg")
        content = read_image(args.content)
        styles = [read_image(path) for path in args.style]
        features = load_vgg_features("vgg19", weights_path=args.vgg_weights)
        torch.manual_seed(args.seed)

        def save_intermediate(scale_index: int, iteration: int, image: torch.Tensor, _terms) -> None:
            if args.save_every and iteration % args.save_every == 0:
                tag = f"_s{scale_index}" if len(settings.scales) > 1 else ""
                save_image(image, output.with_name(f"{output.stem}{tag}_{iteration:04d}{output.suffix}"))

        image, history = stylize(
            content,
            styles,
            features,
            settings=settings,
            style_weights=args.style_weights,
            device=device,
            callback=save_intermediate if args.save_every else None,
            progress=not args.no_progress,
        )
        save_image(image, output)
    except (StylizeError, VGGWeightsError) as err:
        print(f"stylegan-stylize: error: {err}", file=sys.stderr)
        return 2
    last = history[-1]
    print(
        f"wrote {output} ({image.shape[-1]}x{image.shape[-2]}); final loss {last['total']:.4g} "
        f"(content {last['content']:.4g}, style {last['style']:.4g}, tv {last['tv']:.4g})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

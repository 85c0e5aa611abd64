"""Draw docs/tiling.png: untiled vs naive tiling vs tiling with fixed instance-norm statistics.

    PYTHONPATH=src python scripts/make_tiling_figure.py --generator outputs/demo/<run>/export/g_ab.safetensors

Top row: the photo and the generator's untiled output. Bottom row: naive tiles (every tile normalised
with its own statistics: seams and colour jumps) and consistent tiles (statistics recorded once on the
whole image, tiles blended). The photo is docs/assets/canyon03.jpg (public domain, see docs/tiling.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from stylegan_transfer.images import load_rgb, to_image, to_tensor
from stylegan_transfer.inference.tiling import TileOptions
from stylegan_transfer.inference.translation import load, translate_tensor

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--generator", required=True, type=Path, help=".safetensors export or .ckpt")
    parser.add_argument("--photo", type=Path, default=DOCS / "assets" / "canyon03.jpg")
    parser.add_argument("--width", type=int, default=512, help="resize the photo to this width first")
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--output", type=Path, default=DOCS / "tiling.png")
    args = parser.parse_args()

    torch.set_num_threads(2)
    generator = load(args.generator)
    photo = load_rgb(args.photo)
    photo = photo.resize((args.width, round(photo.height * args.width / photo.width)), Image.BICUBIC)
    x = to_tensor(photo).unsqueeze(0)  # (1, 3, H, W)
    full = translate_tensor(generator, x, device="cpu")
    results = {"untiled": full}
    for name, consistent in (("naive", False), ("consistent", True)):
        options = TileOptions(tile=args.tile, overlap=args.overlap, consistent=consistent)
        results[name] = translate_tensor(generator, x, tile=options, device="cpu")
    errors = {k: (v - full).abs().mul(127.5) for k, v in results.items() if k != "untiled"}
    for name, err in errors.items():
        print(f"{name}: max |tiled - untiled| = {err.max():.1f}/255, mean = {err.mean():.2f}/255")

    labels = [
        ("photo", photo),
        ("untiled output", to_image(full)),
        (
            f"naive {args.tile}px tiles (mean err {errors['naive'].mean():.1f}/255)",
            to_image(results["naive"]),
        ),
        (
            f"fixed-statistics tiles (mean err {errors['consistent'].mean():.1f}/255)",
            to_image(results["consistent"]),
        ),
    ]
    w, h, bar = photo.width, photo.height, 18
    canvas = Image.new("RGB", (2 * w + 4, 2 * (h + bar) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (label, image) in enumerate(labels):
        left, top = (i % 2) * (w + 4), (i // 2) * (h + bar + 4)
        draw.text((left + 4, top + 3), label, fill=(0, 0, 0))
        canvas.paste(image, (left, top + bar))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    # 256 colours, no dithering: a third of the size, and no dither noise to hide or fake seams.
    canvas = canvas.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    canvas.save(args.output, optimize=True)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

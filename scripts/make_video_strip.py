"""A frame strip (and optionally a short GIF) of a video translation, made by a real run, for docs/video.md.

    PYTHONPATH=src python scripts/make_video_strip.py --checkpoint outputs/demo/<run>/export/g_ab.safetensors \
        --input clip.mp4 --output docs/images/video_strip.jpg --gif docs/images/video.gif

Rows: input frames, the translation with held (clip) statistics and, with `--per-frame-row`, the translation
with per-frame statistics, at `--frames` moments spread evenly over the clip; `--gif` also writes the input
and the held translation side by side as an animated GIF. Without `--input` the clip is a slow pan across
a demo photo (`--photo`, default assets/demo/testA/canyon03.jpg, upscaled): real content, camera motion.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from stylegan_transfer.atomic import atomic_path
from stylegan_transfer.inference.translation import load
from stylegan_transfer.inference.video import import_av, translate_video

DEMO = Path(__file__).resolve().parents[1] / "src/stylegan_transfer/assets/demo/testA"


def pan_clip(photo: Path, path: Path, *, width: int, height: int, frames: int, fps: int) -> Path:
    """Encode a slow horizontal pan across `photo` (upscaled to 1.5x the frame width) as H.264."""
    av = import_av()
    image = Image.open(photo).convert("RGB")
    scale = max(1.5 * width / image.width, height / image.height)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    wide = np.asarray(image)[:height]
    step = (wide.shape[1] - width) / max(1, frames - 1)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "16"}
        for i in range(frames):
            x0 = round(i * step)
            frame = av.VideoFrame.from_ndarray(wide[:, x0 : x0 + width].copy(), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def decode(path: Path) -> list[np.ndarray]:
    av = import_av()
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def strip(rows: list[tuple[str, list[np.ndarray]]], picks: list[int], height: int) -> Image.Image:
    """One row per (label, frames): the picked frames scaled to `height`, with a 4 px white gutter."""
    gutter, label_width = 4, 90
    first = Image.fromarray(rows[0][1][0])
    width = round(first.width * height / first.height)
    canvas = Image.new(
        "RGB",
        (label_width + len(picks) * (width + gutter), len(rows) * (height + gutter)),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(canvas)
    for r, (label, frames) in enumerate(rows):
        top = r * (height + gutter)
        draw.text((4, top + height // 2 - 6), label, fill=(0, 0, 0))
        for c, index in enumerate(picks):
            tile = Image.fromarray(frames[index]).resize((width, height), Image.LANCZOS)
            canvas.paste(tile, (label_width + c * (width + gutter), top))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="generator export (.safetensors) or .ckpt")
    parser.add_argument("--input", type=Path, help="a video; default: a pan across --photo")
    parser.add_argument("--photo", type=Path, default=DEMO / "canyon03.jpg")
    parser.add_argument("--output", type=Path, required=True, help="the strip image (.jpg or .png)")
    parser.add_argument("--gif", type=Path, help="also write input | translation as an animated GIF")
    parser.add_argument("--frames", type=int, default=6, help="frames in the strip")
    parser.add_argument("--height", type=int, default=128, help="height of a frame in the strip")
    parser.add_argument("--size", type=int, default=None, help="long side to translate at (default: kept)")
    parser.add_argument("--per-frame-row", action="store_true", help="add per-frame statistics as a row")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    generator = load(args.checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = args.input or pan_clip(args.photo, tmp / "pan.mp4", width=256, height=160, frames=48, fps=24)
        options = {"size": args.size, "device": args.device, "crf": 14}
        held = translate_video(generator, source, tmp / "held.mp4", **options)
        inputs = decode(source)
        if args.size:  # show the input at the size it was translated at
            inputs = [np.asarray(Image.fromarray(f).resize(held.size, Image.LANCZOS)) for f in inputs]
        rows = [("input", inputs), ("held stats", decode(tmp / "held.mp4"))]
        summary = [f"held: flicker ratio {held.flicker:.3f}"]
        if args.per_frame_row:
            per_frame = translate_video(
                generator, source, tmp / "per_frame.mp4", stats="per-frame", **options
            )
            rows.append(("per-frame", decode(tmp / "per_frame.mp4")))
            summary.append(f"per-frame: flicker ratio {per_frame.flicker:.3f}")
        count = min(len(frames) for _, frames in rows)
        picks = sorted({round(i * (count - 1) / max(1, args.frames - 1)) for i in range(args.frames)})
        with atomic_path(args.output) as out:
            strip(rows, picks, args.height).save(out, quality=92)
        if args.gif:
            gif_options = {"size": args.size, "device": args.device}  # GIF: no --crf
            translate_video(generator, source, tmp / "held.gif", side_by_side=args.gif, **gif_options)
    print(f"{args.output}: frames {picks} of {count}; " + "; ".join(summary))


if __name__ == "__main__":
    main()

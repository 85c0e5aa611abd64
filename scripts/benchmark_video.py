"""Video benchmarks: flicker ratio with held vs per-frame statistics, CPU frames/s at 480p, peak memory at 1080p.

    PYTHONPATH=src python scripts/benchmark_video.py --only flicker          # three generated clips
    PYTHONPATH=src python scripts/benchmark_video.py --only fps --frames 4   # 854x480
    PYTHONPATH=src python scripts/benchmark_video.py --only memory --frames 2 --size 1920x1080
    PYTHONPATH=src python scripts/benchmark_video.py --only fps --device cuda --generator paper --precision bf16 \
        --frames 120 --batch-size 8 --size 1920x1080                    # a GPU, the paper-size network

The generator is a ResNet with the demo's sizes (channels 32, n_blocks 6; `--generator paper`: 64, 9) and random weights initialised
as in training: speed and memory do not depend on the weights, but flicker ratios of a random network
only show how the two kinds of statistics differ; a trained generator gives its own numbers (run
`--checkpoint export/g_ab.safetensors`). The clips are generated from a demo photo
(assets/demo/testA/canyon03.jpg, upscaled): "pan", a slow horizontal camera pan; "lamp", the still photo
with random brightness noise in one corner (a flickering light); "global", the still photo with random
brightness noise over the whole frame. The flicker clips are encoded losslessly (x264 crf 0, 4:4:4), so the
ratios measure the translation, not compression noise. Every measurement runs in a fresh child process;
peak memory is the child's VmHWM (its highest resident set size: Python, torch, FFmpeg and all).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEMO_PHOTO = Path(__file__).resolve().parents[1] / "src/stylegan_transfer/assets/demo/testA/canyon03.jpg"
GENERATORS = {"demo": {"channels": 32, "n_blocks": 6}, "paper": {"channels": 64, "n_blocks": 9}}


def _generator(checkpoint: str | None, size: str = "demo"):
    import torch

    from stylegan_transfer.inference.translation import load
    from stylegan_transfer.networks import build_generator, init_weights

    if checkpoint:
        return load(checkpoint)
    torch.manual_seed(0)
    return init_weights(build_generator("resnet", **GENERATORS[size])).eval()


def _photo(width: int, height: int):
    """The demo photo, upscaled (bicubic) and centre-cropped to (height, width, 3) uint8."""
    import numpy as np
    from PIL import Image

    image = Image.open(DEMO_PHOTO).convert("RGB")
    scale = max(width / image.width, height / image.height)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return np.asarray(image.crop((left, top, left + width, top + height)))


def clip_frames(kind: str, count: int, width: int, height: int, seed: int = 0) -> list:
    import numpy as np

    rng = np.random.default_rng(seed)
    if kind == "pan":  # a window sliding across a photo 1.5x as wide
        wide = _photo(round(width * 1.5), height)
        step = (wide.shape[1] - width) / max(1, count - 1)
        return [wide[:, round(i * step) : round(i * step) + width].copy() for i in range(count)]
    still = _photo(width, height).astype(np.float32)
    frames = []
    for _ in range(count):
        frame = still.copy()
        if kind == "global":
            frame += rng.normal(0, 12)
        elif kind == "lamp":
            frame[: height // 4, : width // 4] += rng.normal(0, 40)
        else:
            raise ValueError(kind)
        frames.append(frame.clip(0, 255).astype(np.uint8))
    return frames


def write_clip(path: Path, frames: list, *, fps: int = 25, lossless: bool = False) -> Path:
    import av

    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv444p" if lossless else "yuv420p"
        stream.options = {"crf": "0" if lossless else "18", "preset": "ultrafast"}
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def _vm_hwm_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


# ----------------------------------------------------------------------------- children
def child_flicker(args: argparse.Namespace) -> dict:
    import torch

    from stylegan_transfer.inference.video import translate_video

    torch.set_num_threads(args.threads)
    generator = _generator(args.checkpoint)
    width, height = (int(v) for v in args.flicker_size.split("x"))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("pan", "lamp", "global"):
            clip = write_clip(
                Path(tmp) / f"{kind}.mkv", clip_frames(kind, args.frames, width, height), lossless=True
            )
            row = {}
            for stats in ("clip", "per-frame"):
                start = time.perf_counter()
                report = translate_video(
                    generator,
                    clip,
                    Path(tmp) / f"{kind}_{stats}.mkv",
                    stats=stats,
                    stats_frames=args.stats_frames,
                    device="cpu",
                    crf=0,
                )
                row[stats] = {
                    "flicker": round(report.flicker, 3),
                    "seconds": round(time.perf_counter() - start, 1),
                }
            rows[kind] = row
    return {"measure": "flicker", "size": args.flicker_size, "frames": args.frames, "clips": rows}


def child_speed(args: argparse.Namespace, size: str) -> dict:
    """Translate a generated clip of `size`, timing the statistics pass and the translation pass apart."""
    import torch

    from stylegan_transfer.inference.video import translate_video

    torch.set_num_threads(args.threads)
    generator = _generator(args.checkpoint, args.generator)
    width, height = (int(v) for v in size.split("x"))
    calls: list[tuple[float, float]] = []  # (wall time, process CPU time) at every generator call
    generator.register_forward_pre_hook(
        lambda _module, _inputs: calls.append((time.perf_counter(), time.process_time()))
    )
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(Path(tmp) / "clip.mp4", clip_frames("pan", args.frames, width, height))
        before = _vm_hwm_mib()
        start, cpu_start = time.perf_counter(), time.process_time()
        report = translate_video(
            generator,
            clip,
            Path(tmp) / "out.mp4",
            stats=args.stats,
            stats_frames=args.stats_frames,
            batch_size=args.batch_size,
            tile=args.tile,
            device=args.device,
            precision=args.precision,
        )
        if args.device != "cpu":
            torch.cuda.synchronize()
        total, cpu_end = time.perf_counter() - start, time.process_time()
    stats_calls = args.stats_frames if args.stats == "clip" else 0  # the statistics pass comes first
    translate_start, cpu_translate_start = (
        calls[stats_calls] if len(calls) > stats_calls else (start, cpu_start)
    )
    return {
        "measure": "speed",
        "size": size,
        "frames": report.frames,
        "batch_size": args.batch_size,
        "tile": args.tile,
        "stats": report.stats,
        "threads": args.threads,
        "device": torch.cuda.get_device_name() if args.device != "cpu" else "cpu",
        "generator": args.checkpoint or f"random {args.generator} ResNet {GENERATORS[args.generator]}",
        "precision": args.precision,
        "stats_pass_s": round(translate_start - start, 1),
        "translate_pass_s": round(start + total - translate_start, 1),
        "fps_translate_pass": round(report.frames / (start + total - translate_start), 3),
        "fps_overall": round(report.frames / total, 3),
        "cpu_s_per_frame_translate_pass": round((cpu_end - cpu_translate_start) / report.frames, 2),
        "peak_mib_before": round(before, 1),
        "peak_mib": round(_vm_hwm_mib(), 1),
    }


def run_child(argv: list[str]) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", *argv], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=("flicker", "fps", "memory"))
    parser.add_argument(
        "--checkpoint", help="a generator export to use instead of the random demo-size ResNet"
    )
    parser.add_argument("--frames", type=int, default=None, help="frames per clip")
    parser.add_argument("--flicker-size", default="128x96")
    parser.add_argument("--size", default=None, help="WxH for fps (854x480) or memory (1920x1080)")
    parser.add_argument("--stats", choices=("clip", "per-frame"), default="clip")
    parser.add_argument("--stats-frames", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--tile", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu | cuda (fps and memory measures)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument(
        "--generator",
        choices=sorted(GENERATORS),
        default="demo",
        help="random network's size (paper: 64 ch, 9 blocks)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.only == "flicker":
            print(json.dumps(child_flicker(args)))
        else:
            print(json.dumps(child_speed(args, args.size)))
        return
    from importlib.metadata import version

    about = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps({**about, "torch": version("torch"), "av": version("av")}))
    defaults = {
        "flicker": {"frames": 10, "stats_frames": 4, "batch_size": 4, "size": None},
        "fps": {"frames": 4, "stats_frames": 2, "batch_size": 4, "size": "854x480"},
        "memory": {"frames": 2, "stats_frames": 1, "batch_size": 1, "size": "1920x1080"},
    }
    for measure in [args.only] if args.only else ["flicker", "fps", "memory"]:
        chosen = {key: getattr(args, key) or value for key, value in defaults[measure].items()}
        argv = ["--only", measure, "--threads", str(args.threads), "--flicker-size", args.flicker_size]
        argv += ["--device", args.device, "--precision", args.precision, "--generator", args.generator]
        argv += ["--stats", args.stats, "--frames", str(chosen["frames"])]
        argv += ["--stats-frames", str(chosen["stats_frames"]), "--batch-size", str(chosen["batch_size"])]
        if chosen["size"]:
            argv += ["--size", chosen["size"]]
        if args.tile:
            argv += ["--tile", str(args.tile)]
        if args.checkpoint:
            argv += ["--checkpoint", args.checkpoint]
        print(json.dumps(run_child(argv)), flush=True)


if __name__ == "__main__":
    main()

"""Benchmark tiled translation: peak memory and time on a 6000x4000 image, tiled-vs-untiled difference.

    PYTHONPATH=src python scripts/benchmark_translate.py                 # both measurements
    PYTHONPATH=src python scripts/benchmark_translate.py --only memory --size 6000x4000 --tile 1024

Uses the paper-size generator (ResNet-9, 64 channels) with random weights (init as in training): memory
and speed do not depend on the weights. Each measurement runs in a fresh child process so that its peak
resident memory (ru_maxrss, which includes Python and torch themselves) belongs to that measurement alone.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

GENERATOR = {"channels": 64, "n_blocks": 9}


def _generator():
    import torch

    from stylegan_transfer.networks import build_generator, init_weights

    torch.manual_seed(0)
    return init_weights(build_generator("resnet", **GENERATOR)).eval()


def _photo_like(width: int, height: int):
    """A smooth colour field with fine noise, built without full-size float arrays."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 256, (height // 64 + 2, width // 64 + 2, 3), dtype=np.uint8))
    image = coarse.resize((width, height), Image.BICUBIC)
    noise = Image.effect_noise((width, height), 24).convert("RGB")
    return Image.blend(image, noise, 0.15)


class _Stop(Exception):
    pass


def child_memory(size: str, tile: int, overlap: int, threads: int, max_tiles: int) -> dict:
    import torch

    from stylegan_transfer.inference.tiling import TileOptions
    from stylegan_transfer.inference.translation import translate

    torch.set_num_threads(threads)
    width, height = (int(v) for v in size.split("x"))
    generator = _generator()
    image = _photo_like(width, height)
    calls: list[float] = []

    def count(_module, _inputs):  # call 1 is the statistics pass, then one call per tile
        calls.append(time.perf_counter())
        if max_tiles and len(calls) > max_tiles + 1:
            raise _Stop

    generator.register_forward_pre_hook(count)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    try:
        result = translate(generator, image, tile=TileOptions(tile=tile, overlap=overlap), device="cpu")
        assert result.size == image.size
        completed = True
    except _Stop:
        completed = False
    seconds = time.perf_counter() - start
    tiles_done = len(calls) - 1 - (0 if completed else 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "measure": "memory",
        "size": size,
        "tile": tile,
        "overlap": overlap,
        "threads": threads,
        "peak_rss_mib": round(peak, 1),
        "rss_before_translate_mib": round(baseline, 1),
        "seconds": round(seconds, 1),
        "completed": completed,
        "tiles_done": tiles_done,
        "stats_pass_s": round(calls[1] - calls[0], 1) if len(calls) > 1 else None,
        "per_tile_s": round((calls[-1] - calls[1]) / max(1, len(calls) - 2), 1) if len(calls) > 2 else None,
    }


def child_difference(side: int, tile: int, overlap: int, threads: int) -> dict:
    import torch

    from stylegan_transfer.images import to_tensor
    from stylegan_transfer.inference.tiling import TileOptions
    from stylegan_transfer.inference.translation import translate_tensor

    torch.set_num_threads(threads)
    generator = _generator()
    x = to_tensor(_photo_like(side, side)).unsqueeze(0)  # (1, 3, side, side)
    start = time.perf_counter()
    full = translate_tensor(generator, x, device="cpu")
    untiled_s = time.perf_counter() - start
    out = {
        "measure": "difference",
        "side": side,
        "tile": tile,
        "overlap": overlap,
        "untiled_s": round(untiled_s, 1),
    }
    for name, consistent in (("consistent", True), ("naive", False)):
        options = TileOptions(tile=tile, overlap=overlap, consistent=consistent)
        start = time.perf_counter()
        tiled = translate_tensor(generator, x, tile=options, device="cpu")
        diff = (tiled - full).abs() * 127.5  # in 8-bit levels
        out[name] = {
            "max_abs_8bit": round(diff.max().item(), 2),
            "mean_abs_8bit": round(diff.mean().item(), 3),
            "seconds": round(time.perf_counter() - start, 1),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=("memory", "difference"))
    parser.add_argument("--size", default="6000x4000", help="WxH of the memory benchmark image")
    parser.add_argument("--tile", type=int, default=1024, help="tile size of the memory benchmark")
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--diff-side", type=int, default=1024)
    parser.add_argument("--diff-tile", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--max-tiles", type=int, default=0, help="stop the memory run after this many tiles (0: all)"
    )
    parser.add_argument("--child", choices=("memory", "difference"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "memory":
        print(json.dumps(child_memory(args.size, args.tile, args.overlap, args.threads, args.max_tiles)))
        return
    if args.child == "difference":
        print(json.dumps(child_difference(args.diff_side, args.diff_tile, args.overlap, args.threads)))
        return
    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, python {platform.python_version()}"
    )
    for measure in ("memory", "difference"):
        if args.only and args.only != measure:
            continue
        cmd = [sys.executable, __file__, "--child", measure, *sys.argv[1:]]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            sys.exit(f"{measure} benchmark failed:\n{result.stderr}")
        print(result.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()

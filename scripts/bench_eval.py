"""Seconds per in-training KID evaluation (`metric_callbacks.KIDEvaluation.evaluate`).

  PYTHONPATH=src python scripts/bench_eval.py [--device cpu|cuda] [--num-images 50 100] [--size 64 256]

Uses the demo images shipped in the package (repeated to reach N) and the real FID Inception weights
when they are in the cache (otherwise random weights of the same architecture: same cost). The first
evaluation also extracts the target features (done once per run); later ones translate N images with
g_ab and extract their features. Prints one line per setting.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import time
from types import SimpleNamespace

import torch

from stylegan_transfer.images import list_images
from stylegan_transfer.metrics import scores as metrics
from stylegan_transfer.metrics.weights import MetricWeightsError, load_fid_inception
from stylegan_transfer.networks import build_generator
from stylegan_transfer.training.launch import ASSETS
from stylegan_transfer.training.quality import KIDEvaluation


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--num-images", type=int, nargs="+", default=[50, 100])
    parser.add_argument("--size", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    try:
        network, weights = load_fid_inception(url=None), "real"
    except MetricWeightsError:
        network, weights = metrics.FIDInceptionV3().eval(), "random (same architecture and cost)"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device={device} ({name}), torch threads={torch.get_num_threads()}, Inception weights: {weights}")
    files_a = list_images(ASSETS / "demo" / "trainA")
    files_b = list_images(ASSETS / "demo" / "trainB")
    for size, count in itertools.product(args.size, args.num_images):
        channels, blocks = (32, 6) if size <= 128 else (64, 9)  # demo model vs the paper's 256 px model
        generator = build_generator("resnet", channels=channels, n_blocks=blocks).to(device).eval()
        callback = KIDEvaluation(num_images=count, kid_subsets=50)
        callback.inception = metrics.InceptionFeatures(network)
        cycle_a, cycle_b = itertools.cycle(files_a), itertools.cycle(files_b)
        callback.prepare(
            [next(cycle_a) for _ in range(count)], [next(cycle_b) for _ in range(count)], size=size
        )
        module = SimpleNamespace(g_ab=generator, device=device)
        timings, cpu_seconds = [], []
        for _ in range(args.repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            started, cpu_started = time.perf_counter(), time.process_time()
            scores = callback.evaluate(module)
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings.append(time.perf_counter() - started)
            cpu_seconds.append(time.process_time() - cpu_started)
        later = sum(timings[1:]) / len(timings[1:])
        later_cpu = sum(cpu_seconds[1:]) / len(cpu_seconds[1:])
        print(
            f"size={size:4d} images={count:4d} generator=resnet(c{channels},b{blocks}) "
            f"first={timings[0]:.2f}s (incl. target features) later={later:.2f}s/eval "
            f"(process CPU time {later_cpu:.2f}s) "
            f"val/kid={scores['val/kid']:.4f}"
        )


if __name__ == "__main__":
    main()

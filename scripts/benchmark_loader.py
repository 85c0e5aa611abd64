"""Input-pipeline throughput: images/s of the training DataLoader at 256² for several worker counts.

python scripts/benchmark_loader.py                       # workers 0, 2 and os.cpu_count()
python scripts/benchmark_loader.py --workers 0 2 16 --samples 2000 --preprocess resize_and_crop

Builds a temporary CycleGAN-layout dataset of JPEGs (the official datasets are 256x256 JPEGs; use
--source-size 512 for larger photos), then times the real UnpairedDataModule train loader: decode,
resize 286, random crop 256, flip, to tensor, collate. One training sample holds two images (A and B);
images/s counts both. Worker start-up is excluded (timing starts at the first batch).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stylegan_transfer.images import list_images, load_rgb
from stylegan_transfer.training.data import UnpairedDataModule
from stylegan_transfer.training.unpaired import Augment


def make_dataset(root: Path, *, count: int, size: int, seed: int = 0) -> None:
    """Photo-like JPEGs (smooth gradients plus texture), like the datasets' 256x256 quality-95 files."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    for split in ("trainA", "trainB"):
        folder = root / split
        folder.mkdir(parents=True)
        for i in range(count):
            phase = rng.uniform(0, 6.28, 3)
            base = np.stack([np.sin(6 * x + 4 * y + p) for p in phase], -1) * 80 + 128
            texture = rng.normal(0, 18, (size, size, 3))
            image = np.clip(base + texture, 0, 255).astype(np.uint8)
            Image.fromarray(image).save(folder / f"{i:05d}.jpg", quality=95)


def measure(root: Path, *, workers: int, samples: int, batch_size: int, preprocess: str, crop: int) -> float:
    """Training samples per second of the train DataLoader in steady state."""
    dm = UnpairedDataModule(
        root=str(root),
        preprocess=preprocess,
        load_size=round(crop * 286 / 256),
        crop_size=crop,
        batch_size=batch_size,
        num_workers=workers,
        seed=0,
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    seen, start, epoch = 0, None, 0
    while seen < samples:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            if start is None:  # exclude worker start-up and the first batch
                start = time.perf_counter()
                continue
            seen += batch["a"].shape[0]
            if seen >= samples:
                break
        epoch += 1
    elapsed = time.perf_counter() - start
    del loader
    return seen / elapsed


def profile_stages(root: Path, *, preprocess: str, crop: int, repeats: int = 3) -> dict[str, float]:
    """CPU milliseconds per image for each stage (thread CPU time, so other load on the machine barely matters)."""
    augment = Augment(preprocess=preprocess, load_size=round(crop * 286 / 256), crop_size=crop)
    files = list_images(root / "trainA")
    rng = np.random.default_rng(0)
    totals = {"decode": 0.0, "augment + to_tensor": 0.0}
    for _ in range(repeats):
        for path in files:
            t0 = time.thread_time()
            image = load_rgb(path, draft_size=augment.draft_size)
            t1 = time.thread_time()
            augment(image, rng)  # (3, H, W) tensor: augmentation ends with the conversion
            t2 = time.thread_time()
            totals["decode"] += t1 - t0
            totals["augment + to_tensor"] += t2 - t1
    count = repeats * len(files)
    return {k: 1000 * v / count for k, v in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="default: 0 2 <cpu count>")
    parser.add_argument("--samples", type=int, default=1000, help="training samples timed per setting")
    parser.add_argument("--images", type=int, default=200, help="generated images per domain")
    parser.add_argument("--source-size", type=int, default=256, help="side of the generated JPEGs")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument(
        "--preprocess",
        default="resize_and_crop",
        choices=["resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none"],
    )
    args = parser.parse_args()
    workers = args.workers if args.workers is not None else sorted({0, 2, os.cpu_count() or 1})
    torch.set_num_threads(1)  # as in DataLoader workers

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    )
    print(
        f"pipeline: {args.source_size}² JPEG -> {args.preprocess} (crop {args.crop}) + flip, "
        f"batch {args.batch_size}, {args.samples} samples per setting"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_dataset(root, count=args.images, size=args.source_size)
        stages = profile_stages(root, preprocess=args.preprocess, crop=args.crop)
        per_image = sum(stages.values())
        print(
            "CPU time per image: "
            + ", ".join(f"{k} {v:.2f} ms" for k, v in stages.items())
            + f" = {per_image:.2f} ms CPU -> at most {1000 / per_image:.0f} images/s per core"
        )
        print(f"{'workers':>8} {'samples/s':>10} {'images/s':>10}")
        for n in workers:
            rate = measure(
                root,
                workers=n,
                samples=args.samples,
                batch_size=args.batch_size,
                preprocess=args.preprocess,
                crop=args.crop,
            )
            print(f"{n:>8} {rate:>10.0f} {2 * rate:>10.0f}", flush=True)


if __name__ == "__main__":
    main()

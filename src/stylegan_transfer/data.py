"""Unpaired image data: listing, robust loading, deterministic augmentation and the DataModule.

Randomness is stateless: every training sample is addressed by a key `epoch * length + position`, and the
A index, the random B index, crops and flips all derive from `(seed, epoch, position)`. The same run
therefore sees the same samples whatever the number of workers, and a resumed run continues exactly.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, Sampler

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
Preprocess = Literal["resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none"]
PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")


class DataError(RuntimeError):
    """A dataset folder is missing, empty or unusable; the message says which and what to do."""


def list_images(folder: str | Path, *, recursive: bool = True) -> list[Path]:
    """Sorted image files under `folder` (by extension; other files are ignored)."""
    folder = Path(folder)
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def load_rgb(path: str | Path) -> Image.Image:
    """Open any image as 8-bit RGB: EXIF rotation applied, 16-bit scaled (not clipped), alpha on white."""
    with Image.open(path) as image:
        image.load()  # decode now so truncated files fail here, naming the file
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            array = np.asarray(image, dtype=np.float64)
            top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
            image = Image.fromarray(np.clip(array * (255.0 / top) + 0.5, 0, 255).astype(np.uint8), mode="L")
        elif image.mode == "F":
            array = np.asarray(image, dtype=np.float64)
            image = Image.fromarray(np.clip(array * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
        if image.mode == "P":
            image = image.convert("RGBA")
        if image.mode in ("RGBA", "LA", "PA"):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image)
        return image.convert("RGB")


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float32 in [-1, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def to_image(tensor: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] -> PIL RGB."""
    array = ((tensor.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, mode="RGB")


@dataclass(frozen=True)
class Augment:
    """Training preprocessing, as the CycleGAN reference names it."""

    preprocess: Preprocess = "resize_and_crop"
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True

    def __post_init__(self) -> None:
        if self.preprocess not in PREPROCESS_MODES:
            raise ValueError(f"unknown preprocess {self.preprocess!r}; choose one of {PREPROCESS_MODES}")

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        w, h = image.size
        if self.preprocess == "resize_and_crop":
            image = image.resize((self.load_size, self.load_size), Image.BICUBIC)
        elif self.preprocess.startswith("scale_width"):
            target_w = self.load_size if self.preprocess == "scale_width_and_crop" else self.crop_size
            new_h = max(self.crop_size if "crop" in self.preprocess else 4, round(h * target_w / w))
            image = image.resize((target_w, new_h), Image.BICUBIC)
        if self.preprocess in ("resize_and_crop", "crop", "scale_width_and_crop"):
            w, h = image.size
            if w < self.crop_size or h < self.crop_size:  # small images: upscale so the crop fits
                scale = self.crop_size / min(w, h)
                image = image.resize((math.ceil(w * scale), math.ceil(h * scale)), Image.BICUBIC)
                w, h = image.size
            x = int(rng.integers(0, w - self.crop_size + 1))
            y = int(rng.integers(0, h - self.crop_size + 1))
            image = image.crop((x, y, x + self.crop_size, y + self.crop_size))
        else:  # scale_width / none: round down to a multiple of 4 for the generator's two downsamplings
            w, h = image.size
            image = image.crop((0, 0, max(4, w - w % 4), max(4, h - h % 4)))
        if self.flip and rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return image


class UnpairedDataset(Dataset):
    """Training samples {"a", "b"} addressed by key = epoch * len(self) + position."""

    def __init__(
        self,
        files_a: Sequence[Path],
        files_b: Sequence[Path],
        *,
        augment: Augment,
        seed: int = 0,
        max_dataset_size: int | None = None,
    ) -> None:
        if not files_a or not files_b:
            raise DataError("both domains need at least one image")
        self.files_a, self.files_b = list(files_a), list(files_b)
        self.augment, self.seed = augment, seed
        self.length = max(len(self.files_a), len(self.files_b))
        if max_dataset_size is not None:
            self.length = min(self.length, max_dataset_size)
        self._perm_epoch, self._perm = -1, np.arange(0)
        self._warned: set[Path] = set()

    def __len__(self) -> int:
        return self.length

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.files_a))
            self._perm_epoch = epoch
        return self._perm

    def _load(self, files: list[Path], index: int, rng: np.random.Generator) -> torch.Tensor:
        for attempt in range(len(files)):
            path = files[(index + attempt) % len(files)]
            try:
                return to_tensor(self.augment(load_rgb(path), rng))
            except (OSError, ValueError, Image.DecompressionBombError) as err:
                if path not in self._warned:
                    self._warned.add(path)
                    log.warning("skipping unreadable image %s (%s)", path, err)
        raise DataError(f"no readable image among {len(files)} files (first: {files[0]})")

    def __getitem__(self, key: int) -> dict[str, torch.Tensor]:
        epoch, position = divmod(int(key), self.length)
        index_a = int(self._permutation(epoch)[position % len(self.files_a)])
        rng = np.random.default_rng([self.seed, epoch, position])
        index_b = int(rng.integers(len(self.files_b)))
        rng_a, rng_b = rng.spawn(2)
        return {"a": self._load(self.files_a, index_a, rng_a), "b": self._load(self.files_b, index_b, rng_b)}


class UnpairedSampler(Sampler[int]):
    """Yields keys `epoch * length + position`; shards positions over `world_size` ranks (DDP)."""

    def __init__(self, length: int, *, rank: int = 0, world_size: int = 1) -> None:
        self.length, self.rank, self.world_size = length, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # called by Lightning before every epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.length / self.world_size)

    def __iter__(self) -> Iterator[int]:
        base = self.epoch * self.length
        for j in range(len(self)):
            yield base + (self.rank + j * self.world_size) % self.length


class PairedEvalDataset(Dataset):
    """Fixed validation pairs (a_i, b_i): deterministic square resize, no augmentation."""

    def __init__(self, files_a: Sequence[Path], files_b: Sequence[Path], *, size: int, count: int) -> None:
        self.files_a, self.files_b = list(files_a)[:count], list(files_b)[:count]
        self.size = size

    def __len__(self) -> int:
        return max(len(self.files_a), len(self.files_b))

    def _load(self, path: Path) -> torch.Tensor:
        return to_tensor(load_rgb(path).resize((self.size, self.size), Image.BICUBIC))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "a": self._load(self.files_a[index % len(self.files_a)]),
            "b": self._load(self.files_b[index % len(self.files_b)]),
        }


def resolve_folders(
    *, root: str | Path | None, dir_a: str | Path | None, dir_b: str | Path | None, split: str
) -> tuple[Path, Path]:
    """Folders for domains A and B: explicit `dir_a`/`dir_b`, else `root/{split}A` and `root/{split}B`."""
    if dir_a is not None or dir_b is not None:
        if dir_a is None or dir_b is None:
            raise DataError("give both data.dir_a and data.dir_b (or neither, and data.root)")
        return Path(dir_a).expanduser(), Path(dir_b).expanduser()
    if root is None:
        raise DataError(
            "no data given: set data.root to a CycleGAN-layout folder or data.dir_a and data.dir_b"
        )
    root = Path(root).expanduser()
    return root / f"{split}A", root / f"{split}B"


class UnpairedDataModule(L.LightningDataModule):
    """Two image folders (CycleGAN layout `trainA/ trainB/ testA/ testB/`, or two explicit folders)."""

    def __init__(
        self,
        *,
        root: str | None = None,
        dir_a: str | None = None,
        dir_b: str | None = None,
        direction: Literal["AtoB", "BtoA"] = "AtoB",
        preprocess: Preprocess = "resize_and_crop",
        load_size: int = 286,
        crop_size: int = 256,
        flip: bool = True,
        batch_size: int = 1,
        num_workers: int = 4,
        val_size: int = 8,
        max_dataset_size: int | None = None,
        seed: int = 0,
        missing_hint: str = "",
    ) -> None:
        super().__init__()
        if direction not in ("AtoB", "BtoA"):
            raise ValueError(f"direction must be AtoB or BtoA, not {direction!r}")
        self.root, self.dir_a, self.dir_b = root, dir_a, dir_b
        self.direction = direction
        self.augment = Augment(preprocess=preprocess, load_size=load_size, crop_size=crop_size, flip=flip)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.val_size, self.max_dataset_size, self.seed = val_size, max_dataset_size, seed
        self.missing_hint = missing_hint
        self.train_set: UnpairedDataset | None = None
        self.val_set: PairedEvalDataset | None = None

    def _files(self, split: str, *, required: bool) -> tuple[list[Path], list[Path]] | None:
        folder_a, folder_b = resolve_folders(root=self.root, dir_a=self.dir_a, dir_b=self.dir_b, split=split)
        if self.direction == "BtoA":
            folder_a, folder_b = folder_b, folder_a
        found = []
        for name, folder in (("A", folder_a), ("B", folder_b)):
            if not folder.is_dir():
                if not required:
                    return None
                hint = f"\n{self.missing_hint}" if self.missing_hint else ""
                raise DataError(f"domain {name} folder {folder} does not exist.{hint}")
            files = list_images(folder)
            if not files:
                if not required:
                    return None
                raise DataError(
                    f"domain {name} folder {folder} contains no images "
                    f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))})."
                )
            found.append(files)
        return found[0], found[1]

    def check(self) -> None:
        """Fail fast (before any training is set up) if a training folder is missing or empty."""
        self._files("train", required=True)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        files_a, files_b = self._files("train", required=True)  # type: ignore[misc]
        self.train_set = UnpairedDataset(
            files_a, files_b, augment=self.augment, seed=self.seed, max_dataset_size=self.max_dataset_size
        )
        explicit = self.dir_a is not None
        test = None if explicit else self._files("test", required=False)
        val_a, val_b = test if test is not None else (files_a, files_b)
        self.val_set = PairedEvalDataset(val_a, val_b, size=self.augment.crop_size, count=self.val_size)

    def _loader(self, dataset: Dataset, **kwargs) -> DataLoader:
        workers = min(self.num_workers, os.cpu_count() or 1)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sampler = UnpairedSampler(len(self.train_set), rank=rank, world_size=world)
        return self._loader(self.train_set, sampler=sampler, drop_last=False)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None
        return DataLoader(self.val_set, batch_size=max(1, len(self.val_set)), num_workers=0, shuffle=False)

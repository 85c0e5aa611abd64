"""Unpaired image data: listing, robust loading, deterministic augmentation and the DataModule.

Randomness is stateless: every training sample is addressed by a key `epoch * length + position`, and the
A index, the random B index, crops and flips all derive from `(seed, epoch, position)`. The same run
therefore sees the same samples whatever the number of workers, and a resumed run continues exactly.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from stylegan_transfer.datasets import DataError, domain_folders
from stylegan_transfer.images import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    FolderError,
    list_images,
    load_rgb,
    scan_images,
    to_tensor,
)
from stylegan_transfer.networks import pad_to_multiple
from stylegan_transfer.training import settings

log = logging.getLogger(__name__)

Preprocess = Literal["resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none"]
PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")


# Modes whose variable output sizes cannot be stacked into batches larger than one.
VARIABLE_SIZE_MODES = ("scale_width", "none")


@dataclass(frozen=True)
class Augment:
    """Training preprocessing, as the CycleGAN reference names it.

    resize_and_crop: resize to load_size², random crop_size² crop.  crop: random crop at full size.
    scale_width: width -> load_size (height in proportion, at least crop_size).  scale_width_and_crop:
    that, then a random crop.  none: keep the size, pad to a multiple of 4 (`networks.pad_to_multiple`, the
    one border mode of the package).  Images smaller than a crop are first enlarged to fit it.  `flip`:
    random horizontal flip.  Returns (3, H, W) in [-1, 1].
    """

    preprocess: Preprocess = "resize_and_crop"
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True

    def __post_init__(self) -> None:
        if self.preprocess not in PREPROCESS_MODES:
            raise ValueError(f"unknown preprocess {self.preprocess!r}; choose one of {PREPROCESS_MODES}")
        if self.crop_size < 4 or self.load_size < 4:
            raise ValueError("load_size and crop_size must be at least 4")
        if self.preprocess in ("resize_and_crop", "scale_width_and_crop") and self.load_size < self.crop_size:
            raise ValueError(f"load_size ({self.load_size}) must be >= crop_size ({self.crop_size})")

    @property
    def draft_size(self) -> int | None:
        """The smallest side JPEG decoding may shrink to without changing the result's resolution."""
        if self.preprocess in ("resize_and_crop", "scale_width", "scale_width_and_crop"):
            return self.load_size
        return None  # crop / none work at the original resolution

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        w, h = image.size
        if self.preprocess == "resize_and_crop":
            new_w, new_h = self.load_size, self.load_size
        elif self.preprocess.startswith("scale_width"):
            new_w, new_h = self.load_size, max(self.crop_size, round(h * self.load_size / w))
        else:  # crop / none: original resolution
            new_w, new_h = w, h
        if self.preprocess in ("resize_and_crop", "crop", "scale_width_and_crop"):
            if new_w < self.crop_size or new_h < self.crop_size:  # small images: enlarge so the crop fits
                scale = self.crop_size / min(new_w, new_h)
                new_w, new_h = math.ceil(new_w * scale), math.ceil(new_h * scale)
            x = int(rng.integers(0, new_w - self.crop_size + 1))
            y = int(rng.integers(0, new_h - self.crop_size + 1))
            if (new_w, new_h) == (w, h):
                image = image.crop((x, y, x + self.crop_size, y + self.crop_size))
            else:  # resize only the cropped region: same pixels as resize-then-crop, ~30% less work
                sx, sy = w / new_w, h / new_h
                box = (x * sx, y * sy, (x + self.crop_size) * sx, (y + self.crop_size) * sy)
                image = image.resize((self.crop_size, self.crop_size), Image.BICUBIC, box=box)
        elif (new_w, new_h) != (w, h):  # scale_width / none
            image = image.resize((new_w, new_h), Image.BICUBIC)
        x = to_tensor(image)  # (3, H, W)
        if self.preprocess in VARIABLE_SIZE_MODES:  # the generator's two downsamplings need multiples of 4
            x = pad_to_multiple(x, 4)
        if self.flip and rng.random() < 0.5:
            x = x.flip(-1)
        return x


class BadFiles:
    """Which files failed to decode, shared by every DataLoader worker and the validation set: each bad
    file is named once per run (one warning), and skipped by all at once. The flags live in a shared-memory
    tensor, so workers see each other's findings."""

    def __init__(self, files: Sequence[Path]) -> None:
        self.index = {path: i for i, path in enumerate(dict.fromkeys(files))}
        self.flags = torch.zeros(max(1, len(self.index)), dtype=torch.uint8).share_memory_()

    def __contains__(self, path: Path) -> bool:
        i = self.index.get(path)
        return i is not None and bool(self.flags[i])

    def report(self, path: Path, err: BaseException) -> None:
        """Mark `path` bad; warn unless another worker already did."""
        i = self.index.get(path)
        if i is not None:
            if self.flags[i]:
                return
            self.flags[i] = 1
        log.warning("skipping %s: %s: %s (using the next image instead)", path, type(err).__name__, err)


def load_first_good(
    files: Sequence[Path], index: int, bad: BadFiles, *, draft_size: int | None
) -> tuple[Path, Image.Image]:
    """Image `index`, or (if it fails to decode) the next good one: one bad file never stops training.
    Raises DataError (one line) when no file of the folder decodes."""
    for attempt in range(len(files)):
        path = files[(index + attempt) % len(files)]
        if path in bad:
            continue
        try:
            return path, load_rgb(path, draft_size=draft_size)
        except Exception as err:  # damaged data raises OSError, SyntaxError, zlib/struct errors ...
            bad.report(path, err)
    raise DataError(
        f"no image of {files[0].parent} could be decoded ({len(files)} files, each named in a warning above); "
        "replace the damaged files or point the data settings at another folder."
    )


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
        bad_files: BadFiles | None = None,
    ) -> None:
        if not files_a or not files_b:
            raise DataError("both domains need at least one image")
        # max_dataset_size: the first files of each domain, as in the CycleGAN reference (a subset of the
        # data, not a number of samples per epoch); an epoch visits every file of the larger domain once
        limit = max_dataset_size if max_dataset_size is not None else None
        self.files_a, self.files_b = list(files_a)[:limit], list(files_b)[:limit]
        self.augment, self.seed = augment, seed
        self.length = max(len(self.files_a), len(self.files_b))
        self._perm_epoch, self._perm = -1, np.arange(0)
        self._bad = bad_files if bad_files is not None else BadFiles([*self.files_a, *self.files_b])

    def __len__(self) -> int:
        return self.length

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.files_a))
            self._perm_epoch = epoch
        return self._perm

    def _load(self, files: list[Path], index: int, rng: np.random.Generator) -> torch.Tensor:
        _, image = load_first_good(files, index, self._bad, draft_size=self.augment.draft_size)
        return self.augment(image, rng)

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
        self.skip_once = 0  # positions of this rank already trained in the epoch being resumed

    def set_epoch(self, epoch: int) -> None:  # called by Lightning before every epoch
        self.epoch = epoch

    def __len__(self) -> int:  # the whole epoch, also when resuming in its middle (Lightning counts on it)
        return math.ceil(self.length / self.world_size)

    def __iter__(self) -> Iterator[int]:
        base = self.epoch * self.length
        start, self.skip_once = self.skip_once, 0
        for j in range(start, len(self)):
            yield base + (self.rank + j * self.world_size) % self.length


class ResumableLoader(DataLoader):
    """The training DataLoader with Lightning's `state_dict` / `load_state_dict` interface, so that resuming
    from a checkpoint written in the middle of an epoch (interrupted.ckpt) skips exactly the batches that
    epoch already trained instead of starting its data over. `progress()` gives {"epoch", "completed"}."""

    def __init__(self, *args, progress: Callable[[], dict[str, int]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._progress = progress

    def state_dict(self) -> dict[str, int]:
        return dict(self._progress())

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Called by Lightning only when resuming inside an epoch, before the epoch's iterator is made."""
        sampler = self.sampler
        if isinstance(sampler, UnpairedSampler) and self.batch_size:
            completed = int(state.get("completed", 0))
            if 0 < completed < len(self):
                sampler.set_epoch(int(state.get("epoch", sampler.epoch)))
                sampler.skip_once = completed * self.batch_size


class PairedEvalDataset(Dataset):
    """Fixed validation pairs (a_i, b_i): deterministic square resize, no augmentation.

    A file that fails to decode is replaced by the next good one of its domain (warned once).
    """

    def __init__(
        self,
        files_a: Sequence[Path],
        files_b: Sequence[Path],
        *,
        size: int,
        count: int,
        bad_files: BadFiles | None = None,
    ) -> None:
        self.all_a, self.all_b = list(files_a), list(files_b)
        self.files_a, self.files_b = self.all_a[:count], self.all_b[:count]
        self.size = size
        self._bad = bad_files if bad_files is not None else BadFiles([*self.all_a, *self.all_b])

    def __len__(self) -> int:
        return max(len(self.files_a), len(self.files_b))

    def _load(self, files: list[Path], index: int) -> torch.Tensor:
        _, image = load_first_good(files, index, self._bad, draft_size=self.size)
        return to_tensor(image.resize((self.size, self.size), Image.BICUBIC))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "a": self._load(self.all_a, index % len(self.files_a)),
            "b": self._load(self.all_b, index % len(self.files_b)),
        }


class UnpairedDataModule(L.LightningDataModule):
    """Two image folders (CycleGAN layout `trainA/ trainB/ testA/ testB/`, or two explicit folders).

    `download=True` with `dataset=<name of the CycleGAN collection>` fetches a missing dataset into
    `root` first (see stylegan_transfer.datasets). Files are checked once (header only) when the
    module is set up; unusable ones are skipped with a warning each and a count.
    """

    def __init__(
        self,
        *,
        root: str | None = None,
        dir_a: str | None = None,
        dir_b: str | None = None,
        swap_domains: bool = False,
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
        download: bool = False,
        dataset: str | None = None,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        super().__init__()
        settings.count("batch_size", batch_size, low=1)
        settings.count("num_workers", num_workers)
        settings.count("val_size", val_size, low=1)  # validation and sample grids need a pair
        settings.count("max_dataset_size", max_dataset_size, low=1, optional=True)
        settings.count("load_size", load_size, low=4)
        settings.count("crop_size", crop_size, low=4)
        self.root, self.dir_a, self.dir_b = root, dir_a, dir_b
        self.swap_domains = bool(swap_domains)
        self.augment = Augment(preprocess=preprocess, load_size=load_size, crop_size=crop_size, flip=flip)
        if preprocess in VARIABLE_SIZE_MODES and batch_size != 1:
            raise ValueError(
                f"preprocess={preprocess} gives images of different sizes, which cannot be stacked into "
                f"batches of {batch_size}: use data.batch_size=1, or preprocess=scale_width_and_crop / "
                "resize_and_crop for fixed-size crops."
            )
        self.batch_size, self.num_workers = batch_size, num_workers
        self.val_size, self.max_dataset_size, self.seed = val_size, max_dataset_size, seed
        self.missing_hint = missing_hint
        self.download, self.dataset, self.max_pixels = download, dataset, max_pixels
        self.train_set: UnpairedDataset | None = None
        self.val_set: PairedEvalDataset | None = None
        self.bad_files: BadFiles | None = None
        self._scanned: dict[Path, list[Path]] = {}

    def _folders(self, split: str) -> tuple[Path, Path]:
        return domain_folders(
            root=self.root, dir_a=self.dir_a, dir_b=self.dir_b, split=split, swap_domains=self.swap_domains
        )

    def evaluation_files(self, count: int) -> tuple[list[Path], list[Path]]:
        """The first `count` images of domains A and B: the test split if present, else the training folders."""
        explicit = self.dir_a is not None
        for split in ("train",) if explicit else ("test", "train"):
            folder_a, folder_b = self._folders(split)
            files_a = list_images(folder_a) if folder_a.is_dir() else []
            files_b = list_images(folder_b) if folder_b.is_dir() else []
            if len(files_a) >= 2 and len(files_b) >= 2:
                return files_a[:count], files_b[:count]
        raise DataError(
            f"KID evaluation (model selection) needs at least 2 images in each domain; {self._folders('train')} "
            "hold fewer. Add images, or select by another metric: callbacks.kid=null "
            "callbacks.best.monitor=val/cycle_l1 callbacks.export_best.monitor=val/cycle_l1"
        )

    def _scan(self, folder: Path, label: str) -> list[Path]:
        if folder not in self._scanned:
            self._scanned[folder] = scan_images(folder, label=label, max_pixels=self.max_pixels)
        return self._scanned[folder]

    def _files(self, split: str, *, required: bool) -> tuple[list[Path], list[Path]] | None:
        found = []
        for name, folder in zip(("A", "B"), self._folders(split), strict=True):
            if not folder.is_dir():
                if not required:
                    return None
                hint = f"\n{self.missing_hint}" if self.missing_hint else ""
                raise DataError(f"domain {name} folder {folder} does not exist.{hint}")
            try:
                listed = list_images(folder)
            except FolderError as err:
                raise DataError(f"domain {name}: {err}; check its permissions.") from None
            if not listed:
                if not required:
                    return None
                raise DataError(
                    f"domain {name} folder {folder} contains no images "
                    f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))})."
                )
            files = self._scan(folder, name)
            if not files:
                if not required:
                    return None
                raise DataError(
                    f"domain {name} folder {folder} has no usable image: every file was skipped "
                    "(see the warnings above for each file and why)."
                )
            found.append(files)
        return found[0], found[1]

    def _download_if_missing(self) -> None:
        if not self.download or self.root is None or self.dir_a is not None or self.dir_b is not None:
            return
        if all(folder.is_dir() for folder in self._folders("train")):
            return
        if not self.dataset:
            raise DataError("data.download=true needs a dataset name (style.dataset), e.g. style=vangogh")
        from stylegan_transfer.datasets import DownloadError, download_dataset  # only when downloading

        try:
            download_dataset(self.dataset, target=Path(self.root).expanduser())
        except DownloadError as err:
            raise DataError(str(err)) from None

    def prepare_data(self) -> None:
        self._download_if_missing()

    def check(self) -> None:
        """Fail fast (before any training is set up) if a training folder is missing or has no usable image.

        Downloads the dataset first when `download=True` and it is missing.
        """
        self._download_if_missing()
        self._files("train", required=True)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        files_a, files_b = self._files("train", required=True)  # type: ignore[misc]
        explicit = self.dir_a is not None
        test = None if explicit else self._files("test", required=False)
        val_a, val_b = test if test is not None else (files_a, files_b)
        bad = BadFiles([*files_a, *files_b, *val_a, *val_b])  # one warning per bad file per run
        self.bad_files = bad  # also used by the KID callback
        self.train_set = UnpairedDataset(
            files_a,
            files_b,
            augment=self.augment,
            seed=self.seed,
            max_dataset_size=self.max_dataset_size,
            bad_files=bad,
        )
        self.val_set = PairedEvalDataset(
            val_a, val_b, size=self.augment.crop_size, count=self.val_size, bad_files=bad
        )

    def _loader(self, dataset: Dataset, *, loader: type[DataLoader] = DataLoader, **kwargs) -> DataLoader:
        workers = min(self.num_workers, os.cpu_count() or 1)
        return loader(
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
        return self._loader(
            self.train_set,
            sampler=sampler,
            drop_last=False,
            loader=ResumableLoader,
            progress=self._epoch_progress,
        )

    def _epoch_progress(self) -> dict[str, int]:
        """The epoch and how many of its batches were trained (what a mid-epoch resume must skip)."""
        trainer = self.trainer
        if trainer is None:
            return {"epoch": 0, "completed": 0}
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": int(trainer.current_epoch), "completed": int(progress.completed)}

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None
        return DataLoader(self.val_set, batch_size=max(1, len(self.val_set)), num_workers=0, shuffle=False)

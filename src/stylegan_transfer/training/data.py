"""The DataModule: two image folders (listed, checked and downloaded when missing) as Lightning's loaders.

The samples themselves (augmentation, robust loading, stateless sampling) come from `unpaired`.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from stylegan_transfer.datasets import DataError, domain_folders
from stylegan_transfer.images import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    FolderError,
    list_images,
    scan_images,
)
from stylegan_transfer.training import settings
from stylegan_transfer.training.unpaired import (
    VARIABLE_SIZE_MODES,
    Augment,
    BadFiles,
    PairedEvalDataset,
    Preprocess,
    ResumableLoader,
    UnpairedDataset,
    UnpairedSampler,
)


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

"""In-training quality metrics: `val/kid` (and `val/fid`) on a fixed image subset, and export of the best model.

`KIDEvaluation` translates the same first `num_images` A images (the test split when the dataset has one,
else the training folders) with `pl_module.g_ab` every `every_n_epochs` epochs and compares their Inception
features with those of the first `num_images` B images (computed once). Every rank computes the same
numbers, so a `ModelCheckpoint(monitor="val/kid")` works under DDP too. `ExportBestGenerators` writes the
generators of the best checkpoint by a monitored metric as safetensors exports when fitting ends.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image

from stylegan_transfer import metrics
from stylegan_transfer.data import list_images, load_rgb, resolve_folders, to_tensor
from stylegan_transfer.export import ROLES, export_checkpoint
from stylegan_transfer.metric_weights import load_inception_features

log = logging.getLogger(__name__)


def evaluation_files(datamodule, count: int) -> tuple[list[Path], list[Path]]:
    """The first `count` images of domains A and B: test split if present, else the training folders."""
    explicit = datamodule.dir_a is not None
    for split in ("train",) if explicit else ("test", "train"):
        folder_a, folder_b = resolve_folders(
            root=datamodule.root, dir_a=datamodule.dir_a, dir_b=datamodule.dir_b, split=split
        )
        if datamodule.direction == "BtoA":
            folder_a, folder_b = folder_b, folder_a
        files_a = list_images(folder_a) if folder_a.is_dir() else []
        files_b = list_images(folder_b) if folder_b.is_dir() else []
        if len(files_a) >= 2 and len(files_b) >= 2:
            return files_a[:count], files_b[:count]
    raise ValueError("KID evaluation needs at least 2 images in each domain")


class KIDEvaluation(L.Callback):
    """Logs `val/kid` (unbiased KID, mean over subsets), `val/kid_std` and optionally `val/fid`."""

    def __init__(
        self,
        *,
        every_n_epochs: int = 1,
        num_images: int = 100,
        compute_fid: bool = False,
        inception_weights: str | None = None,
        offline: bool = False,
        batch_size: int = 16,
        kid_subsets: int = 50,
        kid_subset_size: int = 1000,
        seed: int = 0,
    ) -> None:
        if every_n_epochs < 1 or num_images < 2:
            raise ValueError("every_n_epochs must be ≥ 1 and num_images ≥ 2")
        self.every_n_epochs, self.num_images, self.compute_fid = every_n_epochs, num_images, compute_fid
        self.inception_weights, self.offline = inception_weights, offline
        self.batch_size, self.kid_subsets, self.kid_subset_size, self.seed = (
            batch_size,
            kid_subsets,
            kid_subset_size,
            seed,
        )
        self.inception: metrics.InceptionFeatures | None = None
        self.inputs: torch.Tensor | None = None  # (N, 3, S, S) domain A, in [-1, 1]
        self.target_features: np.ndarray | None = None  # (M, 2048) domain B
        self.last_seconds = float("nan")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.inception is not None:
            return
        kwargs = {"url": None} if self.offline else {}
        self.inception = load_inception_features(self.inception_weights, **kwargs)  # fails fast, clearly
        datamodule = trainer.datamodule
        files_a, files_b = evaluation_files(datamodule, self.num_images)
        self.prepare(files_a, files_b, size=int(datamodule.augment.crop_size))

    def prepare(self, files_a: list[Path], files_b: list[Path], *, size: int) -> None:
        """Load the fixed inputs (domain A) and targets (domain B), square-resized like validation images."""

        def load(files: list[Path]) -> torch.Tensor:
            images = [to_tensor(load_rgb(p).resize((size, size), Image.BICUBIC)) for p in files]
            return torch.stack(images)  # (N, 3, size, size)

        self.inputs, self._targets = load(files_a), load(files_b)
        self.target_features = None

    def _features(self, images: torch.Tensor, device: torch.device) -> np.ndarray:
        assert self.inception is not None
        return metrics.extract_features(self.inception, images.split(self.batch_size), device=device)

    @torch.no_grad()
    def evaluate(self, pl_module: L.LightningModule) -> dict[str, float]:
        assert self.inputs is not None and self.inception is not None
        device = pl_module.device
        self.inception.to(device)
        if self.target_features is None:
            self.target_features = self._features(self._targets, device)
        was_training = pl_module.g_ab.training
        pl_module.g_ab.eval()
        fakes = torch.cat(
            [
                metrics.quantize(metrics.run_generator(pl_module.g_ab, batch.to(device))).cpu()
                for batch in self.inputs.split(self.batch_size)
            ]
        )  # (N, 3, S, S)
        pl_module.g_ab.train(was_training)
        fake_features = self._features(fakes, device)
        kid = metrics.kernel_inception_distance(
            self.target_features,
            fake_features,
            subsets=self.kid_subsets,
            subset_size=self.kid_subset_size,
            seed=self.seed,
        )
        scores = {"val/kid": kid.mean, "val/kid_std": kid.std}
        if self.compute_fid:
            scores["val/fid"] = metrics.fid_from_features(self.target_features, fake_features)
        return scores

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        started = time.perf_counter()
        scores = self.evaluate(pl_module)
        self.last_seconds = time.perf_counter() - started
        for name, value in scores.items():
            pl_module.log(name, value, prog_bar=name == "val/kid", sync_dist=True)
        pl_module.log("val/kid_seconds", self.last_seconds, sync_dist=True)


class ExportBestGenerators(L.Callback):
    """At the end of fitting, exports g_ab and g_ba of the best checkpoint by `monitor` (rank 0).

    Needs a `ModelCheckpoint` with the same `monitor` among the callbacks; writes
    `<dirpath>/g_ab.safetensors` and `g_ba.safetensors` with the score and epoch in the metadata.
    """

    def __init__(self, *, dirpath: str, monitor: str = "val/kid") -> None:
        self.dirpath, self.monitor = Path(dirpath), monitor

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        found = [
            cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint) and cb.monitor == self.monitor
        ]
        best = next((cb for cb in found if cb.best_model_path), None)
        if best is None:
            log.warning("no checkpoint monitored %s was saved; nothing to export as best", self.monitor)
            return
        score = float(best.best_model_score) if best.best_model_score is not None else float("nan")
        roles = tuple(role for role in ROLES if getattr(pl_module, role, None) is not None)
        paths = export_checkpoint(
            best.best_model_path,
            self.dirpath,
            roles=roles,
            overwrite=True,
            extra={"selected_by": self.monitor, "score": score, "checkpoint": str(best.best_model_path)},
            log=lambda message: None,
        )
        for path in paths:
            log.info("exported best generator by %s=%.5f to %s", self.monitor, score, path)

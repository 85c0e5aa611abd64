"""Sample grids: the fixed validation batch translated after each validation, saved and logged (rank 0)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from torchvision.utils import make_grid

from stylegan_transfer.images import save_image, to_image
from stylegan_transfer.training.contract import GRID_COLUMNS, TranslationModel


def sample_grid(images: dict[str, torch.Tensor]) -> torch.Tensor:
    """One row per validation pair: real A | A→B | A→B→A | real B | B→A | B→A→B.  (3, H', W') in [-1, 1]."""
    rows = torch.stack([images[name].float().cpu() for name in GRID_COLUMNS], dim=1)  # (N, 6, 3, H, W)
    return make_grid(rows.flatten(0, 1), nrow=len(GRID_COLUMNS), padding=2, pad_value=1.0)


def logged_step(trainer: L.Trainer) -> int:
    """The step Lightning logs metrics at: batches trained. `trainer.global_step` counts optimiser steps,
    two per CycleGAN batch (generators, then discriminators), so images logged at it sat at twice the x of
    the scalars on W&B's `trainer/global_step` axis."""
    return int(getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step))


class SampleGrid(L.Callback):
    """Translates the fixed validation batch after each validation (the model's `translate_batch`) and saves/logs
    the grid (rank 0)."""

    def __init__(self, *, dirpath: str, every_n_epochs: int = 1) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_epochs = every_n_epochs
        self._batch: dict[str, torch.Tensor] | None = None

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if batch_idx == 0:
            self._batch = {"a": batch["a"].detach(), "b": batch["b"].detach()}

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: TranslationModel) -> None:
        if self._batch is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if trainer.current_epoch % self.every_n_epochs:
            return
        images = pl_module.translate_batch(self._batch["a"], self._batch["b"])
        grid = to_image(sample_grid(images))
        save_image(grid, self.dirpath / f"epoch_{trainer.current_epoch:04d}.png")
        save_image(grid, self.dirpath / "latest.png")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(
                    "val/samples", [grid], step=logged_step(trainer), caption=[" | ".join(GRID_COLUMNS)]
                )

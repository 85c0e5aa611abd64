"""Lightning glue that touches files: sample grids, a checkpoint on crash, atomic checkpoint writes."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.loggers import WandbLogger
from torchvision.utils import make_grid

from stylegan_transfer.data import to_image

log = logging.getLogger(__name__)

GRID_COLUMNS = ("real_a", "fake_b", "rec_a", "real_b", "fake_a", "rec_b")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes to a temporary file beside the target, then renames: a kill mid-save keeps the old file."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options=None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def sample_grid(images: dict[str, torch.Tensor]) -> torch.Tensor:
    """One row per validation pair: real A | A→B | A→B→A | real B | B→A | B→A→B.  (3, H', W') in [-1, 1]."""
    rows = torch.stack([images[name].float().cpu() for name in GRID_COLUMNS], dim=1)  # (N, 6, 3, H, W)
    return make_grid(rows.flatten(0, 1), nrow=len(GRID_COLUMNS), padding=2, pad_value=1.0)


class SampleGrid(L.Callback):
    """Translates the fixed validation batch after each validation and saves/logs the grid (rank 0)."""

    def __init__(self, *, dirpath: str, every_n_epochs: int = 1) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_epochs = every_n_epochs
        self._batch: dict[str, torch.Tensor] | None = None

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if batch_idx == 0:
            self._batch = {"a": batch["a"].detach(), "b": batch["b"].detach()}

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._batch is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if trainer.current_epoch % self.every_n_epochs:
            return
        images = pl_module.translate_batch(self._batch["a"], self._batch["b"])
        grid = to_image(sample_grid(images))
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"epoch_{trainer.current_epoch:04d}.png"
        grid.save(path)
        grid.save(self.dirpath / "latest.png")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(
                    "val/samples", [grid], step=trainer.global_step, caption=[" | ".join(GRID_COLUMNS)]
                )


class CheckpointOnException(L.Callback):
    """Saves `interrupted.ckpt` when training stops on an exception or Ctrl-C (single process only)."""

    def __init__(self, *, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if trainer.world_size != 1 or trainer.state.stage is None or trainer.global_step == 0:
            return
        path = self.dirpath / "interrupted.ckpt"
        try:
            trainer.save_checkpoint(path)
            log.warning(
                "training stopped by %s; state saved to %s (resume with ckpt_path=%s)",
                type(exception).__name__,
                path,
                path,
            )
        except Exception as err:  # never mask the original exception
            log.error("could not save %s: %s", path, err)

"""Checkpoints of a training run: how their files are written, and what state each one carries.

Files: atomic writes (a kill mid-save keeps the old file), `last.ckpt` as a hard link replaced by one rename, and
`interrupted.ckpt` on a crash or Ctrl-C. State: every RNG (exact resume for any module) and the run's export
metadata (what `stylegan-export` needs).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from stylegan_transfer.atomic import atomic_path
from stylegan_transfer.inference.checkpoint import EXPORT_METADATA_KEY

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes to a temporary file beside the target, then renames: a kill mid-save keeps the old file.

    Reads with `weights_only=True` whatever the caller or the environment asks (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD
    only applies when no value is passed): a checkpoint never runs pickled code."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options=None
    ) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            torch.save(checkpoint, handle)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


class ResumeCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose `last.ckpt` (save_last: link) is a hard link (or copy) to the newest epoch
    checkpoint, replaced by one atomic rename. Lightning's link removes the old link before making the new
    one, so a kill in between left last.ckpt missing or dangling; here it is the old file or the new one at
    every moment (the epoch file it links to may be deleted: a hard link keeps the data).

    No version counter: a run resumed from a checkpoint saved before its `last.ckpt` existed would
    otherwise write `last-v1.ckpt` and leave `last.ckpt` behind, stale."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("enable_version_counter", False)
        super().__init__(**kwargs)

    @staticmethod
    def _link_checkpoint(trainer: L.Trainer, filepath: str, linkpath: str) -> None:
        if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
            with atomic_path(linkpath, fsync=False) as tmp:
                tmp.unlink(missing_ok=True)
                try:
                    os.link(filepath, tmp)
                except OSError:  # no hard links on this filesystem: a copy, flushed before the rename
                    shutil.copyfile(filepath, tmp)
                    with open(tmp, "rb") as handle:
                        os.fsync(handle.fileno())
        trainer.strategy.barrier()


class CheckpointOnException(L.Callback):
    """Saves `interrupted.ckpt` when training stops on an exception or Ctrl-C (single process only).

    Ctrl-C is deferred until the batch in flight has trained (a second press stops at once), so the saved state is
    the one of a batch boundary: resuming from it trains and logs exactly as the uninterrupted run. A stop that
    comes inside a batch is saved only if no optimiser has stepped in that batch yet (the batch is then not counted
    as started, so Lightning retrains it and its logged steps line up); one that comes between the optimisers'
    steps (the generators stepped, the discriminators not) saves nothing, as such a state resumes half a step on.
    """

    def __init__(self, *, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self._steps_at_batch_start = 0
        self._in_batch = False
        self._saving_mid_batch = False
        self._pressed = False
        self._previous_handler: Any = None

    # ------------------------------------------------------------------------- Ctrl-C at the batch boundary
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._pressed or not self._in_batch:
            raise KeyboardInterrupt
        self._pressed = True
        log.warning("Ctrl-C: stopping after this batch (press Ctrl-C again to stop at once)")

    def _restore_sigint(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_sigint()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._steps_at_batch_start, self._in_batch = trainer.global_step, True
        if self._pressed:  # pressed during the previous batch, which finished: stop before this one trains
            raise KeyboardInterrupt

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._in_batch = False

    # ------------------------------------------------------------------------- saving
    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_sigint()
        if trainer.world_size != 1 or trainer.state.stage is None or trainer.global_step == 0:
            return
        path = self.dirpath / "interrupted.ckpt"
        if self._in_batch and trainer.global_step != self._steps_at_batch_start:
            log.warning(
                "training stopped by %s between two optimiser steps of a batch: no %s (that state would resume "
                "half a step on); resume from last.ckpt",
                type(exception).__name__,
                path.name,
            )
            return
        self._saving_mid_batch = self._in_batch
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
        finally:
            self._saving_mid_batch = False

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        """A save inside a batch that no optimiser stepped in: that batch is recorded as never started, so the
        checkpoint is that of the previous batch's end (Lightning would otherwise count it as stepped on resume
        and log every later step one too far)."""
        if not self._saving_mid_batch:
            return
        progress = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]
        for counts in (progress["total"], progress["current"]):
            counts["ready"] = counts["started"] = counts["processed"] = counts["completed"]


# ----------------------------------------------------------------------------- state in every checkpoint
def capture_rng() -> dict[str, Any]:
    """Every global RNG state, as plain values (tensors, ints) that `weights_only` loading accepts."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["gauss"],
        )
    )
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGState(L.Callback):
    """Saves every global RNG (torch, CUDA, numpy, Python) in each checkpoint and restores it on resume, so
    a resumed run of any module draws the same random numbers as an uninterrupted one."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["rng"] = capture_rng()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if "rng" in checkpoint:
            restore_rng(checkpoint["rng"])


class ExportMetadata(L.Callback):
    """Writes the run's plain facts (style, domain names, preprocessing, training size) into every
    checkpoint, so that `stylegan-export` and the best-model export need nothing but the checkpoint."""

    def __init__(
        self,
        *,
        style: str = "",
        domain_a: str = "A",
        domain_b: str = "B",
        preprocess: str = "resize_and_crop",
        train_size: int = 256,
    ) -> None:
        self.metadata = {
            "style": style,
            "domain_a": domain_a,
            "domain_b": domain_b,
            "preprocess": preprocess,
            "train_size": int(train_size),
        }

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[EXPORT_METADATA_KEY] = dict(self.metadata)

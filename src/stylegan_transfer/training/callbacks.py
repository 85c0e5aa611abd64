"""Lightning callbacks and plugins of a training run.

Files: sample grids, a checkpoint on crash, atomic checkpoint writes. State: every RNG in each checkpoint
(exact resume for any module), the run's export metadata in each checkpoint (what `stylegan-export` needs).
Quality: `val/kid` on a fixed held-out subset, and the export of the best generators by a monitored metric.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from PIL import Image
from torchvision.utils import make_grid

from stylegan_transfer.atomic import atomic_path
from stylegan_transfer.datasets import DataError
from stylegan_transfer.images import load_rgb, save_image, to_image, to_tensor
from stylegan_transfer.inference.checkpoint import EMA_SUFFIX, EXPORT_METADATA_KEY, ROLES
from stylegan_transfer.inference.export import export_checkpoint
from stylegan_transfer.metrics import scores as metrics
from stylegan_transfer.metrics.weights import load_inception_features

log = logging.getLogger(__name__)

GRID_COLUMNS = ("real_a", "fake_b", "rec_a", "real_b", "fake_a", "rec_b")


def evaluated_generator(module: L.LightningModule, role: str) -> torch.nn.Module | None:
    """The network that stands for `role` (g_ab, g_ba) outside training: its moving average `<role>_ema` when
    the module keeps one, else the trained network itself; None when the module has no such generator."""
    ema = getattr(module, role + EMA_SUFFIX, None)
    return ema if ema is not None else getattr(module, role, None)


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
        save_image(grid, self.dirpath / f"epoch_{trainer.current_epoch:04d}.png")
        save_image(grid, self.dirpath / "latest.png")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(
                    "val/samples", [grid], step=logged_step(trainer), caption=[" | ".join(GRID_COLUMNS)]
                )


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


# ----------------------------------------------------------------------------- quality and the best model
class KIDEvaluation(L.Callback):
    """Logs `val/kid` (unbiased KID, mean over subsets), `val/kid_std` and optionally `val/fid`.

    Evaluates after the first epoch, every `every_n_epochs` epochs and after the last one, so a checkpoint
    callback monitoring `val/kid` always has a value (Lightning keeps the last one between evaluations, and a
    repeated value never counts as an improvement) and the final model is always scored.
    """

    def due(self, epoch: int, max_epochs: int | None) -> bool:
        """Whether to evaluate after (0-based) `epoch`."""
        last = max_epochs is not None and max_epochs > 0 and epoch + 1 == max_epochs
        return epoch == 0 or (epoch + 1) % self.every_n_epochs == 0 or last

    def __init__(
        self,
        *,
        every_n_epochs: int = 5,
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

    def load_inception(self) -> None:
        """Load the FID Inception network (downloaded and cached unless `offline`); raises
        `MetricWeightsError` with how to provide the weights. A no-op when one is loaded (or injected)."""
        if self.inception is None:
            kwargs = {"url": None} if self.offline else {}
            self.inception = load_inception_features(self.inception_weights, **kwargs)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.load_inception()  # fails fast, clearly
        if self.inputs is None:
            datamodule = trainer.datamodule
            files_a, files_b = datamodule.evaluation_files(self.num_images)
            bad = getattr(datamodule, "bad_files", None)  # shared with training: each bad file named once
            self.prepare(files_a, files_b, size=int(datamodule.augment.crop_size), bad_files=bad)

    def prepare(self, files_a: list[Path], files_b: list[Path], *, size: int, bad_files=None) -> None:
        """Load the fixed inputs (domain A) and targets (domain B), square-resized like validation images.
        Files that fail to decode are skipped (warned once per run when `bad_files`, a `data.BadFiles`)."""

        def load(files: list[Path]) -> torch.Tensor:
            images = []
            for path in files:
                if bad_files is not None and path in bad_files:
                    continue
                try:
                    images.append(to_tensor(load_rgb(path).resize((size, size), Image.BICUBIC)))
                except Exception as err:  # damaged data: skipped like in training
                    if bad_files is not None:
                        bad_files.report(path, err)
                    else:
                        log.warning("KID: skipping %s: %s: %s", path, type(err).__name__, err)
            if len(images) < 2:
                folder = files[0].parent if files else "?"
                raise DataError(
                    f"KID evaluation needs at least 2 readable images of {folder}, found {len(images)}; add "
                    "images, or select by another metric: callbacks.kid=null callbacks.best.monitor=val/cycle_l1"
                )
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
        generator = evaluated_generator(pl_module, "g_ab")  # the EMA when kept
        was_training = generator.training
        generator.eval()
        fakes = torch.cat(
            [
                metrics.quantize(metrics.run_generator(generator, batch.to(device))).cpu()
                for batch in self.inputs.split(self.batch_size)
            ]
        )  # (N, 3, S, S)
        generator.train(was_training)
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
        if trainer.sanity_checking:
            return
        # a resumed run has no value yet: score now, or a checkpoint monitoring val/kid finds none
        if not self.due(trainer.current_epoch, trainer.max_epochs) and "val/kid" in trainer.callback_metrics:
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

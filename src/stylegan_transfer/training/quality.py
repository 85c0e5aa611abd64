"""Translation quality during training: `val/kid` on a fixed held-out subset, and the export of the best
generators by a monitored metric (both judge a generator's moving average when the module keeps one).
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

from stylegan_transfer.datasets import DataError
from stylegan_transfer.images import load_rgb, to_tensor
from stylegan_transfer.inference.export import export_checkpoint
from stylegan_transfer.metrics import scores as metrics
from stylegan_transfer.metrics.weights import load_inception_features
from stylegan_transfer.training.contract import TranslationModel

log = logging.getLogger(__name__)


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
        Files that fail to decode are skipped (warned once per run when `bad_files`, an `unpaired.BadFiles`)."""

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
        """Scores of the module's (a `TranslationModel`) evaluated g_ab on the fixed inputs."""
        assert self.inputs is not None and self.inception is not None
        device = pl_module.device
        self.inception.to(device)
        if self.target_features is None:
            self.target_features = self._features(self._targets, device)
        generator = pl_module.evaluated_generator("g_ab")  # the EMA when kept
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
    """At the end of fitting, exports the generators (the model's `generator_roles`) of the best checkpoint by
    `monitor` (rank 0).

    Needs a `ModelCheckpoint` with the same `monitor` among the callbacks; writes
    `<dirpath>/g_ab.safetensors` and `g_ba.safetensors` with the score and epoch in the metadata.
    """

    def __init__(self, *, dirpath: str, monitor: str = "val/kid") -> None:
        self.dirpath, self.monitor = Path(dirpath), monitor

    def on_fit_end(self, trainer: L.Trainer, pl_module: TranslationModel) -> None:
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
        paths = export_checkpoint(
            best.best_model_path,
            self.dirpath,
            roles=pl_module.generator_roles,
            overwrite=True,
            extra={"selected_by": self.monitor, "score": score, "checkpoint": str(best.best_model_path)},
            log=lambda message: None,
        )
        for path in paths:
            log.info("exported best generator by %s=%.5f to %s", self.monitor, score, path)

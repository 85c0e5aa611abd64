"""Model selection by translation quality (val/kid), its explicit fallback, and scale-free perceptual terms."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf

from helpers import CONFIGS, TINY_D, TINY_G, quiet_trainer, tiny_datamodule, tiny_vgg
from stylegan_transfer.inference.generator_file import read_metadata
from stylegan_transfer.perceptual import PerceptualLoss, VGGFeatures
from stylegan_transfer.training import run
from stylegan_transfer.training.cyclegan import CycleGANModule
from stylegan_transfer.training.quality import KIDEvaluation


class ColourFeatures(torch.nn.Module):
    """Stands in for Inception: 2x2 average colours, (B, 12) — enough to tell red from blue images."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W)
        return F.adaptive_avg_pool2d(images.float(), 2).flatten(1).double()


def swap_red_blue(x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W)
    return x[:, [2, 1, 0]]


class ScriptedGenerators(L.Callback):
    """Epoch 0 and 2: both generators copy their input (zero cycle loss, outputs stay in the wrong domain).
    Epoch 1: g_ab turns the red domain A into the blue domain B (swaps R and B), g_ba still copies: low KID,
    high cycle loss. So cycle loss picks epoch 0 and KID picks epoch 1."""

    def on_train_epoch_start(self, trainer, module) -> None:
        module.g_ab.forward = swap_red_blue if trainer.current_epoch == 1 else (lambda x: x)
        module.g_ba.forward = lambda x: x


class NoTraining(CycleGANModule):
    """Steps its optimisers without gradients: the weights stay, the step counter moves (checkpoints need it)."""

    def training_step(self, batch, batch_idx) -> None:
        for optimizer in self.optimizers():
            optimizer.step()


def _configured(name: str, **overrides):
    """A callback from configs/callbacks/default.yaml, instantiated as training would (paths overridden)."""
    spec = OmegaConf.load(CONFIGS / "callbacks" / "default.yaml")[name]
    spec = OmegaConf.merge(spec, overrides)
    return instantiate(spec)


def test_best_checkpoint_and_export_follow_val_kid_where_cycle_loss_disagrees(cyclegan_dir, tmp_path):
    module = NoTraining(generator=TINY_G, discriminator=TINY_D, pool_size=0)
    datamodule = tiny_datamodule(root=str(cyclegan_dir), val_size=2)
    kid = KIDEvaluation(every_n_epochs=1, num_images=2, kid_subsets=3)
    kid.inception = ColourFeatures()
    best = _configured("best", dirpath=str(tmp_path / "ckpt"))
    export_best = _configured("export_best", dirpath=str(tmp_path / "best"))
    by_cycle = ModelCheckpoint(
        dirpath=tmp_path / "cycle", filename="best", monitor="val/cycle_l1", mode="min"
    )
    callbacks = [ScriptedGenerators(), kid, best, by_cycle, export_best]
    trainer = quiet_trainer(
        max_epochs=3, limit_train_batches=1, callbacks=callbacks, enable_checkpointing=True
    )
    trainer.fit(module, datamodule=datamodule)

    assert best.monitor == "val/kid"
    assert torch.load(best.best_model_path, weights_only=True)["epoch"] == 1  # what users get
    assert torch.load(by_cycle.best_model_path, weights_only=True)["epoch"] == 0  # what cycle loss would pick
    meta = read_metadata(tmp_path / "best" / "g_ab.safetensors")
    assert meta["selected_by"] == "val/kid" and meta["epoch"] == 1


def test_without_inception_weights_selection_falls_back_explicitly(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("STYLEGAN_TRANSFER_CACHE", str(tmp_path / "empty_cache"))
    kid = KIDEvaluation(offline=True)
    best = _configured("best", dirpath=str(tmp_path / "ckpt"))
    export_best = _configured("export_best", dirpath=str(tmp_path / "best"))
    callbacks = [kid, best, export_best]
    with caplog.at_level(logging.WARNING):
        selected = run.select_by_quality(callbacks)
    assert selected == "val/cycle_l1"
    assert kid not in callbacks and best.monitor == "val/cycle_l1" and export_best.monitor == "val/cycle_l1"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # said once
    assert "val/kid is off" in warnings[0] and "fall back to val/cycle_l1" in warnings[0]
    assert "stylegan-eval weights --import" in warnings[0] or "inception_weights" in warnings[0]
    assert run.objective("val/kid", selected) == "val/cycle_l1"
    assert run.objective("val/kid", "val/kid") == "val/kid"


def test_with_inception_weights_selection_keeps_val_kid():
    kid = KIDEvaluation()
    kid.inception = ColourFeatures()
    best = ModelCheckpoint(monitor="val/kid")
    callbacks = [kid, best]
    assert run.select_by_quality(callbacks) == "val/kid" and callbacks == [kid, best]
    assert best.monitor == "val/kid"
    assert run.select_by_quality([best]) is None  # nothing evaluates quality: nothing to fall back from


def test_sweep_and_checkpoint_defaults_rank_by_quality(compose_cfg):
    cfg = compose_cfg()
    assert cfg.optimized_metric == "val/kid"
    assert cfg.callbacks.best.monitor == "val/kid" and cfg.callbacks.best.mode == "min"
    assert cfg.callbacks.export_best.monitor == "val/kid"
    assert cfg.callbacks.kid._target_.endswith("KIDEvaluation")
    optuna = OmegaConf.load(CONFIGS / "hparams_search" / "cyclegan_optuna.yaml")
    assert "optimized_metric" not in optuna  # the preset optimises what train.yaml names
    assert optuna.hydra.sweeper.direction == "minimize"


def test_kid_evaluates_first_every_n_and_last_epoch():
    kid = KIDEvaluation(every_n_epochs=5)
    assert [e for e in range(12) if kid.due(e, 12)] == [0, 4, 9, 11]


# ----------------------------------------------------------------------------- scale-free perceptual terms
class Scaled(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, factor: float) -> None:
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [f * self.factor for f in self.inner(images)]


@pytest.mark.parametrize("factor", [1e-3, 255.0, 1e4])
def test_perceptual_terms_do_not_depend_on_the_feature_scale(factor):
    layers = ["relu1_1", "relu2_1", "relu2_2"]
    trunk = VGGFeatures(tiny_vgg(), layers)  # seeds 0
    plain = PerceptualLoss(content_layers=["relu2_2"], style_layers=["relu1_1", "relu2_1"])
    scaled = PerceptualLoss(content_layers=["relu2_2"], style_layers=["relu1_1", "relu2_1"])
    plain.vgg, scaled.vgg = trunk, Scaled(trunk, factor)
    fake, real, style = (torch.rand(2, 3, 32, 32) * 2 - 1 for _ in range(3))  # (B, 3, H, W)
    terms = []
    for loss in (plain, scaled):
        content_f, style_f = loss.features(fake)
        content_r, _ = loss.features(real)
        _, style_s = loss.features(style)
        terms.append((loss.content(content_f, content_r), loss.style(style_f, loss.grams(style_s))))
    (c1, s1), (c2, s2) = terms
    assert c1 > 0 and s1 > 0
    torch.testing.assert_close(c2, c1, rtol=1e-4, atol=0)
    torch.testing.assert_close(s2, s1, rtol=1e-4, atol=0)


def test_cyclegan_perceptual_terms_are_scale_free_in_the_training_step(tmp_path):
    """The same CycleGAN step with VGG features x1 and x1000 logs the same content and style terms."""
    logged = []
    for factor in (1.0, 1000.0):
        torch.manual_seed(0)
        module = CycleGANModule(
            generator=TINY_G,
            discriminator=TINY_D,
            pool_size=0,
            lambda_content=1.0,
            lambda_style=1.0,
            content_layers=["relu2_2"],
            style_layers=["relu1_1", "relu2_1"],
        )
        trunk = VGGFeatures(tiny_vgg(), ["relu2_2", "relu1_1", "relu2_1"])
        module.perceptual.vgg = Scaled(trunk, factor)
        real_a, real_b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1  # (B, 3, H, W)
        with torch.no_grad():
            fake_b, fake_a = module.g_ab(real_a), module.g_ba(real_b)
            logged.append(module._perceptual_terms(fake_b, fake_a, real_a, real_b))
    (c1, s1), (c2, s2) = logged
    torch.testing.assert_close(c2, c1, rtol=1e-4, atol=0)
    torch.testing.assert_close(s2, s1, rtol=1e-4, atol=0)

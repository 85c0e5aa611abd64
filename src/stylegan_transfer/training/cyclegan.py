"""CycleGAN as a LightningModule: two generators, two discriminators, manual optimisation.

Knows nothing of files or configuration objects: every setting arrives as a typed keyword argument,
and the networks are built through the registries in `networks.py`. All `lambda_*` weights are applied
in `training_step` and nowhere else.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import nn

from stylegan_transfer import losses
from stylegan_transfer.image_pool import ImagePool
from stylegan_transfer.networks import build_discriminator, build_generator, init_weights
from stylegan_transfer.perceptual import CONTENT_LAYERS, STYLE_LAYERS, PerceptualLoss
from stylegan_transfer.training.optim import LrScaling, batch_lr_factor, linear_decay_factor


class CycleGANModule(L.LightningModule):
    def __init__(
        self,
        *,
        generator: dict[str, Any] | None = None,
        discriminator: dict[str, Any] | None = None,
        init_type: str = "normal",
        init_gain: float = 0.02,
        gan_mode: losses.GanMode = "lsgan",
        lambda_cycle: float = 10.0,
        lambda_identity: float = 0.5,
        lambda_gp: float = 10.0,
        lambda_content: float = 0.0,
        lambda_style: float = 0.0,
        lambda_tv: float = 0.0,
        content_layers: Sequence[str] = CONTENT_LAYERS,
        style_layers: Sequence[str] = STYLE_LAYERS,
        vgg_weights: str | None = None,
        lr: float = 2e-4,
        beta1: float = 0.5,
        beta2: float = 0.999,
        epochs_constant: int = 100,
        epochs_decay: int = 100,
        pool_size: int = 50,
        seed: int = 0,
        batch_size: int = 1,
        lr_scaling: LrScaling = "none",
        channels_last: bool = False,
        compile: bool = False,
        fused_adam: bool | None = None,
    ) -> None:
        """Performance options (the GPU presets in configs/perf/ turn them on):

        batch_size: images per device per step; with `lr_scaling` it sets the LR (see `batch_lr_factor`).
        channels_last: NHWC weights and inputs (faster convolutions with tensor cores / oneDNN).
        compile: `torch.compile` each network in place (state_dict keys and exports are unchanged).
        fused_adam: one fused Adam kernel; None = fused when the parameters are on a GPU.
        """
        super().__init__()
        generator = dict(generator or {"arch": "resnet"})
        discriminator = dict(discriminator or {"arch": "patch"})
        if gan_mode not in losses.GAN_MODES:
            raise ValueError(f"unknown gan_mode {gan_mode!r}; choose one of {losses.GAN_MODES}")
        batch_lr_factor(batch_size, lr_scaling)  # validates both early
        self.save_hyperparameters()  # plain values only (reads the normalised locals above)
        self.automatic_optimization = False
        gen_kwargs, disc_kwargs = dict(generator), dict(discriminator)
        gen_arch, disc_arch = gen_kwargs.pop("arch"), disc_kwargs.pop("arch")
        self.generator_arch, self.generator_kwargs = gen_arch, dict(gen_kwargs)
        self.g_ab = build_generator(gen_arch, **gen_kwargs)
        self.g_ba = build_generator(gen_arch, **gen_kwargs)
        self.d_a = build_discriminator(disc_arch, **disc_kwargs)  # judges images of domain A
        self.d_b = build_discriminator(disc_arch, **disc_kwargs)
        for net in (self.g_ab, self.g_ba, self.d_a, self.d_b):
            init_weights(net, init_type=init_type, gain=init_gain)
        self.pool_a = ImagePool(pool_size, seed=seed)  # history of fake_a
        self.pool_b = ImagePool(pool_size, seed=seed + 1)  # history of fake_b
        self.perceptual = PerceptualLoss(
            content_layers=content_layers, style_layers=style_layers, weights_path=vgg_weights
        )  # its VGG is loaded in setup() when a perceptual term is on
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def networks(self) -> tuple[nn.Module, ...]:
        return (self.g_ab, self.g_ba, self.d_a, self.d_b)

    def configure_model(self) -> None:
        """Compile once, in place: `nn.Module.compile` keeps parameter names, so checkpoints and exports agree."""
        if self.hparams.compile and not getattr(self, "_compiled", False):
            for net in self.networks:
                net.compile()
            self._compiled = True

    def _memory_format(self, images: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        if self.hparams.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    # ----------------------------------------------------------------------------- perceptual terms
    @property
    def uses_vgg(self) -> bool:
        return self.hparams.lambda_content > 0 or self.hparams.lambda_style > 0

    def setup(self, stage: str) -> None:
        if self.uses_vgg:
            self.perceptual.load().to(self.device)

    def _perceptual_terms(
        self, fake_b: torch.Tensor, fake_a: torch.Tensor, real_a: torch.Tensor, real_b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Content: each fake against its own input (fake_b vs real_a, fake_a vs real_b). Style: each fake
        against the batch of real images of its target domain. Both normalised (see PerceptualLoss)."""
        p = self.perceptual
        content_fb, style_fb = p.features(fake_b)
        content_fa, style_fa = p.features(fake_a)
        with torch.no_grad():
            content_ra, style_ra = p.features(real_a)
            content_rb, style_rb = p.features(real_b)
        content = p.content(content_fb, content_ra) + p.content(content_fa, content_rb)
        style = p.style(style_fb, p.grams(style_rb)) + p.style(style_fa, p.grams(style_ra))
        return content, style

    # ----------------------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        hp = self.hparams
        betas = (hp.beta1, hp.beta2)
        lr = hp.lr * batch_lr_factor(hp.batch_size * self._world_size(), hp.lr_scaling)
        impl = self.adam_implementation()
        opt_g = torch.optim.Adam(
            itertools.chain(self.g_ab.parameters(), self.g_ba.parameters()), lr=lr, betas=betas, **impl
        )
        opt_d = torch.optim.Adam(
            itertools.chain(self.d_a.parameters(), self.d_b.parameters()), lr=lr, betas=betas, **impl
        )
        rule = functools.partial(
            linear_decay_factor, epochs_constant=hp.epochs_constant, epochs_decay=hp.epochs_decay
        )
        schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, rule) for opt in (opt_g, opt_d)]
        return [opt_g, opt_d], schedulers

    def _world_size(self) -> int:
        trainer = self._trainer  # None outside a Trainer
        return int(trainer.world_size) if trainer is not None else 1

    def adam_implementation(self) -> dict[str, bool]:
        """Keyword arguments for torch.optim.Adam: {"fused": True} or torch's default (foreach on GPU)."""
        fused = self.hparams.fused_adam
        if fused is None:
            fused = self.device.type == "cuda"
        return {"fused": True} if fused else {}

    def _discriminator_loss(self, disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        mode = self.hparams.gan_mode
        loss = losses.discriminator_adversarial(disc(real), disc(fake.detach()), mode)
        if mode == "wgangp":
            loss = loss + self.hparams.lambda_gp * losses.gradient_penalty(disc, real, fake)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        hp = self.hparams
        real_a = self._memory_format(batch["a"])  # (B, 3, H, W) in [-1, 1]
        real_b = self._memory_format(batch["b"])  # (B, 3, H, W)
        opt_g, opt_d = self.optimizers()

        with self.toggled_optimizer(opt_g):  # discriminators frozen
            fake_b = self.g_ab(real_a)  # (B, 3, H, W)
            rec_a = self.g_ba(fake_b)
            fake_a = self.g_ba(real_b)
            rec_b = self.g_ab(fake_a)
            adv = losses.generator_adversarial(self.d_b(fake_b), hp.gan_mode) + losses.generator_adversarial(
                self.d_a(fake_a), hp.gan_mode
            )
            cycle = losses.cycle_l1(rec_a, real_a) + losses.cycle_l1(rec_b, real_b)
            loss_g = adv + hp.lambda_cycle * cycle
            logs = {"train/g_adv": adv, "train/cycle": cycle}
            if hp.lambda_identity > 0:
                identity = losses.identity_l1(self.g_ab(real_b), real_b) + losses.identity_l1(
                    self.g_ba(real_a), real_a
                )
                loss_g = loss_g + hp.lambda_cycle * hp.lambda_identity * identity
                logs["train/identity"] = identity
            if self.uses_vgg:
                content, style = self._perceptual_terms(fake_b, fake_a, real_a, real_b)
                loss_g = loss_g + hp.lambda_content * content + hp.lambda_style * style
                logs |= {"train/content": content, "train/style": style}
            if hp.lambda_tv > 0:
                tv = losses.total_variation(fake_b) + losses.total_variation(fake_a)
                loss_g = loss_g + hp.lambda_tv * tv
                logs["train/tv"] = tv
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(loss_g)
            opt_g.step()

        with self.toggled_optimizer(opt_d):  # generators frozen
            loss_d_b = self._discriminator_loss(self.d_b, real_b, self.pool_b.query(fake_b))
            loss_d_a = self._discriminator_loss(self.d_a, real_a, self.pool_a.query(fake_a))
            loss_d = loss_d_a + loss_d_b
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(loss_d)
            opt_d.step()

        logs |= {"train/loss_g": loss_g, "train/loss_d": loss_d, "train/d_a": loss_d_a, "train/d_b": loss_d_b}
        # Tensors stay on the device: Lightning reads them only every `log_every_n_steps` (no host sync per
        # step as long as they are not on the progress bar).
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=real_a.shape[0])

    def on_train_epoch_end(self) -> None:
        # Logged once per epoch: a Python float logged every step would be copied to the GPU every step.
        opt_g = self.optimizers()[0]
        self.log("train/lr", opt_g.param_groups[0]["lr"], on_step=False, on_epoch=True, sync_dist=True)
        for scheduler in self.lr_schedulers():
            scheduler.step()

    # ----------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def translate_batch(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Both directions and both reconstructions for a batch: keys real_a, fake_b, rec_a, real_b, fake_a, rec_b."""
        real_a, real_b = self._memory_format(real_a), self._memory_format(real_b)
        fake_b = self.g_ab(real_a)
        fake_a = self.g_ba(real_b)
        return {
            "real_a": real_a,
            "fake_b": fake_b,
            "rec_a": self.g_ba(fake_b),
            "real_b": real_b,
            "fake_a": fake_a,
            "rec_b": self.g_ab(fake_a),
        }

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self.translate_batch(batch["a"], batch["b"])
        cycle = 0.5 * (
            losses.cycle_l1(out["rec_a"], out["real_a"]) + losses.cycle_l1(out["rec_b"], out["real_b"])
        )
        identity = 0.5 * (
            losses.identity_l1(self.g_ab(batch["b"]), batch["b"])
            + losses.identity_l1(self.g_ba(batch["a"]), batch["a"])
        )
        self.log_dict(
            {"val/cycle_l1": cycle, "val/identity_l1": identity},
            batch_size=batch["a"].shape[0],
            sync_dist=True,
            prog_bar=True,
        )

    # ----------------------------------------------------------------------------- checkpoint state
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["image_pools"] = {"a": self.pool_a.state_dict(), "b": self.pool_b.state_dict()}
        # The frozen VGG is rebuilt from its weights; never store hundreds of MB of it in every checkpoint.
        checkpoint["state_dict"] = self.perceptual.strip_state(checkpoint["state_dict"], "perceptual.")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "image_pools" in checkpoint:
            self.pool_a.load_state_dict(checkpoint["image_pools"]["a"])
            self.pool_b.load_state_dict(checkpoint["image_pools"]["b"])
        self.perceptual.restore_state(checkpoint["state_dict"], "perceptual.")

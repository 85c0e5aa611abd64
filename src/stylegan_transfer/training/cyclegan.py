"""CycleGAN as a LightningModule: two generators, two discriminators, manual optimisation.

Knows nothing of files or configuration objects: every setting arrives as a typed keyword argument,
and the networks are built through the registries in `networks.py` and `discriminators.py`. All `lambda_*` weights are applied
in `training_step` and nowhere else (the discriminator's λ_gp and λ_r1 through `discriminator_loss`, which it
calls once per discriminator).

Options beyond the paper, all off by default (the paper's step is unchanged when they are off): DiffAugment of
every discriminator input (`diffaugment`), an EMA of the generators used for validation, samples, KID and
export (`ema_decay`), R1 on the discriminators (`lambda_r1`), normalised VGG content terms of the cycle and
identity images beside their L1 (`lambda_cycle_perceptual`, `lambda_identity_perceptual`), a running mean of
each domain's Gram matrices as the style target (`style_target`); anti-aliased networks and spectral norm are
constructor arguments of the networks (`generator`, `discriminator`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from stylegan_transfer import losses
from stylegan_transfer.discriminators import build_discriminator
from stylegan_transfer.image_pool import ImagePool
from stylegan_transfer.networks import build_generator, init_weights
from stylegan_transfer.perceptual import CONTENT_LAYERS, STYLE_LAYERS, PerceptualLoss, RunningGrams
from stylegan_transfer.training import settings
from stylegan_transfer.training.adversarial import AdversarialModule, augmenter
from stylegan_transfer.training.optim import LrScaling, batch_lr_factor
from stylegan_transfer.training.settings import check_training_settings

StyleTarget = Literal["batch", "running_mean"]
STYLE_TARGETS: tuple[str, ...] = ("batch", "running_mean")


class CycleGANModule(AdversarialModule):
    """A `contract.TranslationModel`: two generators (g_ab: A→B, g_ba: B→A) and two discriminators."""

    generator_roles = ("g_ab", "g_ba")
    fallback_metric = "val/cycle_l1"  # model selection's metric when KID cannot be computed (training/run.py)

    def __init__(
        self,
        *,
        # networks
        generator: dict[str, Any] | None = None,
        discriminator: dict[str, Any] | None = None,
        init_type: str = "normal",
        init_gain: float = 0.02,
        # losses and their weights (and the discriminators' image pools)
        gan_mode: losses.GanMode = "lsgan",
        lambda_cycle: float = 10.0,
        lambda_identity: float = 0.5,
        lambda_gp: float = 10.0,
        lambda_tv: float = 0.0,
        pool_size: int = 50,
        seed: int = 0,
        # perceptual (VGG) terms
        lambda_content: float = 0.5,
        lambda_style: float = 1.0,
        content_layers: Sequence[str] = CONTENT_LAYERS,
        style_layers: Sequence[str] = STYLE_LAYERS,
        vgg_weights: str | None = None,
        style_target: StyleTarget = "batch",
        style_target_decay: float = 0.999,
        lambda_cycle_perceptual: float = 0.0,
        lambda_identity_perceptual: float = 0.0,
        # optimiser and schedule
        lr: float = 2e-4,
        beta1: float = 0.5,
        beta2: float = 0.999,
        epochs_constant: int = 100,
        epochs_decay: int = 100,
        # performance
        batch_size: int = 1,
        lr_scaling: LrScaling = "none",
        channels_last: bool = False,
        compile: bool = False,
        fused_adam: bool | None = None,
        # options beyond the paper (off = the paper)
        diffaugment: str = "",
        ema_decay: float = 0.0,
        lambda_r1: float = 0.0,
    ) -> None:
        """Every setting, flat (configs/model/cyclegan.yaml lists them in this order, `model.<name>=...` overrides
        one), grouped as below. The paper's values but for the two VGG terms (`lambda_content`, `lambda_style`).

        Networks:
            generator / discriminator: {"arch": <name in networks.GENERATORS / discriminators.DISCRIMINATORS>,
                **its constructor arguments}; None = the paper's ResNet generator / 70x70 PatchGAN. Anti-aliasing
                and spectral norm are constructor arguments of these networks.
            init_type / init_gain: weight initialisation of all four networks (`networks.init_weights`).

        Losses and their weights (and the discriminators' image pools):
            gan_mode: "lsgan" | "vanilla" | "hinge" | "wgangp" (`losses.GAN_MODES`).
            lambda_cycle: weight of the cycle L1 of both directions.
            lambda_identity: identity L1 weight relative to lambda_cycle (the loss gets λ_cycle·λ_identity).
            lambda_gp: WGAN-GP penalty weight (gan_mode="wgangp" only).
            lambda_tv: total variation of both fakes; 0 = off.
            pool_size / seed: the history of generated images each discriminator sees half of the time
                (`ImagePool`, 0 = none), and the seed of its draws.

        Perceptual (VGG) terms (normalised: `perceptual.PerceptualLoss`; VGG19 loaded in `setup` when one is on):
            lambda_content / lambda_style: content of each fake against its own input; Gram style of each fake
                against its target domain's reals; 0 = off (the paper).
            content_layers / style_layers / vgg_weights: the VGG19 layers of each term, and the weights file
                (None = the packaged or cached weights, `perceptual.load_vgg_features`).
            style_target: the Gram matrices each fake's style term aims at: "batch" = those of the current batch of
                real images of its target domain (at batch 1, one random image); "running_mean" = per domain and
                style layer, a running mean of the reals' Gram matrices (`perceptual.RunningGrams`: the exact mean
                of all seen for the first 1/(1 - `style_target_decay`) steps, then an exponential mean with that
                decay), kept in buffers, hence in checkpoints.
            lambda_cycle_perceptual / lambda_identity_perceptual: weights of the normalised VGG content distance
                (`PerceptualLoss.content` at `content_layers`) of rec vs real / identity vs real, beside the L1;
                0 = off.

        Optimiser and schedule:
            lr / beta1 / beta2: Adam for the generators and for the discriminators (lr scaled by `lr_scaling`).
            epochs_constant / epochs_decay: constant LR, then linear decay to 0 (stepped per epoch).

        Performance (the GPU presets in configs/perf/ turn them on):
            batch_size: images per device per step; with `lr_scaling` it sets the LR (see `batch_lr_factor`).
            channels_last: NHWC weights and inputs (faster convolutions with tensor cores / oneDNN).
            compile: `torch.compile` each network in place (state_dict keys and exports are unchanged).
            fused_adam: one fused Adam kernel; None = fused when the parameters are on a GPU.

        Options beyond the paper (off = the paper):
            diffaugment: DiffAugment policy for every discriminator input, real and fake, e.g.
                "color,translation,cutout" (see `augment.py`); "" = none.
            ema_decay: keep g_ab_ema / g_ba_ema, p_ema ← d·p_ema + (1 - d)·p after each generator step (d warmed
                up: `adversarial.ema_decay_at`), and use them for validation, sample grids, KID and export;
                0 = off (e.g. 0.999).
            lambda_r1: weight γ of the R1 penalty γ/2·E mean_p ||∇_x D_p(x)||² on real images, per patch logit
                D_p (`losses.r1_penalty`), so γ means what it does for a one-logit D at any size (0.1-10 in the
                literature).
        """
        super().__init__()
        generator = dict(generator or {"arch": "resnet"})  # recorded normalised: checkpoints rebuild from it
        discriminator = dict(discriminator or {"arch": "patch"})
        # Lightning records each keyword argument under its name, flat, with the value it has here: the
        # checkpoint's `hyper_parameters`, and `self.hparams`, from which everything below reads its settings.
        self.save_hyperparameters()
        hp = self.hparams
        check_training_settings(
            generator=generator,
            lr=lr,
            betas=(beta1, beta2),
            lambdas={name: value for name, value in hp.items() if name.startswith("lambda_")},  # every weight
            epochs=(epochs_constant, epochs_decay),
            init_gain=init_gain,
        )
        settings.count("pool_size", pool_size)
        if gan_mode not in losses.GAN_MODES:
            raise ValueError(f"unknown gan_mode {gan_mode!r}; choose one of {losses.GAN_MODES}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0 = off), not {ema_decay}")
        if style_target not in STYLE_TARGETS:
            raise ValueError(f"unknown style_target {style_target!r}; choose one of {STYLE_TARGETS}")
        if not 0.0 <= style_target_decay < 1.0:
            raise ValueError(f"style_target_decay must be in [0, 1), not {style_target_decay}")
        batch_lr_factor(batch_size, lr_scaling)  # validates both early
        self.augment = augmenter(diffaugment)  # validates the policy early
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
        if ema_decay > 0:  # frozen moving averages, saved in checkpoints like any submodule
            self.g_ab_ema, self.g_ba_ema = self.ema_copies(self.g_ab, self.g_ba)
        self.pool_a = ImagePool(pool_size, seed=seed)  # history of fake_a
        self.pool_b = ImagePool(pool_size, seed=seed + 1)  # history of fake_b
        self.perceptual = PerceptualLoss(
            content_layers=content_layers, style_layers=style_layers, weights_path=vgg_weights
        )  # its VGG is loaded in setup() when a perceptual term is on
        if style_target == "running_mean":  # not under `perceptual.`, whose state stays out of checkpoints
            self.style_grams = RunningGrams(
                domains=("a", "b"), layers=len(style_layers), decay=style_target_decay
            )
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def networks(self) -> tuple[nn.Module, ...]:
        return (self.g_ab, self.g_ba, self.d_a, self.d_b)

    # ----------------------------------------------------------------------------- perceptual terms
    @property
    def uses_vgg(self) -> bool:
        hp = self.hparams
        return any(
            w > 0
            for w in (
                hp.lambda_content,
                hp.lambda_style,
                hp.lambda_cycle_perceptual,
                hp.lambda_identity_perceptual,
            )
        )

    def setup(self, stage: str) -> None:
        if self.uses_vgg:
            self.perceptual.load().to(self.device)

    def _perceptual_terms(
        self, fake_b: torch.Tensor, fake_a: torch.Tensor, real_a: torch.Tensor, real_b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Content: each fake against its own input (fake_b vs real_a, fake_a vs real_b). Style: each fake
        against the Gram matrices of its target domain's reals: this batch's, or (style_target="running_mean") their
        running mean, updated here with this batch first. Both normalised (see PerceptualLoss)."""
        p = self.perceptual
        # One VGG pass per pair (VGG has no batch statistics, so this equals four passes, and runs faster).
        content_fb, style_fb, content_fa, style_fa = self._paired_features(fake_b, fake_a)
        with torch.no_grad():
            content_ra, style_ra, content_rb, style_rb = self._paired_features(real_a, real_b)
        content = p.content(content_fb, content_ra) + p.content(content_fa, content_rb)
        target_b, target_a = p.grams(style_rb), p.grams(style_ra)  # per layer (C, C)
        if self.hparams.style_target == "running_mean":
            target_b, target_a = (
                self.style_grams.update("b", target_b),
                self.style_grams.update("a", target_a),
            )
        style = p.style(style_fb, target_b) + p.style(style_fa, target_a)
        return content, style

    def _paired_features(self, x: torch.Tensor, y: torch.Tensor) -> tuple[list[torch.Tensor], ...]:
        """(content, style) features of x, then of y; one VGG pass when their shapes agree."""
        p = self.perceptual
        if x.shape != y.shape:
            return (*p.features(x), *p.features(y))
        content, style = p.features(torch.cat([x, y]))  # (2B, 3, H, W) in
        n = x.shape[0]
        return (
            [f[:n] for f in content],
            [f[:n] for f in style],
            [f[n:] for f in content],
            [f[n:] for f in style],
        )

    def perceptual_distance(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Normalised VGG content distance (`PerceptualLoss.content`) of images to their targets (no gradient
        into the targets' features)."""
        p = self.perceptual
        content, _ = p.features(images)
        with torch.no_grad():
            target_content, _ = p.features(targets)
        return p.content(content, target_content)

    # ----------------------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        opt_g = self.adam(itertools.chain(self.g_ab.parameters(), self.g_ba.parameters()))
        opt_d = self.adam(itertools.chain(self.d_a.parameters(), self.d_b.parameters()))
        return [opt_g, opt_d], self.linear_decay_schedulers(opt_g, opt_d)

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
            adv = losses.generator_adversarial(
                self.d_b(self.augment(fake_b)), hp.gan_mode
            ) + losses.generator_adversarial(self.d_a(self.augment(fake_a)), hp.gan_mode)
            cycle = losses.cycle_l1(rec_a, real_a) + losses.cycle_l1(rec_b, real_b)
            loss_g = adv + hp.lambda_cycle * cycle
            logs = {"train/g_adv": adv, "train/cycle": cycle}
            if hp.lambda_identity > 0 or hp.lambda_identity_perceptual > 0:
                idt_b, idt_a = self.g_ab(real_b), self.g_ba(real_a)
            if hp.lambda_identity > 0:
                identity = losses.identity_l1(idt_b, real_b) + losses.identity_l1(idt_a, real_a)
                loss_g = loss_g + hp.lambda_cycle * hp.lambda_identity * identity
                logs["train/identity"] = identity
            if hp.lambda_content > 0 or hp.lambda_style > 0:
                content, style = self._perceptual_terms(fake_b, fake_a, real_a, real_b)
                loss_g = loss_g + hp.lambda_content * content + hp.lambda_style * style
                logs |= {"train/content": content, "train/style": style}
            if hp.lambda_cycle_perceptual > 0:
                cycle_vgg = self.perceptual_distance(rec_a, real_a) + self.perceptual_distance(rec_b, real_b)
                loss_g = loss_g + hp.lambda_cycle_perceptual * cycle_vgg
                logs["train/cycle_perceptual"] = cycle_vgg
            if hp.lambda_identity_perceptual > 0:
                identity_vgg = self.perceptual_distance(idt_b, real_b) + self.perceptual_distance(
                    idt_a, real_a
                )
                loss_g = loss_g + hp.lambda_identity_perceptual * identity_vgg
                logs["train/identity_perceptual"] = identity_vgg
            if hp.lambda_tv > 0:
                tv = losses.total_variation(fake_b) + losses.total_variation(fake_a)
                loss_g = loss_g + hp.lambda_tv * tv
                logs["train/tv"] = tv
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(loss_g)
            opt_g.step()
        if self.uses_ema:
            self.step_ema((self.g_ab_ema, self.g_ab), (self.g_ba_ema, self.g_ba))

        with self.toggled_optimizer(opt_d):  # generators frozen
            terms_b = self.discriminator_terms(self.d_b, real_b, self.pool_b.query(fake_b))
            loss_d_b = self.discriminator_loss(terms_b)
            terms_a = self.discriminator_terms(self.d_a, real_a, self.pool_a.query(fake_a))
            loss_d_a = self.discriminator_loss(terms_a)
            loss_d = loss_d_a + loss_d_b
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(loss_d)
            opt_d.step()

        logs |= {"train/loss_g": loss_g, "train/loss_d": loss_d, "train/d_a": loss_d_a, "train/d_b": loss_d_b}
        if hp.lambda_r1 > 0:
            logs["train/r1"] = terms_a["r1"] + terms_b["r1"]
        # Tensors stay on the device: Lightning reads them only every `log_every_n_steps` (no host sync per
        # step as long as they are not on the progress bar).
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=real_a.shape[0])

    # ----------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def translate_batch(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Both directions and both reconstructions for a batch: keys real_a, fake_b, rec_a, real_b, fake_a, rec_b
        (by the EMA generators when kept)."""
        g_ab, g_ba = self.evaluated_generator("g_ab"), self.evaluated_generator("g_ba")
        real_a, real_b = self._memory_format(real_a), self._memory_format(real_b)
        fake_b = g_ab(real_a)
        fake_a = g_ba(real_b)
        return {
            "real_a": real_a,
            "fake_b": fake_b,
            "rec_a": g_ba(fake_b),
            "real_b": real_b,
            "fake_a": fake_a,
            "rec_b": g_ab(fake_a),
        }

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        g_ab, g_ba = self.evaluated_generator("g_ab"), self.evaluated_generator("g_ba")
        out = self.translate_batch(batch["a"], batch["b"])
        cycle = 0.5 * (
            losses.cycle_l1(out["rec_a"], out["real_a"]) + losses.cycle_l1(out["rec_b"], out["real_b"])
        )
        identity = 0.5 * (
            losses.identity_l1(g_ab(batch["b"]), batch["b"])
            + losses.identity_l1(g_ba(batch["a"]), batch["a"])
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

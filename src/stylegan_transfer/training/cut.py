"""CUT and FastCUT (Park et al. 2020, "Contrastive Learning for Unpaired Image-to-Image Translation").

One generator g_ab (A→B), one discriminator d_b, no cycle and no g_ba. The translation keeps its input's
content through PatchNCE: the generator's own encoder features of the output, at 256 random positions per
layer, must match the input's features at the same positions (positive) better than at the image's other
positions (negatives), through a small MLP head and a temperature of 0.07 (`losses.patch_nce`).

CUT: λ_GAN 1, λ_NCE 1, plus identity NCE (g_ab(real_b) against real_b), the two NCE terms averaged.
FastCUT: λ_NCE 10, no identity NCE, flip-equivariance (half the steps translate the mirrored input, and the
output's features are mirrored back before they are compared with the input's).

The generator is exported exactly like a CycleGAN one (generator arch and kwargs in the hyper-parameters under
`generator`, weights under `g_ab.`), so `stylegan-export`, `stylegan-translate`, tiling and `stylegan-eval` work
unchanged. Options shared with CycleGAN (DiffAugment, EMA, R1, spectral norm via `discriminator`, the
performance switches) mean the same here; see `cyclegan.py`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from stylegan_transfer import losses
from stylegan_transfer.discriminators import build_discriminator
from stylegan_transfer.networks import PatchSampleMLP, build_generator, init_weights
from stylegan_transfer.training.adversarial import AdversarialModule, augmenter
from stylegan_transfer.training.optim import LrScaling, batch_lr_factor

# The CUT code's networks: anti-aliased ResNet generator and PatchGAN (see networks.py, discriminators.py).
CUT_GENERATOR = {"arch": "resnet", "antialias": True, "upsample": "blur"}
CUT_DISCRIMINATOR = {"arch": "patch", "antialias": True}


class CUTModule(AdversarialModule):
    """A `contract.TranslationModel`: one generator (g_ab: A→B), one discriminator (d_b), the PatchNCE head."""

    generator_roles = ("g_ab",)
    fallback_metric = "val/nce"  # model selection's metric when KID cannot be computed (training/run.py)

    def __init__(
        self,
        *,
        # networks
        generator: dict[str, Any] | None = None,
        discriminator: dict[str, Any] | None = None,
        init_type: str = "xavier",
        init_gain: float = 0.02,
        # losses and their weights
        gan_mode: losses.GanMode = "lsgan",
        lambda_gan: float = 1.0,
        lambda_nce: float = 1.0,
        lambda_gp: float = 10.0,
        # PatchNCE
        nce_idt: bool = True,
        flip_equivariance: bool = False,
        nce_layers: Sequence[int] | None = None,
        num_patches: int = 256,
        nce_t: float = 0.07,
        mlp_channels: int = 256,
        # optimiser and schedule
        lr: float = 2e-4,
        beta1: float = 0.5,
        beta2: float = 0.999,
        epochs_constant: int = 200,
        epochs_decay: int = 200,
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
        # accepted so that overrides shared with CycleGAN compose
        pool_size: int = 0,  # unused: CUT keeps no image history
    ) -> None:
        """Every setting, flat (configs/model/cut.yaml lists them in this order); defaults are CUT's (the
        paper's code), configs/model/fastcut.yaml sets FastCUT's. Grouped as below.

        Networks:
            generator / discriminator: as in CycleGANModule; None = the CUT code's anti-aliased ResNet generator
                and PatchGAN (`CUT_GENERATOR`, `CUT_DISCRIMINATOR`). The generator needs an encoder (resnet).
            init_type / init_gain: weight initialisation of the generator, discriminator and MLP head.

        Losses and their weights:
            gan_mode: as in CycleGANModule. lambda_gan / lambda_nce: weights of the generator's adversarial and
                PatchNCE terms. lambda_gp: WGAN-GP penalty weight (gan_mode="wgangp" only).

        PatchNCE:
            nce_idt: identity NCE (g_ab(real_b) against real_b), averaged with the A→B term.
            flip_equivariance: FastCUT's mirrored inputs on half the steps.
            nce_layers: indices into the ResNet generator's layers whose outputs PatchNCE compares; None = the
                generator's `encoder_layers()` (the CUT choice: input, both downsamplings, first and middle block).
            num_patches / nce_t / mlp_channels: positions sampled per layer, InfoNCE temperature, head width.

        Optimiser and schedule, performance, options beyond the paper: as in CycleGANModule.
        """
        super().__init__()
        generator = dict(generator or CUT_GENERATOR)
        discriminator = dict(discriminator or CUT_DISCRIMINATOR)
        if gan_mode not in losses.GAN_MODES:
            raise ValueError(f"unknown gan_mode {gan_mode!r}; choose one of {losses.GAN_MODES}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0 = off), not {ema_decay}")
        if num_patches < 2 or nce_t <= 0:
            raise ValueError("num_patches must be ≥ 2 (the other patches are the negatives) and nce_t > 0")
        batch_lr_factor(batch_size, lr_scaling)  # validates both early
        nce_layers = None if nce_layers is None else [int(i) for i in nce_layers]
        # Lightning records each keyword argument under its name, flat, with the value it has here (the networks
        # and nce_layers normalised above): the checkpoint's `hyper_parameters` and `self.hparams`.
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.augment = augmenter(diffaugment)
        gen_kwargs, disc_kwargs = dict(generator), dict(discriminator)
        self.generator_arch = gen_kwargs.pop("arch")
        self.generator_kwargs = dict(gen_kwargs)
        self.g_ab = build_generator(self.generator_arch, **gen_kwargs)
        if not hasattr(self.g_ab, "encode"):
            raise ValueError(f"CUT needs a generator with an encoder (resnet), not {self.generator_arch!r}")
        self.d_b = build_discriminator(disc_kwargs.pop("arch"), **disc_kwargs)
        self.nce_layers = nce_layers if nce_layers is not None else self.g_ab.encoder_layers()
        self.nce_head = PatchSampleMLP(
            in_channels=self.g_ab.encoder_channels(self.nce_layers), channels=mlp_channels
        )
        for net in (self.g_ab, self.d_b, self.nce_head):
            init_weights(net, init_type=init_type, gain=init_gain)
        if ema_decay > 0:
            (self.g_ab_ema,) = self.ema_copies(self.g_ab)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def networks(self) -> tuple[nn.Module, ...]:
        return (self.g_ab, self.d_b)

    # ----------------------------------------------------------------------------- PatchNCE
    def nce_loss(
        self,
        source: torch.Tensor,  # (B, 3, H, W): the generator's input
        output: torch.Tensor,  # (B, 3, H, W): its translation (of the mirrored input when `flipped`)
        *,
        flipped: bool = False,
        generator: nn.Module | None = None,
        patch_rng: torch.Generator | None = None,
    ) -> torch.Tensor:
        """PatchNCE averaged over `nce_layers`: features of `output` (queries) against those of `source`
        (keys, no gradient) at the same random positions, both through the encoder of `generator` (default
        g_ab) and the MLP head. `patch_rng` fixes the positions (validation); default: the global RNG."""
        hp, net = self.hparams, self.g_ab if generator is None else generator
        feat_q = net.encode(output, self.nce_layers)
        if flipped:
            feat_q = [f.flip(3) for f in feat_q]  # back onto the source's positions
        with torch.no_grad():
            feat_k = net.encode(source, self.nce_layers)
            keys, patch_ids = self.nce_head(feat_k, hp.num_patches, generator=patch_rng)
        queries, _ = self.nce_head(feat_q, hp.num_patches, patch_ids=patch_ids)
        per_layer = [losses.patch_nce(q, k, hp.nce_t) for q, k in zip(queries, keys, strict=True)]
        return sum(per_layer) / len(per_layer)

    def _draw_flip(self) -> bool:
        """Flip-equivariance: mirror this step's inputs with probability 1/2 (global RNG: resumes exactly)."""
        return bool(torch.rand(()) < 0.5)

    # ----------------------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        # The head learns with the generator (one Adam over both equals CUT's two with the same settings).
        opt_g = self.adam(itertools.chain(self.g_ab.parameters(), self.nce_head.parameters()))
        opt_d = self.adam(self.d_b.parameters())
        return [opt_g, opt_d], self.linear_decay_schedulers(opt_g, opt_d)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        hp = self.hparams
        real_a = self._memory_format(batch["a"])  # (B, 3, H, W) in [-1, 1]
        real_b = self._memory_format(batch["b"])
        opt_g, opt_d = self.optimizers()
        flipped = hp.flip_equivariance and self._draw_flip()
        inputs = torch.cat([real_a, real_b]) if hp.nce_idt else real_a  # one pass for both (per-image norms)
        if flipped:
            inputs = inputs.flip(3)
        outputs = self.g_ab(inputs)  # built with every parameter trainable: the generator step uses it
        fake_b = outputs[: real_a.shape[0]]
        idt_b = outputs[real_a.shape[0] :] if hp.nce_idt else None

        with self.toggled_optimizer(opt_d):  # generator frozen; the discriminator first, as in CUT
            terms = self.discriminator_terms(self.d_b, real_b, fake_b)
            loss_d = self.discriminator_loss(terms)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(loss_d)
            opt_d.step()

        with self.toggled_optimizer(opt_g):  # discriminator frozen
            adv = losses.generator_adversarial(self.d_b(self.augment(fake_b)), hp.gan_mode)
            nce = self.nce_loss(real_a, fake_b, flipped=flipped)
            logs = {"train/g_adv": adv, "train/nce": nce}
            if hp.nce_idt:
                nce_idt = self.nce_loss(real_b, idt_b, flipped=flipped)
                logs["train/nce_idt"] = nce_idt
                nce = 0.5 * (nce + nce_idt)
            loss_g = hp.lambda_gan * adv + hp.lambda_nce * nce
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(loss_g)
            opt_g.step()
        if self.uses_ema:
            self.step_ema((self.g_ab_ema, self.g_ab))

        logs |= {"train/loss_g": loss_g, "train/loss_d": loss_d, "train/d_b": terms["adv"]}
        if "r1" in terms:
            logs["train/r1"] = terms["r1"]
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=real_a.shape[0])

    # ----------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def translate_batch(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """The sample grid's six columns for a one-way model (by the EMA generator when kept): real A | A→B |
        A→B→B (translated again) | real B | B→B (identity: should look like real B) | B→B→B. A generator that
        has learnt domain B leaves B images alone, so columns 3, 5 and 6 show how far it over-translates."""
        g_ab = self.evaluated_generator("g_ab")
        real_a, real_b = self._memory_format(real_a), self._memory_format(real_b)
        fake_b, idt_b = g_ab(real_a), g_ab(real_b)
        return {
            "real_a": real_a,
            "fake_b": fake_b,
            "rec_a": g_ab(fake_b),
            "real_b": real_b,
            "fake_a": idt_b,
            "rec_b": g_ab(idt_b),
        }

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """val/nce: PatchNCE of A→B at positions fixed per batch (no global random numbers drawn);
        val/identity_l1: |g_ab(real_b) - real_b|."""
        g_ab = self.evaluated_generator("g_ab")
        real_a, real_b = self._memory_format(batch["a"]), self._memory_format(batch["b"])
        fake_b = g_ab(real_a)
        positions = torch.Generator().manual_seed(batch_idx)
        nce = self.nce_loss(real_a, fake_b, generator=g_ab, patch_rng=positions)
        identity = losses.identity_l1(g_ab(real_b), real_b)
        self.log_dict(
            {"val/nce": nce, "val/identity_l1": identity},
            batch_size=real_a.shape[0],
            sync_dist=True,
            prog_bar=True,
        )

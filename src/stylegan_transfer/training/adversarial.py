"""Pieces shared by the adversarial modules (CycleGAN, CUT): the discriminator's terms with DiffAugment,
WGAN-GP and R1, an exponential moving average (EMA) of generator weights, and `AdversarialModule`, the
LightningModule base with what both do alike (manual optimisation, Adam with the batch LR rule, the linear-decay
schedule stepped per epoch, the performance switches).

The discriminator's weights (`lambda_gp`, `lambda_r1`) are applied in `AdversarialModule.discriminator_loss`,
which each `training_step` calls once per discriminator; every other weight in the modules' `training_step`.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable

import lightning as L
import torch
from torch import nn

from stylegan_transfer import losses
from stylegan_transfer.augment import diff_augment, parse_policy
from stylegan_transfer.inference.checkpoint import EMA_SUFFIX
from stylegan_transfer.training.optim import batch_lr_factor, linear_decay_factor

Augment = Callable[[torch.Tensor], torch.Tensor]


def _identity(images: torch.Tensor) -> torch.Tensor:
    return images


def augmenter(policy: str) -> Augment:
    """The DiffAugment function of `policy` (validated here, so a typo fails at construction); '' = none."""
    names = parse_policy(policy)
    return functools.partial(diff_augment, policy=names) if names else _identity


def discriminator_terms(
    disc: nn.Module,
    real: torch.Tensor,  # (B, C, H, W)
    fake: torch.Tensor,  # (B, C, H, W); detached here
    *,
    gan_mode: losses.GanMode,
    augment: Augment = _identity,
    gradient_penalty: bool = False,
    r1: bool = False,
) -> dict[str, torch.Tensor]:
    """`adv`: the discriminator's adversarial loss on augmented real and fake images; `gp`: the WGAN-GP
    penalty (when asked); `r1`: the per-patch R1 E||∇D_p||² (`losses.r1_penalty`) on the augmented reals D was
    scored on (when asked)."""
    real_in = augment(real)
    if r1:
        real_in = real_in.detach().requires_grad_(True)
    real_logits = disc(real_in)
    terms = {"adv": losses.discriminator_adversarial(real_logits, disc(augment(fake.detach())), gan_mode)}
    if gradient_penalty:
        critic = disc if augment is _identity else (lambda images: disc(augment(images)))
        terms["gp"] = losses.gradient_penalty(critic, real, fake)
    if r1:
        terms["r1"] = losses.r1_penalty(real_logits, real_in)
    return terms


# ----------------------------------------------------------------------------- EMA of generator weights
def ema_copy(net: nn.Module) -> nn.Module:
    """A frozen copy of `net` to hold its moving average (starts equal to `net`)."""
    return copy.deepcopy(net).requires_grad_(False)


def ema_decay_at(decay: float, updates: int) -> float:
    """The decay of update number `updates` (0-based), warmed up as min(decay, (1 + n) / (10 + n)): the random start
    fades within the first few dozen steps, so a short run is not an average with its own initialisation."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


@torch.no_grad()
def update_ema(ema: nn.Module, net: nn.Module, decay: float) -> None:
    """p_ema ← decay·p_ema + (1 - decay)·p for every parameter; buffers (batch-norm statistics) copied."""
    for p_ema, p in zip(ema.parameters(), net.parameters(), strict=True):
        p_ema.lerp_(p.detach().to(p_ema.dtype), 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), net.buffers(), strict=True):
        b_ema.copy_(b)


# ----------------------------------------------------------------------------- the shared LightningModule base
class AdversarialModule(L.LightningModule):
    """Base of CycleGANModule and CUTModule. Subclasses define `networks` (the trained networks, compiled in
    place when asked), set `self.augment` (see `augmenter`) and have these hyper-parameters: lr, beta1, beta2,
    batch_size, lr_scaling, epochs_constant, epochs_decay, gan_mode, lambda_gp, lambda_r1, ema_decay,
    channels_last, compile, fused_adam.

    For the model contract (`contract.TranslationModel`) it provides `uses_ema` and `evaluated_generator`;
    subclasses declare `generator_roles` and `fallback_metric`, set `generator_arch` and `generator_kwargs`,
    keep each role's generator as the submodule of that name and, when `ema_decay` > 0, its moving average as
    `<role>_ema` (see `ema_copies`), and define `translate_batch`."""

    _compiled = False  # set once `configure_model` has compiled the networks

    @property
    def networks(self) -> tuple[nn.Module, ...]:
        raise NotImplementedError

    @property
    def uses_ema(self) -> bool:
        return self.hparams.ema_decay > 0

    def evaluated_generator(self, role: str) -> nn.Module:
        """The generator of `role` as validation, samples, KID and export see it: `<role>_ema` when kept."""
        if role not in self.generator_roles:
            raise KeyError(f"{type(self).__name__} has no generator {role!r}; it has {self.generator_roles}")
        return self.get_submodule(role + EMA_SUFFIX if self.uses_ema else role)

    def ema_copies(self, *nets: nn.Module) -> tuple[nn.Module, ...]:
        """Frozen moving averages of `nets` and their update counter (a buffer: saved, resumed and moved with the
        module)."""
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        return tuple(ema_copy(net) for net in nets)

    def step_ema(self, *pairs: tuple[nn.Module, nn.Module]) -> None:
        """One update of each (average, network) pair with the warmed-up decay (`ema_decay_at`)."""
        decay = ema_decay_at(self.hparams.ema_decay, int(self.ema_updates))
        for ema, net in pairs:
            update_ema(ema, net, decay)
        self.ema_updates += 1

    def configure_model(self) -> None:
        """Compile once, in place: `nn.Module.compile` keeps parameter names, so checkpoints and exports agree."""
        if self.hparams.compile and not self._compiled:
            for net in self.networks:
                net.compile()
            self._compiled = True

    def _memory_format(self, images: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        if self.hparams.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    # ------------------------------------------------------------------------- optimisation
    def _world_size(self) -> int:
        trainer = self._trainer  # None outside a Trainer
        return int(trainer.world_size) if trainer is not None else 1

    def adam_implementation(self) -> dict[str, bool]:
        """Keyword arguments for torch.optim.Adam: {"fused": True} or torch's default (foreach on GPU)."""
        fused = self.hparams.fused_adam
        if fused is None:
            fused = self.device.type == "cuda"
        return {"fused": True} if fused else {}

    def adam(self, params: Iterable[nn.Parameter]) -> torch.optim.Adam:
        """Adam with the module's betas and its LR scaled by the global batch (`batch_lr_factor`)."""
        hp = self.hparams
        lr = hp.lr * batch_lr_factor(hp.batch_size * self._world_size(), hp.lr_scaling)
        return torch.optim.Adam(params, lr=lr, betas=(hp.beta1, hp.beta2), **self.adam_implementation())

    def linear_decay_schedulers(self, *optimizers: torch.optim.Optimizer) -> list:
        """Constant LR for `epochs_constant` epochs, then linear decay to 0 over `epochs_decay` (stepped by hand
        in `on_train_epoch_end`)."""
        hp = self.hparams
        rule = functools.partial(
            linear_decay_factor, epochs_constant=hp.epochs_constant, epochs_decay=hp.epochs_decay
        )
        return [torch.optim.lr_scheduler.LambdaLR(opt, rule) for opt in optimizers]

    def on_train_epoch_end(self) -> None:
        # Logged once per epoch: a Python float logged every step would be copied to the GPU every step.
        opt_g = self.optimizers()[0]
        self.log("train/lr", opt_g.param_groups[0]["lr"], on_step=False, on_epoch=True, sync_dist=True)
        for scheduler in self.lr_schedulers():
            scheduler.step()

    # ------------------------------------------------------------------------- discriminators
    def discriminator_terms(
        self, disc: nn.Module, real: torch.Tensor, fake: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        hp = self.hparams
        return discriminator_terms(
            disc,
            real,
            fake,
            gan_mode=hp.gan_mode,
            augment=self.augment,
            gradient_penalty=hp.gan_mode == "wgangp",
            r1=hp.lambda_r1 > 0,
        )

    def discriminator_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """adv + λ_gp·gp (wgangp) + λ_r1/2·r1 (R1 on): the one place these two weights are applied."""
        hp = self.hparams
        loss = terms["adv"]
        if "gp" in terms:
            loss = loss + hp.lambda_gp * terms["gp"]
        if "r1" in terms:
            loss = loss + 0.5 * hp.lambda_r1 * terms["r1"]
        return loss

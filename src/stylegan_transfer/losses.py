"""Loss functions as pure functions of tensors.

No weights (`lambda_*`) live here: the training step combines the terms. Adversarial losses take the
discriminator's raw logits. Conventions follow the CycleGAN reference: LSGAN targets 1 (real) and 0 (fake),
the discriminator loss is the mean of its real and fake terms.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

GanMode = Literal["lsgan", "vanilla", "hinge", "wgangp"]
GAN_MODES: tuple[str, ...] = ("lsgan", "vanilla", "hinge", "wgangp")


def _check_mode(mode: str) -> None:
    if mode not in GAN_MODES:
        raise ValueError(f"unknown gan_mode {mode!r}; choose one of {GAN_MODES}")


def generator_adversarial(fake_logits: torch.Tensor, mode: GanMode) -> torch.Tensor:
    """Loss of a generator whose outputs the discriminator scored `fake_logits`."""
    _check_mode(mode)
    fake_logits = fake_logits.float()
    if mode == "lsgan":
        return F.mse_loss(fake_logits, torch.ones_like(fake_logits))
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    return -fake_logits.mean()  # hinge and WGAN share the generator term


def discriminator_adversarial(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, mode: GanMode
) -> torch.Tensor:
    """Discriminator loss; for lsgan/vanilla it is 0.5 * (real term + fake term) as in the reference."""
    _check_mode(mode)
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    if mode == "lsgan":
        real = F.mse_loss(real_logits, torch.ones_like(real_logits))
        fake = F.mse_loss(fake_logits, torch.zeros_like(fake_logits))
        return 0.5 * (real + fake)
    if mode == "vanilla":
        real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return 0.5 * (real + fake)
    if mode == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    return fake_logits.mean() - real_logits.mean()  # wgangp critic (add gradient_penalty separately)


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,  # (B, C, H, W)
    fake: torch.Tensor,  # (B, C, H, W)
    *,
    alpha: torch.Tensor | None = None,  # (B, 1, 1, 1) interpolation weights; random when None
    target_norm: float = 1.0,
) -> torch.Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017): E[(||grad_x D(x_hat)||_2 - target)^2] at random interpolates.

    The graph is kept (`create_graph=True`) so the penalty's own gradient reaches the critic's parameters.
    """
    if alpha is None:
        alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat)
    (grads,) = torch.autograd.grad(scores.float().sum(), x_hat, create_graph=True)
    norms = grads.float().flatten(1).norm(2, dim=1)  # (B,)
    return ((norms - target_norm) ** 2).mean()


def r1_penalty(
    real_logits: torch.Tensor,  # (B, 1, H', W') patch logits, or (B, 1) / (B,): one per image
    real_images: torch.Tensor,  # (B, C, H, W): what D was applied to, with requires_grad
    *,
    signs: torch.Tensor | None = None,  # ±1 per logit, shape of real_logits; None: random (Rademacher)
) -> torch.Tensor:
    """R1 (Mescheder et al. 2018) per patch: E_x mean_p ||∇_x D_p(x)||², estimated without bias in one pass.

    A PatchGAN is P one-logit discriminators D_p, one per receptive field, whose adversarial losses are averaged;
    R1 here treats each alike: the mean over patches of each patch logit's squared input-gradient norm, mean over
    the batch. The regulariser is γ/2 times this, so γ means what it means for a one-logit D (StyleGAN2's
    γ/2·E||∇D(x)||²), whatever P and the image size; with one logit per image it is exactly that R1.

    Not the gradient of the sum of the patch logits (it grows with P: ~14x / 43x the per-patch value at 64 / 128
    px for the 70x70 PatchGAN) nor of their mean (it shrinks like 1/P, and both miss what cancels between
    patches: a zero-mean, high-pass filter has no gradient summed over a uniform region). Computing every
    patch's gradient takes P backward passes; instead, with independent random signs ε_p = ±1,
    E_ε ||∇_x Σ_p ε_p D_p(x)||² = Σ_p ||∇_x D_p(x)||² (the cross terms average to zero), so
    ||∇_x Σ_p ε_p D_p(x)||² / P, one backward pass, estimates the per-patch mean without bias (Hutchinson's trick);
    exact for any signs when the patches' receptive fields do not overlap. (At 64-128 px, one image, the 70x70
    PatchGAN: a relative spread of 3-5% per draw.)

    `signs` fixes ε (tests); by default they are drawn from the global RNG. The graph is kept
    (`create_graph=True`) so that the penalty's own gradient reaches D's parameters.
    """
    logits = real_logits.float()
    if signs is None:
        signs = torch.randint(0, 2, logits.shape, device=logits.device).to(logits.dtype) * 2 - 1
    elif signs.shape != logits.shape:
        raise ValueError(f"signs of shape {tuple(signs.shape)} for logits of shape {tuple(logits.shape)}")
    patches = logits[0].numel() if logits.ndim > 1 else 1  # P logits per image
    (grads,) = torch.autograd.grad((logits * signs).sum(), real_images, create_graph=True)
    return grads.float().pow(2).flatten(1).sum(dim=1).mean() / patches


def patch_nce(feat_q: torch.Tensor, feat_k: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """PatchNCE (Park et al. 2020): InfoNCE between N patch features of an output (`feat_q`, (B, N, C)) and of
    its input at the same positions (`feat_k`, (B, N, C), detached), each row L2-normalised by the caller.

    For patch i of an image: logits = [q_i·k_i, q_i·k_j for j ≠ i (the image's other patches)] / temperature,
    loss = cross-entropy with the positive as the target, i.e. -log softmax at position 0. Mean over B·N.
    """
    feat_q, feat_k = feat_q.float(), feat_k.detach().float()
    n = feat_q.shape[1]
    similarity = feat_q @ feat_k.transpose(1, 2)  # (B, N, N): [b, i, j] = q_i·k_j
    positive = similarity.diagonal(dim1=1, dim2=2)[..., None]  # (B, N, 1)
    eye = torch.eye(n, dtype=torch.bool, device=feat_q.device)
    negatives = similarity.masked_fill(eye, float("-inf"))  # (B, N, N): q_i·k_i excluded from its own row
    logits = torch.cat([positive, negatives], dim=2).flatten(0, 1) / temperature  # (B·N, 1 + N)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def cycle_l1(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """|| G_ba(G_ab(a)) - a ||_1, mean over all elements."""
    return F.l1_loss(reconstructed.float(), original.float())


def identity_l1(same: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """|| G_ab(b) - b ||_1: a generator fed an image of its target domain should leave it unchanged."""
    return F.l1_loss(same.float(), original.float())


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C) Gram matrix normalised by C*H*W (Johnson et al.)."""
    b, c, h, w = features.shape
    flat = features.float().reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def content_loss(features: Sequence[torch.Tensor], target_features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean squared feature difference summed over the given layers."""
    return sum(F.mse_loss(f.float(), t.float()) for f, t in zip(features, target_features, strict=True))


def gram_style_loss(
    features: Sequence[torch.Tensor], target_features: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Sum over layers of the squared Frobenius distance between Gram matrices, averaged over the batch.

    Target Gram matrices are averaged over the target batch, so one style image or a batch of
    domain images can serve as the target.
    """
    total = features[0].new_zeros((), dtype=torch.float32)
    for f, t in zip(features, target_features, strict=True):
        gram = gram_matrix(f)  # (B, C, C)
        target = gram_matrix(t).mean(dim=0, keepdim=True)  # (1, C, C)
        total = total + ((gram - target) ** 2).sum(dim=(1, 2)).mean()
    return total


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation: mean absolute difference between neighbouring pixels."""
    images = images.float()
    dh = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    dw = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    return dh + dw


# --------------------------------------------------------------------------- Gram terms (style)
def gram_distance(features: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """||gram(features) - target||²_F averaged over the batch; `target_gram` (C, C) or (1, C, C)."""
    return (
        ((gram_matrix(features) - target_gram.reshape(1, *target_gram.shape[-2:])) ** 2)
        .sum(dim=(1, 2))
        .mean()
    )


def blend_grams(grams: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Σ_k w_k G_k: the Gram matrix of the mixture of several styles' feature distributions."""
    return sum(w * g for w, g in zip(weights, grams, strict=True))

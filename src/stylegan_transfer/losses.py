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


# --------------------------------------------------------------------------- neural style transfer (Gatys, MMD)
#
# Style as a distribution (Li et al. 2017, "Demystifying Neural Style Transfer"): a layer's activations
# (C, H, W) are N = H*W samples of C-dimensional vectors, and style loss is the squared maximum mean
# discrepancy between the samples of the image and of the style:
#     MMD²(X, S) = mean_ij k(x_i, x_j) + mean_ij k(s_i, s_j) - 2 mean_ij k(x_i, s_j).
# Kernels: linear k = x·y (matches only the feature means: MMD² = ||mean x - mean s||²),
# polynomial k = (x·y + offset)^degree, Gaussian k = exp(-||x - y||² / (2 bandwidth²)).
# The Gram loss is MMD² with the *quadratic* kernel k = (x·y)² (polynomial, offset 0, degree 2), which is the
# linear kernel applied to the second-order features x xᵀ. With our Gram normalisation G = F Fᵀ / (C·H·W):
#     MMD²_quadratic = C² · ||G_x - G_s||²_F        (exactly, for any H*W of either image),
# so `gram_distance` (and `gram_style_loss` per layer) = MMD²_quadratic / C².

Kernel = Literal["linear", "poly", "gaussian"]
KERNELS: tuple[str, ...] = ("linear", "poly", "gaussian")


def feature_samples(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B*H*W, C): every spatial position of every image is one sample."""
    b, c, h, w = features.shape
    return features.float().permute(0, 2, 3, 1).reshape(b * h * w, c)


def kernel_matrix(
    x: torch.Tensor,  # (N, D)
    y: torch.Tensor,  # (M, D)
    kernel: Kernel,
    *,
    degree: int = 2,
    offset: float = 0.0,
    bandwidth: float = 1.0,
) -> torch.Tensor:  # (N, M)
    if kernel == "linear":
        return x @ y.T
    if kernel == "poly":
        return (x @ y.T + offset) ** degree
    if kernel == "gaussian":
        sq = (x * x).sum(1, keepdim=True) - 2 * x @ y.T + (y * y).sum(1)[None, :]
        return torch.exp(-sq.clamp_min(0) / (2 * bandwidth**2))
    raise ValueError(f"unknown kernel {kernel!r}; choose one of {KERNELS}")


def median_bandwidth(samples: torch.Tensor) -> float:
    """Gaussian bandwidth σ with 2σ² = the mean squared distance between samples (Li et al.'s choice)."""
    s = samples.detach().float()
    sq = ((s * s).sum(1, keepdim=True) - 2 * s @ s.T + (s * s).sum(1)[None, :]).clamp_min(0)
    return float((sq.mean() / 2).sqrt().clamp_min(1e-8))


def mmd2(
    x: torch.Tensor,  # (N, D) samples of the image
    targets: Sequence[torch.Tensor],  # per style (M_k, D) samples
    weights: Sequence[float] | None = None,
    *,
    kernel: Kernel = "poly",
    degree: int = 2,
    offset: float = 0.0,
    bandwidth: float = 1.0,
) -> torch.Tensor:
    """Biased (V-statistic) MMD² between `x` and the mixture Σ_k weights[k] · targets[k] (weights sum to 1)."""
    weights = [1.0 / len(targets)] * len(targets) if weights is None else list(weights)
    kw = {"degree": degree, "offset": offset, "bandwidth": bandwidth}
    if kernel == "linear":  # closed form, no N×M matrices: ||mean x - Σ w_k mean s_k||²
        mix = sum(w * t.float().mean(0) for w, t in zip(weights, targets, strict=True))
        return ((x.float().mean(0) - mix) ** 2).sum()
    total = kernel_matrix(x, x, kernel, **kw).mean()
    for wk, sk in zip(weights, targets, strict=True):
        total = total - 2 * wk * kernel_matrix(x, sk, kernel, **kw).mean()
        for wl, sl in zip(weights, targets, strict=True):
            total = total + wk * wl * kernel_matrix(sk, sl, kernel, **kw).mean()
    return total


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


def mmd_style_loss(
    features: Sequence[torch.Tensor],
    target_features: Sequence[torch.Tensor | Sequence[torch.Tensor]],
    weights: Sequence[float] | None = None,
    *,
    kernel: Kernel = "poly",
    degree: int = 2,
    offset: float = 0.0,
    bandwidth: float | None = None,
    max_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sum over layers of MMD² between the image's feature samples and the style's (a mixture if a list).

    `target_features[l]` is one tensor (its batch pooled into one sample set) or a list with one tensor per
    style, mixed by `weights`. `bandwidth=None` picks `median_bandwidth` of the first style's samples.
    `max_samples` draws that many random positions per set (with `generator`) to bound the N×M kernel matrices;
    the linear kernel never needs it.
    """

    def draw(samples: torch.Tensor) -> torch.Tensor:
        if max_samples is None or kernel == "linear" or samples.shape[0] <= max_samples:
            return samples
        index = torch.randperm(samples.shape[0], generator=generator)[:max_samples].to(samples.device)
        return samples[index]

    total = features[0].new_zeros((), dtype=torch.float32)
    for f, t in zip(features, target_features, strict=True):
        styles = [t] if isinstance(t, torch.Tensor) else list(t)
        x = draw(feature_samples(f))
        ys = [draw(feature_samples(s.detach())) for s in styles]
        sigma = median_bandwidth(ys[0]) if bandwidth is None and kernel == "gaussian" else (bandwidth or 1.0)
        total = total + mmd2(x, ys, weights, kernel=kernel, degree=degree, offset=offset, bandwidth=sigma)
    return total

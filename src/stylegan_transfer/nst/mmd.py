"""Style as a distribution: squared maximum mean discrepancy between feature samples (Li et al. 2017,
"Demystifying Neural Style Transfer").

A layer's activations (C, H, W) are N = H*W samples of C-dimensional vectors, and the style loss is
    MMD²(X, S) = mean_ij k(x_i, x_j) + mean_ij k(s_i, s_j) - 2 mean_ij k(x_i, s_j).
Kernels: linear k = x·y (matches only the feature means: MMD² = ||mean x - mean s||²), polynomial
k = (x·y + offset)^degree, Gaussian k = exp(-||x - y||² / (2 bandwidth²)). The Gram loss is MMD² with the
*quadratic* kernel k = (x·y)² (polynomial, offset 0, degree 2). With our Gram normalisation
G = F Fᵀ / (C·H·W):  MMD²_quadratic = C² · ||G_x - G_s||²_F  (exactly, for any H*W of either image), so
`losses.gram_distance` (and `losses.gram_style_loss` per layer) = MMD²_quadratic / C².
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

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


def poly2_mmd2(
    x: torch.Tensor,  # (N, D)
    targets: Sequence[torch.Tensor],  # per style (M_k, D)
    weights: Sequence[float],
    *,
    offset: float = 0.0,
) -> torch.Tensor:
    """MMD² for k = (x·y + offset)², exactly and without N×M matrices: with second moments
    M = SᵀS / |S| and means μ, it is ||M_x - Σ w_k M_k||²_F + 2·offset·||μ_x - Σ w_k μ_k||² (weights sum
    to 1). O(N·D²): every position counts, at the cost of the Gram loss it equals (offset 0)."""
    x = x.float()
    m_x, mu_x = x.T @ x / x.shape[0], x.mean(0)
    m_mix = sum(w * (t.float().T @ t.float()) / t.shape[0] for w, t in zip(weights, targets, strict=True))
    mu_mix = sum(w * t.float().mean(0) for w, t in zip(weights, targets, strict=True))
    return ((m_x - m_mix) ** 2).sum() + 2 * offset * ((mu_x - mu_mix) ** 2).sum()


def fourier_features(samples: torch.Tensor, projection: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Random Fourier features (Rahimi & Recht 2007): φ(s) = sqrt(2/R) cos(s W + b), so that
    φ(x)·φ(y) ≈ exp(-||x - y||² / (2σ²)) when W ~ N(0, 1/σ²) (D, R) and b ~ U(0, 2π) (R,). (N, D) -> (N, R)."""
    return (2.0 / projection.shape[1]) ** 0.5 * torch.cos(samples.float() @ projection + phase)


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
    if kernel == "poly" and degree == 2:  # closed form too (the Gram loss's kernel)
        return poly2_mmd2(x, targets, weights, offset=offset)
    total = kernel_matrix(x, x, kernel, **kw).mean()
    for wk, sk in zip(weights, targets, strict=True):
        total = total - 2 * wk * kernel_matrix(x, sk, kernel, **kw).mean()
        for wl, sl in zip(weights, targets, strict=True):
            total = total + wk * wl * kernel_matrix(sk, sl, kernel, **kw).mean()
    return total


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
    the linear and quadratic kernels (closed forms) never need it. The draw is fresh at every call: an optimiser that needs one fixed
    objective (L-BFGS) should draw once and call `mmd2`, as `nst.stylize.StyleObjective` does per scale.
    """

    exact = kernel == "linear" or (kernel == "poly" and degree == 2)  # closed forms: no matrices to bound

    def draw(samples: torch.Tensor) -> torch.Tensor:
        if max_samples is None or exact or samples.shape[0] <= max_samples:
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

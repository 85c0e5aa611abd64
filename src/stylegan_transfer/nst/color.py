"""Colour handling for stylisation: luminance-only transfer (YIQ) and affine colour-statistics matching
(Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style Transfer")."""

from __future__ import annotations

import torch

_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def rgb_to_yiq(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [-1, 1] -> YIQ of the [0, 1] image (Y in [0, 1])."""
    x01 = (images.float() + 1) / 2
    return torch.einsum("ij,bjhw->bihw", _RGB_TO_YIQ.to(images.device), x01)


def yiq_to_rgb(yiq: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_to_yiq`: back to RGB in [-1, 1] (not clamped)."""
    inverse = torch.linalg.inv(_RGB_TO_YIQ).to(yiq.device)
    return torch.einsum("ij,bjhw->bihw", inverse, yiq) * 2 - 1


def luminance_image(images: torch.Tensor, *, like: torch.Tensor | None = None) -> torch.Tensor:
    """Grey RGB image of the luminance; with `like`, Y's mean and std are matched to `like`'s (Gatys 2016)."""
    y = rgb_to_yiq(images)[:, :1]  # (B, 1, H, W)
    if like is not None:
        ref = rgb_to_yiq(like)[:, :1]
        y = (y - y.mean()) / y.std().clamp_min(1e-6) * ref.std() + ref.mean()
    return (y * 2 - 1).expand(-1, 3, -1, -1).contiguous()  # (B, 3, H, W)


def combine_luminance(stylised: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Y of `stylised` with I and Q (the chrominance) of `content`; both (B, 3, H, W) in [-1, 1]."""
    y = rgb_to_yiq(stylised)[:, :1]
    iq = rgb_to_yiq(content)[:, 1:]
    return yiq_to_rgb(torch.cat([y, iq], dim=1)).clamp(-1, 1)


def _sym_power(cov: torch.Tensor, power: float) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(cov)
    return vectors @ torch.diag(values.clamp_min(1e-8) ** power) @ vectors.T


def match_color_statistics(source: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Affine colour transfer: `source`'s pixels get `reference`'s RGB mean and covariance (Gatys et al. 2017).

    x' = Σ_r^½ Σ_s^-½ (x - μ_s) + μ_r, with symmetric matrix square roots. Both (1, 3, H, W) in [-1, 1].
    """
    src = source.float().reshape(3, -1)
    ref = reference.float().reshape(3, -1)
    mu_s, mu_r = src.mean(1, keepdim=True), ref.mean(1, keepdim=True)
    cov_s = torch.cov(src) + 1e-5 * torch.eye(3, device=src.device)
    cov_r = torch.cov(ref) + 1e-5 * torch.eye(3, device=src.device)
    transform = _sym_power(cov_r, 0.5) @ _sym_power(cov_s, -0.5)
    out = transform @ (src - mu_s) + mu_r
    return out.reshape(source.shape).clamp(-1, 1)

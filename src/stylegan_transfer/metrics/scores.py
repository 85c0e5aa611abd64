"""Image-translation metrics: FID and KID on Inception pool features, LPIPS for content preservation.

Pure functions and modules only: nothing here reads files or the network (weights come from
`metrics/weights.py`). Images enter as (B, 3, H, W) float tensors in [-1, 1], RGB.

Protocol (the one published FID numbers use, as in pytorch-fid):
- features: the 2048-d average-pool output of the TF 2015-12-05 Inception-v3 ("FID Inception"),
- input: RGB, bilinear resize (align_corners=False, no antialias) to 299×299, values in [-1, 1],
- FID: Fréchet distance between Gaussians fitted to the two feature sets (float64),
- KID: unbiased MMD² with the cubic polynomial kernel k(x, y) = (xᵀy / d + 1)³, mean ± std over
  random subsets (unbiased even for small sets, which FID is not).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.inception import (
    BasicConv2d,
    InceptionA,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
)

from stylegan_transfer.inference.generator_file import generator_multiple
from stylegan_transfer.networks import PaddedGenerator

INCEPTION_SIZE = 299
FEATURE_DIM = 2048


# --------------------------------------------------------------------------- FID Inception network
class _FIDInceptionA(InceptionA):
    """InceptionA whose pooling branch averages over real pixels only (count_include_pad=False)."""

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        tower_5x5 = self.branch5x5_2(self.branch5x5_1(x))
        tower_3x3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return [self.branch1x1(x), tower_5x5, tower_3x3, self.branch_pool(pooled)]


class _FIDInceptionC(InceptionC):
    """InceptionC with the same TF-style average pooling (count_include_pad=False)."""

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        tower_7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        tower_dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            tower_dbl = layer(tower_dbl)
        pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return [self.branch1x1(x), tower_7x7, tower_dbl, self.branch_pool(pooled)]


class _FIDInceptionE(InceptionE):
    """InceptionE; the TF graph pools by average (count_include_pad=False) in Mixed_7b, by max in Mixed_7c."""

    def __init__(self, in_channels: int, *, pool: str) -> None:
        super().__init__(in_channels)
        self.pool = pool

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.branch3x3_1(x)
        tower_3x3 = torch.cat([self.branch3x3_2a(stem), self.branch3x3_2b(stem)], 1)
        stem_dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        tower_dbl = torch.cat([self.branch3x3dbl_3a(stem_dbl), self.branch3x3dbl_3b(stem_dbl)], 1)
        if self.pool == "max":
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return [self.branch1x1(x), tower_3x3, tower_dbl, self.branch_pool(pooled)]


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3, laid out like pytorch-fid's port so that its state dict loads strictly.

    Constructed uninitialised: get pretrained weights through `metrics.weights.load_fid_inception`.
    `forward` takes 299×299 images in [-1, 1] and returns the (B, 2048) pool features.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = _FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = _FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = _FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = _FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = _FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = _FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = _FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = _FIDInceptionE(1280, pool="avg")
        self.Mixed_7c = _FIDInceptionE(2048, pool="max")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 299, 299) in [-1, 1]
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = block(x)  # (B, C, h, w)
        return x.mean(dim=(2, 3))  # (B, 2048)


def resize_for_inception(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] → (B, 3, 299, 299): bilinear, align_corners=False, no antialias."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected RGB images shaped (B, 3, H, W), got {tuple(images.shape)}")
    if images.shape[-2:] == (INCEPTION_SIZE, INCEPTION_SIZE):
        return images
    return F.interpolate(
        images, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False, antialias=False
    )


class InceptionFeatures(nn.Module):
    """Frozen feature extractor: images in [-1, 1] of any size → (B, 2048) float64 pool features.

    `network` is a `FIDInceptionV3` or any module with the same contract (the TorchScript file).
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> InceptionFeatures:
        return super().train(False)  # BatchNorm statistics stay frozen

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [-1, 1]
        x = resize_for_inception(images.float().clamp(-1, 1))
        return self.network(x).double()  # (B, 2048)


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Round [-1, 1] images to the 8-bit grid, as if saved to PNG and read back (fair real-vs-fake)."""
    return torch.round((images.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1


@torch.no_grad()
def extract_features(
    extractor: nn.Module, batches: Iterable[torch.Tensor], *, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Concatenate `extractor(batch)` over an iterable of (B, 3, H, W) batches → (N, D) float64."""
    found = [extractor(batch.to(device)).double().cpu() for batch in batches]
    if not found:
        raise ValueError("no images to extract features from")
    return torch.cat(found).numpy()


# --------------------------------------------------------------------------- FID and KID
def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of (N, D) features, float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors shaped (N, D), got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """‖μ1-μ2‖² + tr(Σ1) + tr(Σ2) - 2 tr((Σ1 Σ2)^½), in float64.

    tr((Σ1 Σ2)^½) is computed as the sum of square roots of the eigenvalues of the symmetric
    positive semi-definite Σ1^½ Σ2 Σ1^½ (same spectrum), which stays real and stable for the
    rank-deficient covariances of small sample sets.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("the two feature sets have different dimensions")
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def fid_from_features(features_1: np.ndarray, features_2: np.ndarray) -> float:
    """FID between two (N, D) feature sets.

    With fewer vectors than dimensions (the usual case for in-training evaluation) it avoids D×D
    eigen-decompositions: with centred features A1, A2 and Σi = AiᵀAi / (Ni-1), the non-zero eigenvalues
    of Σ1Σ2 are the squared singular values of A1A2ᵀ / √((N1-1)(N2-1)), so tr((Σ1Σ2)^½) is their sum.
    """
    x = np.asarray(features_1, dtype=np.float64)
    y = np.asarray(features_2, dtype=np.float64)
    if min(x.shape[0], y.shape[0]) >= x.shape[1]:
        return frechet_distance(*feature_statistics(x), *feature_statistics(y))
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(x.shape[0], y.shape[0]) < 2:
        raise ValueError(f"need at least 2 feature vectors shaped (N, D) each, got {x.shape} and {y.shape}")
    mu1, mu2 = x.mean(axis=0), y.mean(axis=0)
    a1, a2 = x - mu1, y - mu2
    n1, n2 = x.shape[0] - 1, y.shape[0] - 1
    trace_sqrt = float(np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()) / np.sqrt(n1 * n2)
    trace1, trace2 = float((a1 * a1).sum()) / n1, float((a2 * a2).sum()) / n2
    diff = mu1 - mu2
    return float(diff @ diff + trace1 + trace2 - 2 * trace_sqrt)


def _polynomial_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    m, n = x.shape[0], y.shape[0]
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.mean())


@dataclass(frozen=True)
class KID:
    mean: float
    std: float
    subsets: int
    subset_size: int


def kernel_inception_distance(
    features_1: np.ndarray,
    features_2: np.ndarray,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> KID:
    """Unbiased KID (polynomial-kernel MMD²): mean ± std over `subsets` random subsets drawn without
    replacement, each of min(`subset_size`, N1, N2) vectors. Unbiased: ≈ 0 on average for two samples
    of one distribution (single values may be negative)."""
    x = np.asarray(features_1, dtype=np.float64)
    y = np.asarray(features_2, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with equal D, got {x.shape} and {y.shape}")
    size = min(subset_size, x.shape[0], y.shape[0])
    if size < 2:
        raise ValueError("KID needs at least 2 images in each set")
    rng = np.random.default_rng(seed)
    values = [
        _polynomial_mmd2_unbiased(
            x[rng.choice(x.shape[0], size, replace=False)], y[rng.choice(y.shape[0], size, replace=False)]
        )
        for _ in range(subsets)
    ]
    return KID(mean=float(np.mean(values)), std=float(np.std(values)), subsets=subsets, subset_size=size)


# --------------------------------------------------------------------------- LPIPS
# Taps (indices of ReLUs in torchvision's `features`) and their widths, as LPIPS v0.1 uses them.
LPIPS_NETS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "vgg": ((3, 8, 15, 22, 29), (64, 128, 256, 512, 512)),
    "alex": ((1, 4, 7, 9, 11), (64, 192, 384, 256, 256)),
}
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)


def lpips_backbone(net: str) -> nn.Sequential:
    """torchvision's vgg16 / alexnet `features`, uninitialised, truncated after the last LPIPS tap."""
    from torchvision.models import alexnet, vgg16

    if net not in LPIPS_NETS:
        raise ValueError(f"unknown LPIPS network {net!r}; choose one of {sorted(LPIPS_NETS)}")
    features = (vgg16 if net == "vgg" else alexnet)(weights=None).features
    last = LPIPS_NETS[net][0][-1]
    return nn.Sequential(*list(features.children())[: last + 1])


class LPIPS(nn.Module):
    """Learned perceptual distance (LPIPS v0.1 'lin'): per image, (B,) — 0 for identical images.

    State-dict keys: `features.<i>.weight/bias` (torchvision layout) and `lins.<k>.weight` (1, C, 1, 1).
    Constructed uninitialised: get pretrained weights through `metrics.weights.load_lpips`.
    """

    def __init__(self, net: str = "vgg") -> None:
        super().__init__()
        self.net = net
        self.features = lpips_backbone(net)
        for layer in self.features:
            if isinstance(layer, nn.ReLU):
                layer.inplace = False
        self.taps, widths = LPIPS_NETS[net]
        self.lins = nn.ModuleList(nn.Conv2d(width, 1, kernel_size=1, bias=False) for width in widths)
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)

    def _taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images - self.shift) / self.scale
        found = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                norm = torch.sqrt((x * x).sum(dim=1, keepdim=True))  # (B, 1, h, w)
                found.append(x / (norm + 1e-10))
        return found

    @torch.no_grad()
    def forward(self, images_1: torch.Tensor, images_2: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) ×2
        if images_1.shape != images_2.shape:
            raise ValueError(
                f"LPIPS compares equal shapes, got {tuple(images_1.shape)} and {tuple(images_2.shape)}"
            )
        total = torch.zeros(images_1.shape[0], device=images_1.device)
        for lin, f1, f2 in zip(
            self.lins, self._taps(images_1.float()), self._taps(images_2.float()), strict=True
        ):
            total = total + lin((f1 - f2) ** 2).mean(dim=(1, 2, 3))
        return total  # (B,)


@torch.no_grad()
def run_generator(generator: nn.Module, images: torch.Tensor, *, multiple: int | None = None) -> torch.Tensor:
    """Translate (B, 3, H, W) images in [-1, 1] at any size (padded to the generator's multiple, cropped)."""
    multiple = multiple or generator_multiple(generator)
    return PaddedGenerator(generator, multiple)(images).clamp(-1, 1)  # (B, 3, H, W)


def summarize(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population std of a list of per-image values."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std())

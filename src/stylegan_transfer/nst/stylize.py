"""Gatys-style neural style transfer by optimising the pixels of one image (the CLI is `nst.cli`).

Loss = content_weight · content + style_weight · Σ_l w_l · style_l + tv_weight · TV, on VGG19 features
(content relu4_2; style relu1_1 … relu5_1). Style is a Gram-matrix distance (Gatys et al. 2016) or an MMD with
a linear, polynomial or Gaussian kernel (Li et al. 2017; the degree-2 polynomial kernel with offset 0 *is* the
Gram loss, see `nst.mmd`). Each term is divided by a constant of its target (content: mean F_c²; Gram:
||G_s||²; MMD: the style's kernel self-similarity), so the default weights do not depend on the scale of the
VGG weights in use (torchvision's and the original Caffe VGG19's features differ by orders of magnitude).

Knows nothing of Hydra or Lightning.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from stylegan_transfer import losses
from stylegan_transfer.images import load_rgb, resize_long_side, to_tensor
from stylegan_transfer.nst import mmd
from stylegan_transfer.nst.color import combine_luminance, luminance_image, match_color_statistics
from stylegan_transfer.perceptual import CONTENT_LAYERS, STYLE_LAYERS, VGGFeatures

ColorMode = Literal["none", "luminance", "histogram"]


class StylizeError(RuntimeError):
    """Bad input for stylisation (unreadable image, inconsistent options); the message says what to fix."""


# ----------------------------------------------------------------------------- images
def read_image(path: str | Path) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1]; `StylizeError` naming the file when it is missing or unreadable."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise StylizeError(f"image {path} does not exist; check the path.")
    try:
        return to_tensor(load_rgb(path))[None].contiguous()
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise StylizeError(f"could not read image {path} ({err}); give a JPEG/PNG/... image file.") from err


# ----------------------------------------------------------------------------- the optimisation
@dataclass
class StyleSettings:
    """Everything that defines a stylisation except the images and the VGG trunk."""

    content_weight: float = 1.0
    style_weight: float = 5.0
    tv_weight: float = 1e-2
    content_layers: Sequence[str] = CONTENT_LAYERS
    style_layers: Sequence[str] = STYLE_LAYERS
    style_layer_weights: Sequence[float] | None = None  # per style layer; default equal, summing to 1
    style_loss: Literal["gram", "mmd"] = "gram"
    kernel: mmd.Kernel = "poly"
    degree: int = 2
    offset: float = 0.0
    bandwidth: float | None = None  # Gaussian σ; None = per layer from the style (median heuristic)
    max_samples: int | None = 1024  # MMD positions per layer, drawn once per scale (non-linear kernels)
    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    iterations: int = 300  # per scale
    lr: float = 1.0  # L-BFGS step scale; for Adam something like 0.02 (pixels live in [-1, 1])
    init: Literal["content", "noise", "style"] = "content"
    scales: Sequence[int] = (512,)  # long side per pass, coarse to fine; the last is the output size
    style_scale: float = 1.0  # style images resized to style_scale × the current long side
    preserve_color: ColorMode = "none"
    seed: int = 0
    normalize_losses: bool = True


def _check(settings: StyleSettings, n_styles: int, style_weights: Sequence[float] | None) -> list[float]:
    if settings.style_loss not in ("gram", "mmd"):
        raise StylizeError(f"unknown style loss {settings.style_loss!r}; choose gram or mmd")
    if settings.kernel not in mmd.KERNELS:
        raise StylizeError(f"unknown kernel {settings.kernel!r}; choose one of {mmd.KERNELS}")
    if settings.optimizer not in ("lbfgs", "adam"):
        raise StylizeError(f"unknown optimizer {settings.optimizer!r}; choose lbfgs or adam")
    if settings.init not in ("content", "noise", "style"):
        raise StylizeError(f"unknown init {settings.init!r}; choose content, noise or style")
    if settings.preserve_color not in ("none", "luminance", "histogram"):
        raise StylizeError(
            f"unknown preserve_color {settings.preserve_color!r}; choose none, luminance or histogram"
        )
    if not settings.scales or any(s < 16 for s in settings.scales):
        raise StylizeError(f"scales must be long-side sizes of at least 16 px, got {list(settings.scales)}")
    layer_weights = settings.style_layer_weights
    if layer_weights is not None and len(layer_weights) != len(settings.style_layers):
        raise StylizeError(
            f"{len(layer_weights)} style layer weights for {len(settings.style_layers)} style layers"
        )
    weights = [1.0] * n_styles if style_weights is None else [float(w) for w in style_weights]
    if len(weights) != n_styles:
        raise StylizeError(f"{len(weights)} style weights for {n_styles} style images; give one per --style")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise StylizeError(f"style weights must be non-negative with a positive sum, got {weights}")
    return [w / sum(weights) for w in weights]


class StyleObjective(nn.Module):
    """The total loss of an image for fixed content and style targets at one resolution."""

    def __init__(
        self,
        vgg: VGGFeatures,
        content: torch.Tensor,  # (1, 3, H, W)
        styles: Sequence[torch.Tensor],  # each (1, 3, h_k, w_k)
        style_weights: Sequence[float],
        settings: StyleSettings,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        self.vgg, self.settings, self.generator = vgg, settings, generator
        self.style_weights = list(style_weights)
        n_content = len(settings.content_layers)
        self.n_content = n_content
        n_style = len(settings.style_layers)
        layer_w = settings.style_layer_weights or [1.0 / n_style] * n_style
        self.layer_weights = [float(w) for w in layer_w]
        with torch.no_grad():
            self.content_targets = [f.detach() for f in vgg(content)[:n_content]]
            per_style = [vgg(s)[n_content:] for s in styles]  # [style][layer]
            self.style_targets = [
                [ps[i].detach() for ps in per_style] for i in range(n_style)
            ]  # [layer][style]
            self.target_grams = [
                losses.blend_grams([losses.gram_matrix(t)[0] for t in layer], self.style_weights)
                for layer in self.style_targets
            ]
            self.content_norms = [
                float((t**2).mean()) if settings.normalize_losses else 1.0 for t in self.content_targets
            ]
            if settings.style_loss == "mmd":
                self._fix_mmd_samples([f.shape for f in vgg(content)[n_content:]])
            self.style_norms = [
                self._style_norm(i) if settings.normalize_losses else 1.0 for i in range(n_style)
            ]

    def _fix_mmd_samples(self, image_shapes: Sequence[torch.Size]) -> None:
        """Fix, once per scale, everything random in the MMD objective: L-BFGS needs the same objective at
        every evaluation (a fresh draw of positions per call made it chase noise). Every position of the
        image counts: linear and quadratic kernels have closed forms; the Gaussian kernel uses
        `max_samples` random Fourier features drawn here; other polynomial degrees compare a subset of
        `max_samples` positions drawn here (of the image and of each style)."""
        s, limit = self.settings, self.settings.max_samples
        self.exact = s.kernel == "linear" or (s.kernel == "poly" and s.degree == 2)

        def subset(count: int) -> torch.Tensor | None:
            if self.exact or s.kernel == "gaussian" or limit is None or count <= limit:
                return None
            return torch.randperm(count, generator=self.generator)[:limit]

        self.image_positions = [subset(shape[0] * shape[2] * shape[3]) for shape in image_shapes]
        self.style_samples: list[list[torch.Tensor]] = []  # [layer][style] (M, C)
        for layer in self.style_targets:
            samples = [mmd.feature_samples(t) for t in layer]
            self.style_samples.append([x if (i := subset(x.shape[0])) is None else x[i] for x in samples])
        self.bandwidths: list[float] = []
        self.fourier: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (W, b, target mean φ)
        for samples in self.style_samples:
            sigma = s.bandwidth or 1.0
            if s.kernel == "gaussian" and s.bandwidth is None:
                some = samples[0][
                    torch.randperm(samples[0].shape[0], generator=self.generator)[: limit or 1024]
                ]
                sigma = mmd.median_bandwidth(some)
            self.bandwidths.append(sigma)
            if s.kernel == "gaussian":
                features, device = samples[0].shape[1], samples[0].device
                count = limit or 1024
                projection = (torch.randn(features, count, generator=self.generator) / sigma).to(device)
                phase = (torch.rand(count, generator=self.generator) * 2 * math.pi).to(device)
                target = sum(
                    w * mmd.fourier_features(x, projection, phase).mean(0)
                    for w, x in zip(self.style_weights, samples, strict=True)
                )
                self.fourier.append((projection, phase, target))

    def _mmd_kwargs(self) -> dict:
        s = self.settings
        return {"kernel": s.kernel, "degree": s.degree, "offset": s.offset, "bandwidth": s.bandwidth}

    def _style_norm(self, layer: int) -> float:
        if self.settings.style_loss == "gram":
            return max(float((self.target_grams[layer] ** 2).sum()), 1e-12)
        # the style's kernel self-similarity Σ_kl w_k w_l mean k(s_k, s_l): MMD² against an all-zero image
        # would be this for the linear and polynomial (offset 0) kernels
        samples = self.style_samples[layer]
        if self.settings.kernel == "gaussian":  # ||Σ w_k mean φ(s_k)||² ≈ Σ_kl w_k w_l mean k(s_k, s_l)
            return max(float((self.fourier[layer][2] ** 2).sum()), 1e-12)
        kw = {**self._mmd_kwargs(), "bandwidth": self.bandwidths[layer]}
        if self.exact:  # MMD² against an all-zero image, in closed form (offset² for the poly kernel)
            zero = samples[0].new_zeros(1, samples[0].shape[1])
            base = kw["offset"] ** 2 if kw["kernel"] == "poly" else 0.0
            return max(float(mmd.mmd2(zero, samples, self.style_weights, **kw)) + base, 1e-12)
        total = sum(
            wk * wl * float(mmd.kernel_matrix(sk, sl, **kw).mean())
            for wk, sk in zip(self.style_weights, samples, strict=True)
            for wl, sl in zip(self.style_weights, samples, strict=True)
        )
        return max(total, 1e-12)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self.settings
        feats = self.vgg(image)
        content_feats, style_feats = feats[: self.n_content], feats[self.n_content :]
        content = sum(
            F.mse_loss(f, t) / n
            for f, t, n in zip(content_feats, self.content_targets, self.content_norms, strict=True)
        )
        style = image.new_zeros(())
        for i, f in enumerate(style_feats):
            if s.style_loss == "gram":
                term = losses.gram_distance(f, self.target_grams[i])
            else:
                x = mmd.feature_samples(f)  # (N, C)
                if s.kernel == "gaussian":
                    projection, phase, target = self.fourier[i]
                    term = ((mmd.fourier_features(x, projection, phase).mean(0) - target) ** 2).sum()
                else:
                    if self.image_positions[i] is not None:
                        x = x[self.image_positions[i].to(x.device)]
                    kw = {**self._mmd_kwargs(), "bandwidth": self.bandwidths[i]}
                    term = mmd.mmd2(x, self.style_samples[i], self.style_weights, **kw)
            style = style + self.layer_weights[i] * term / self.style_norms[i]
        tv = losses.total_variation(image)
        total = s.content_weight * content + s.style_weight * style + s.tv_weight * tv
        return {"total": total, "content": content, "style": style, "tv": tv}


def _initial_image(init: str, content: torch.Tensor, styles: Sequence[torch.Tensor], gen: torch.Generator):
    if init == "content":
        return content.clone()
    if init == "noise":
        noise = torch.randn(content.shape, generator=gen).to(content.device)  # white noise around mid-grey
        return (0.5 * noise).clamp(-1, 1)
    return F.interpolate(styles[0], size=content.shape[-2:], mode="bicubic", align_corners=False).clamp(-1, 1)


Callback = Callable[[int, int, torch.Tensor, dict[str, float]], None]


def stylize(
    content: torch.Tensor,  # (1, 3, H, W) in [-1, 1]
    styles: Sequence[torch.Tensor],  # each (1, 3, h, w) in [-1, 1]
    features: nn.Sequential,  # a VGG trunk from `load_vgg_features` (or a random one in tests)
    *,
    settings: StyleSettings | None = None,
    style_weights: Sequence[float] | None = None,
    arch: str = "vgg19",
    device: str | torch.device = "cpu",
    callback: Callback | None = None,  # (scale_index, iteration, image, losses) after every iteration
    progress: bool = True,
) -> tuple[torch.Tensor, list[dict[str, float]]]:
    """Optimise an image coarse-to-fine over `settings.scales`; returns it (1, 3, H, W) and the loss history."""
    settings = settings or StyleSettings()
    if not styles:
        raise StylizeError("give at least one style image")
    weights = _check(settings, len(styles), style_weights)
    device = torch.device(device)
    gen = torch.Generator().manual_seed(settings.seed)
    vgg = VGGFeatures(features, [*settings.content_layers, *settings.style_layers], arch=arch).to(device)
    content_full = content.to(device)
    styles_full = [s.to(device) for s in styles]

    if settings.preserve_color == "histogram":
        styles_full = [match_color_statistics(s, content_full) for s in styles_full]

    history: list[dict[str, float]] = []
    image: torch.Tensor | None = None
    total_iters = settings.iterations * len(settings.scales)
    from tqdm.auto import tqdm

    bar = tqdm(total=total_iters, disable=not progress, desc="stylize", unit="it", file=sys.stderr)
    for scale_index, long_side in enumerate(settings.scales):
        content_s = resize_long_side(content_full, long_side)
        style_side = max(16, round(long_side * settings.style_scale))
        styles_s = [resize_long_side(s, style_side) for s in styles_full]
        if settings.preserve_color == "luminance":
            styles_s = [luminance_image(s, like=content_s) for s in styles_s]
            content_s = luminance_image(content_s)
        objective = StyleObjective(vgg, content_s, styles_s, weights, settings, gen)
        if image is None:
            start = _initial_image(settings.init, content_s, styles_s, gen)
        else:  # coarse-to-fine: upsample the previous result
            start = F.interpolate(image, size=content_s.shape[-2:], mode="bicubic", align_corners=False)
            if settings.preserve_color == "luminance":
                start = luminance_image(start)
        pixels = start.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)
        image = _optimise(pixels, objective, settings, scale_index, bar, history, callback)
    bar.close()
    assert image is not None
    if settings.preserve_color == "luminance":
        content_out = F.interpolate(content_full, size=image.shape[-2:], mode="bicubic", align_corners=False)
        image = combine_luminance(image, content_out.clamp(-1, 1))
    return image.clamp(-1, 1), history


def _optimise(
    pixels: torch.Tensor,
    objective: StyleObjective,
    settings: StyleSettings,
    scale_index: int,
    bar,
    history: list[dict[str, float]],
    callback: Callback | None,
) -> torch.Tensor:
    last: dict[str, float] = {}

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        terms = objective(pixels)
        terms["total"].backward()
        last.update({k: float(v.detach()) for k, v in terms.items()})
        return terms["total"]

    if settings.optimizer == "lbfgs":
        # one L-BFGS iteration per step(); the curvature history persists in the optimiser's state
        optimizer = torch.optim.LBFGS([pixels], lr=settings.lr, max_iter=1, history_size=50)
    else:
        optimizer = torch.optim.Adam([pixels], lr=settings.lr)
    for iteration in range(1, settings.iterations + 1):
        if settings.optimizer == "lbfgs":
            optimizer.step(closure)
        else:
            closure()
            optimizer.step()
            with torch.no_grad():
                pixels.clamp_(-1, 1)
        if not math.isfinite(last["total"]):
            raise StylizeError("the loss became non-finite; lower --lr or the loss weights")
        history.append({"scale": scale_index, "iteration": iteration, **last})
        bar.update(1)
        bar.set_postfix(
            loss=f"{last['total']:.4g}", style=f"{last['style']:.3g}", content=f"{last['content']:.3g}"
        )
        if callback is not None:
            callback(scale_index, iteration, pixels.detach().clamp(-1, 1), last)
    return pixels.detach()

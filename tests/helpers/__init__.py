"""What tests import (fixtures stay in conftest.py): tiny network sizes, a quiet CPU Trainer, `python train.py`
in a subprocess, generated image folders, synthetic batches and images, a tiny VGG trunk and hand-written
reference formulas for the perceptual terms. Everything is written once here and imported as
`from helpers import ...` (pyproject puts tests/ on the path); beside it, helpers.loopback (the download tests'
HTTP server) and helpers.training (whole runs from the composed configs)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"

TINY = ["debug=tiny"]  # configs/debug/tiny.yaml: 32px images, narrow networks, 2 short epochs, no logger

# ----------------------------------------------------------------------------- tiny network sizes
TINY_G_KWARGS = {"channels": 4, "n_blocks": 1}  # ResNet generator constructor arguments (no arch)
TINY_G = {"arch": "resnet", **TINY_G_KWARGS}
TINY_D = {"arch": "patch", "channels": 4, "n_layers": 2}
TINY_J = {"arch": "johnson", "channels": 4, "n_blocks": 1}
VGG_WIDTH_DIVISOR = 16  # tiny VGG: 4, 8, 16, 32, 32 channels per block


def tiny_generator_file(path: Path) -> Path:
    """A tiny ResNet generator (weights drawn after `manual_seed(0)`) exported to `path` as a generator file."""
    from stylegan_transfer.inference.generator_file import save_generator
    from stylegan_transfer.networks import build_generator, init_weights

    torch.manual_seed(0)
    generator = init_weights(build_generator("resnet", **TINY_G_KWARGS)).eval()
    return save_generator(generator, path, arch="resnet", kwargs=TINY_G_KWARGS)


def tiny_cyclegan(**kwargs):
    """A CycleGANModule with the tiny networks and a pool of 2, its weights drawn after `manual_seed(0)`.

    The default recipe's VGG terms are off here unless asked for (tests of the training mechanics need no VGG;
    the composed default configs train with them in the end-to-end tests)."""
    from stylegan_transfer.training.cyclegan import CycleGANModule

    torch.manual_seed(0)
    base = {
        "generator": TINY_G,
        "discriminator": TINY_D,
        "pool_size": 2,
        "lambda_content": 0.0,
        "lambda_style": 0.0,
    }
    return CycleGANModule(**{**base, **kwargs})


def tiny_datamodule(**kwargs):
    """An UnpairedDataModule at test size: 36 px loads cropped to 32, no worker processes."""
    from stylegan_transfer.training.data import UnpairedDataModule

    return UnpairedDataModule(**{"load_size": 36, "crop_size": 32, "num_workers": 0, **kwargs})


def tiny_vgg(arch: str = "vgg19", *, weights_path=None, seed: int = 0) -> nn.Sequential:
    """A narrow, randomly initialised VGG `features` trunk (torchvision layout; seeds the global RNG).

    Signature-compatible with `perceptual.load_vgg_features`, so tests can monkeypatch it in.
    """
    from stylegan_transfer.perceptual import vgg_features_module

    torch.manual_seed(seed)
    return vgg_features_module(arch, width_divisor=VGG_WIDTH_DIVISOR)


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Scale-preserving random weights (He init, BN identity) so random features stay informative."""
    generator = torch.Generator().manual_seed(seed)
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            fan_in = layer.weight[0].numel()
            layer.weight.data = torch.randn(layer.weight.shape, generator=generator) * (2 / fan_in) ** 0.5
            if layer.bias is not None:
                layer.bias.data.zero_()
    return module


# ----------------------------------------------------------------------------- synthetic data
def random_batch(batch: int = 1, size: int = 32, *, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """{"a", "b"}: uniform noise images in [-1, 1], each (batch, 3, size, size)."""
    return {
        "a": torch.rand(batch, 3, size, size, generator=generator) * 2 - 1,  # (B, 3, H, W)
        "b": torch.rand(batch, 3, size, size, generator=generator) * 2 - 1,
    }


def batch_list(count: int, batch: int = 1, size: int = 32, *, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    """`count` already-batched random {"a", "b"} dicts, the same on every call with the same seed."""
    gen = torch.Generator().manual_seed(seed)
    return [random_batch(batch, size, generator=gen) for _ in range(count)]


def fixed_batches(count: int, batch: int = 1, size: int = 32, *, seed: int = 1) -> DataLoader:
    """batch_list(...) as a DataLoader that yields each batch as it is."""
    return DataLoader(batch_list(count, batch, size, seed=seed), batch_size=None)


def smooth_image(seed: int, size: int = 32, tint=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """(1, 3, size, size) in [-1, 1]: random colours at 1/8 resolution, upsampled bilinearly (a tint shifts them)."""
    g = torch.Generator().manual_seed(seed)
    low = (
        torch.rand(1, 3, size // 8, size // 8, generator=g) * 1.2 - 0.6 + torch.tensor(tint).view(1, 3, 1, 1)
    )
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear").clamp(-1, 1)


def write_images(
    folder: Path, count: int, *, size: tuple[int, int] = (40, 36), seed: int = 0, tint=(0, 0, 0)
) -> list[Path]:
    """`count` random RGB JPEGs of `size` (W, H); a tint makes two domains distinguishable."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.int64) // 2 + np.array(tint) // 2
        path = folder / f"img_{i:03d}.jpg"
        Image.fromarray(array.astype(np.uint8)).save(path, quality=95)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------- running training
def quiet_trainer(**kwargs) -> L.Trainer:
    """A CPU Trainer that logs, checkpoints, prints and validates nothing unless asked (kwargs override)."""
    defaults = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
    )
    return L.Trainer(**{**defaults, **kwargs})


def fit_batches(module: L.LightningModule, batches: list[dict[str, torch.Tensor]], **kwargs) -> L.Trainer:
    """One quiet_trainer step per batch of `batches`, each fed as it is, no validation (kwargs override)."""
    trainer = quiet_trainer(max_steps=len(batches), limit_val_batches=0, **kwargs)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    return trainer


def run_train_py(
    *args: str, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python train.py ARGS` in the repo root, W&B offline, one thread per process (`env` adds variables)."""
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
        "HYDRA_FULL_ERROR": "0",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "train.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class StepRecorder(L.Callback):
    """Per training batch: a copy of the logged `train/...` metrics (floats)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        metrics = trainer.callback_metrics
        self.steps.append({k: float(v) for k, v in metrics.items() if k.startswith("train/")})


# ----------------------------------------------------------------------------- reference formulas
# Written from the definitions (Gatys et al., Johnson et al.), independently of stylegan_transfer's code.
def reference_gram(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C), divided by C*H*W."""
    b, c, h, w = features.shape
    flat = features.double().reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def reference_content(features: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ_l mean((F_l - T_l)²) / mean(T_l²)."""
    return sum(
        ((f.double() - t.double()) ** 2).mean() / (t.double() ** 2).mean()
        for f, t in zip(features, targets, strict=True)
    )


def reference_style(
    features: Sequence[torch.Tensor], style_features: Sequence[torch.Tensor], weights: Sequence[float]
) -> torch.Tensor:
    """Σ_l w_l · mean_b ||G_l(x_b) - G_l||²_F / ||G_l||²_F, G_l the Gram matrix averaged over the style batch."""
    total = torch.zeros((), dtype=torch.float64)
    for w, f, s in zip(weights, features, style_features, strict=True):
        target = reference_gram(s).mean(dim=0)  # (C, C)
        distance = ((reference_gram(f) - target) ** 2).sum(dim=(1, 2)).mean()
        total = total + w * distance / (target**2).sum()
    return total


def reference_tv(images: torch.Tensor) -> torch.Tensor:
    """Mean |vertical neighbour difference| + mean |horizontal neighbour difference|."""
    x = images.double()
    return (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean() + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean()

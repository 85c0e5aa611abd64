"""Shared fixtures: generated image folders and configs composed from the real files in configs/."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from PIL import Image

from stylegan_transfer.training.run import register_resolvers

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

TINY = ["debug=tiny"]  # configs/debug/tiny.yaml: 32px images, narrow networks, 2 short epochs, no logger


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


@pytest.fixture
def cyclegan_dir(tmp_path: Path) -> Path:
    """A CycleGAN-layout dataset: trainA/ trainB/ testA/ testB/ with a few tiny images each."""
    root = tmp_path / "dataset"
    write_images(root / "trainA", 5, seed=1, tint=(200, 0, 0))
    write_images(root / "trainB", 3, seed=2, tint=(0, 0, 200))
    write_images(root / "testA", 2, seed=3, tint=(200, 0, 0))
    write_images(root / "testB", 2, seed=4, tint=(0, 0, 200))
    return root


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """compose_cfg(*overrides) -> the real train.yaml composed with the TINY overrides and a tmp output dir."""
    register_resolvers()

    def _compose(*overrides: str, tiny: bool = True) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = compose(
                config_name="train",
                overrides=[*(TINY if tiny else []), *overrides],
            )
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
        return cfg

    return _compose


@pytest.fixture(autouse=True)
def _deterministic_cpu():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield

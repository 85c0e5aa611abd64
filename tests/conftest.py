"""Fixtures only (what tests import lives in tests/helpers): generated image folders, configs composed from the
real files in configs/, the loopback HTTP server, deterministic CPU threads, and the `gpu` marker's skip when no
CUDA device exists."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from helpers import CONFIGS, TINY, write_images
from helpers.loopback import LoopbackServer, serving
from stylegan_transfer.training.launch import register_resolvers


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` need a CUDA device: skipped (with the reason shown) where there is none."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


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


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    """A loopback HTTP server (helpers.loopback): tests put bytes in `server.files` and download from `server.url`."""
    with serving() as loopback:
        yield loopback


@pytest.fixture(autouse=True)
def _deterministic_cpu():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield

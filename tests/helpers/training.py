"""Whole training runs from the real configs (in-process, or `python train.py debug=tiny`) and what they leave."""

from __future__ import annotations

import csv
import subprocess
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, open_dict

from helpers import REPO, run_train_py
from stylegan_transfer.training.run import train

LOGGED_LOSSES = ("train/loss_g", "train/loss_d", "train/cycle", "train/d_a")
EVERY_STEP_3_EPOCHS = (
    "logger=csv",
    "trainer.log_every_n_steps=1",
    "model.epochs_constant=1",
    "model.epochs_decay=2",
)


def data_overrides(dataset: Path) -> list[str]:
    """The overrides that train on a CycleGAN-layout folder (trainA/, trainB/: the `cyclegan_dir` fixture)."""
    return ["style=custom", f"data.dir_a={dataset / 'trainA'}", f"data.dir_b={dataset / 'trainB'}"]


def train_into(compose_cfg: Callable[..., DictConfig], out: Path, *overrides: str) -> Path:
    """Compose train.yaml (debug=tiny) with `overrides` and train it in-process into the run folder `out`."""
    cfg = compose_cfg(*overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    train(cfg)
    return out


def train_logged(compose_cfg: Callable[..., DictConfig], out: Path, *overrides: str) -> Path:
    """train_into for 3 epochs (1 constant + 2 decaying) with every step's losses in `out`/csv/metrics.csv."""
    return train_into(compose_cfg, out, *EVERY_STEP_3_EPOCHS, *overrides)


def step_losses(run_dir: Path) -> dict[int, tuple[float, ...]]:
    """{global step: the LOGGED_LOSSES at that step} from a train_logged run folder."""
    out = {}
    with open(run_dir / "csv" / "metrics.csv") as handle:
        for row in csv.DictReader(handle):
            if row.get("train/loss_g"):
                out[int(row["step"])] = tuple(float(row[k]) for k in LOGGED_LOSSES)
    return out


def train_py(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python train.py debug=tiny ARGS` with this checkout's src/ on the path (`env` adds variables)."""
    return run_train_py(
        "debug=tiny", *args, timeout=300, env={"PYTHONPATH": str(REPO / "src"), **(env or {})}
    )


def refusal_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The `error:` lines of a train.py run that refused to start, once checked that it exited 2 without a
    traceback."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]

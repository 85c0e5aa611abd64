"""End to end through the real entry point: `python train.py ...` in a subprocess (marked slow)."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers import TINY, run_train_py
from stylegan_transfer.inference.generator_file import load_generator

pytestmark = pytest.mark.slow


def check_run_folder(run: Path) -> None:
    assert (run / ".hydra" / "config.yaml").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    grid = Image.open(run / "samples" / "latest.png")
    assert grid.width > 6 * 32 and grid.height >= 2 * 32  # 6 columns, one row per validation pair
    for name in ("g_ab", "g_ba"):
        generator = load_generator(run / "export" / f"{name}.safetensors")
        assert generator(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_train_py_demo_end_to_end_with_offline_wandb(tmp_path):
    run = tmp_path / "run"
    result = run_train_py(*TINY, f"hydra.run.dir={run}", "logger=wandb")
    assert result.returncode == 0, result.stderr[-3000:]
    check_run_folder(run)
    assert list((run / "wandb").glob("offline-run-*")), "W&B must log offline without credentials"
    meta = load_generator(run / "export" / "g_ab.safetensors").export_metadata
    assert meta["direction"] == "photo -> painting" and meta["style"] == "demo"
    metrics = json.loads((run / "result.json").read_text())["metrics"]
    # the default recipe's VGG terms trained, offline, with the packaged VGG19
    assert metrics["train/content"] > 0 and metrics["train/style"] > 0


def test_missing_dataset_fails_fast_naming_the_folder(tmp_path):
    result = run_train_py(
        "style=vangogh",
        f"paths.data_dir={tmp_path / 'nowhere'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "logger=none",
        timeout=60,
    )
    assert result.returncode == 2
    assert str(tmp_path / "nowhere" / "vangogh2photo") in result.stderr
    assert "Traceback" not in result.stderr
    assert "Download" in result.stderr or "download" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unknown_style_lists_the_choices(tmp_path):
    result = run_train_py("style=nosuchstyle", f"hydra.run.dir={tmp_path / 'run'}", timeout=60)
    assert result.returncode != 0
    assert "nosuchstyle" in result.stderr and "vangogh" in result.stderr


def test_multirun_two_jobs_two_run_folders(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_train_py("-m", *TINY, "model.lambda_cycle=5,10", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in runs] == [
        "0_debug=tiny,model.lambda_cycle=5",
        "1_debug=tiny,model.lambda_cycle=10",
    ]
    for run in runs:
        check_run_folder(run)


def test_ddp_two_cpu_processes_gloo(tmp_path):
    run = tmp_path / "ddp"
    result = run_train_py(
        *TINY,
        "trainer=ddp",
        "perf=none",  # the GPU speed preset (batch 8, compile) is not what this CPU DDP test checks
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    assert ckpts == ["best.ckpt", "epoch_0001.ckpt", "last.ckpt"], ckpts  # one set, written by rank 0
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["epoch"] == 1 and state["global_step"] > 0
    check_run_folder(run)
    assert "world_size: 2" in result.stderr or "MEMBER: 2/2" in result.stderr


@pytest.mark.gpu
def test_train_py_gpu_preset_trains_on_cuda(tmp_path):
    """`trainer=gpu debug=tiny`: bf16, channels_last, torch.compile and fused Adam on one CUDA device."""
    run = tmp_path / "gpu"
    result = run_train_py("trainer=gpu", *TINY, "logger=none", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads((run / "result.json").read_text())
    assert outcome["status"] == "ok" and outcome["value"] is not None, outcome
    check_run_folder(run)
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location=None, weights_only=True)
    assert state["global_step"] > 0
    weights = [v for k, v in state["state_dict"].items() if k.startswith(("g_ab.", "d_a."))]
    assert weights and all(w.device.type == "cuda" for w in weights), "the networks trained on the GPU"
    assert state["hyper_parameters"]["compile"] and state["hyper_parameters"]["fused_adam"]

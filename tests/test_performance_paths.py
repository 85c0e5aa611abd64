"""Performance switches (channels_last, bf16 autocast, fused Adam, compile, batch LR rule, no host syncs):
each keeps the reference losses within tolerance over a short CPU run, and the presets compose."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from helpers import REPO, TINY_D, TINY_G, StepRecorder, fixed_batches, quiet_trainer, tiny_cyclegan
from stylegan_transfer.training.cyclegan import CycleGANModule
from stylegan_transfer.training.optim import batch_lr_factor


def run_losses(
    module: CycleGANModule, *, steps: int = 4, precision: str = "32-true"
) -> list[tuple[float, float]]:
    recorder = StepRecorder()
    trainer = quiet_trainer(
        precision=precision, max_steps=2 * steps, callbacks=[recorder], limit_val_batches=0
    )  # max_steps: two optimiser steps per batch
    trainer.fit(module, train_dataloaders=fixed_batches(steps))
    return [(step["train/loss_g"], step["train/loss_d"]) for step in recorder.steps]


@pytest.fixture(scope="module")
def reference_losses() -> list[tuple[float, float]]:
    return run_losses(tiny_cyclegan())


def assert_close(got, want, rel: float) -> None:
    assert len(got) == len(want)
    for step, (g, w) in enumerate(zip(got, want, strict=True)):
        for name, x, y in (("loss_g", g[0], w[0]), ("loss_d", g[1], w[1])):
            assert math.isfinite(x)
            assert x == pytest.approx(y, rel=rel), f"step {step} {name}: {x} vs reference {y}"


def test_channels_last_converts_weights_and_keeps_losses(reference_losses):
    module = tiny_cyclegan(channels_last=True)
    convs = [m.weight for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert_close(run_losses(module), reference_losses, rel=5e-3)


def test_fused_adam_is_used_when_asked_and_keeps_losses(reference_losses):
    module = tiny_cyclegan(fused_adam=True)
    opts, _ = module.configure_optimizers()
    assert all(opt.defaults["fused"] for opt in opts)
    assert not tiny_cyclegan().adam_implementation()  # CPU default: torch's own choice
    assert_close(run_losses(module), reference_losses, rel=1e-5)


def test_bf16_autocast_keeps_losses_within_loose_tolerance(reference_losses):
    losses = run_losses(tiny_cyclegan(), precision="bf16-mixed")
    assert_close(losses, reference_losses, rel=2e-2)


@pytest.mark.parametrize(
    ("batch", "rule", "factor"),
    [(1, "sqrt", 1.0), (4, "none", 1.0), (4, "sqrt", 2.0), (4, "linear", 4.0), (9, "sqrt", 3.0)],
)
def test_batch_lr_rule(batch, rule, factor):
    assert batch_lr_factor(batch, rule) == pytest.approx(factor)
    opts, _ = tiny_cyclegan(batch_size=batch, lr_scaling=rule).configure_optimizers()
    assert all(opt.param_groups[0]["lr"] == pytest.approx(2e-4 * factor) for opt in opts)


def test_batch_lr_rule_rejects_bad_values():
    with pytest.raises(ValueError, match="lr_scaling"):
        tiny_cyclegan(lr_scaling="cubic")
    with pytest.raises(ValueError, match="batch sizes"):
        tiny_cyclegan(batch_size=0)


def test_compile_flag_compiles_in_place_and_keeps_parameter_names():
    module = tiny_cyclegan(compile=True)
    keys = list(module.state_dict())
    module.configure_model()
    module.configure_model()  # idempotent
    assert all(net._compiled_call_impl is not None for net in module.networks)
    assert list(module.state_dict()) == keys
    assert tiny_cyclegan().g_ab._compiled_call_impl is None


def test_gpu_preset_turns_every_switch_on_and_perf_none_turns_them_off(compose_cfg):
    cfg = compose_cfg("trainer=gpu")
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.benchmark is True
    model = cfg.model
    assert (model.channels_last, model.compile, model.fused_adam, model.lr_scaling) == (
        True,
        True,
        True,
        "sqrt",
    )
    assert model.batch_size == cfg.data.batch_size > 1
    module = instantiate(model)  # builds on CPU: compile is lazy
    assert module.hparams.compile and module.hparams.channels_last

    plain = compose_cfg("trainer=gpu", "perf=none").model
    assert (plain.channels_last, plain.compile, plain.fused_adam, plain.lr_scaling) == (
        False,
        False,
        None,
        "none",
    )
    assert compose_cfg("trainer=ddp", "model.compile=false").model.compile is False
    assert compose_cfg().model.channels_last is False  # CPU default untouched


def test_training_step_reads_nothing_back_to_the_host(monkeypatch):
    """No `.item()`/`float()`/`bool()` on step tensors (a GPU host sync) outside the image pool's CPU RNG.

    Fused Adam, as in the GPU preset: its step counters live on the device (plain Adam reads CPU counters).
    """
    calls: list[str] = []

    def spy(name, original):
        def wrapper(self, *args, **kwargs):
            stack = traceback.extract_stack()[:-1]
            if any(f.name == "training_step" for f in stack) and not any(
                f.filename.endswith("image_pool.py") for f in stack
            ):
                calls.append(f"{name} at {stack[-1].filename}:{stack[-1].lineno}")
            return original(self, *args, **kwargs)

        return wrapper

    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, spy(name, getattr(torch.Tensor, name)))

    class Syncing(CycleGANModule):  # control: a step that does read a loss back must be caught
        def training_step(self, batch, batch_idx):
            super().training_step(batch, batch_idx)
            self.trainer.callback_metrics["train/loss_g"].item()

    for module, expect_calls in (
        (tiny_cyclegan(channels_last=True, fused_adam=True), False),
        (Syncing(generator=TINY_G, discriminator=TINY_D), True),
    ):
        calls.clear()
        trainer = quiet_trainer(max_steps=6, limit_val_batches=0, log_every_n_steps=50)
        trainer.fit(module, train_dataloaders=fixed_batches(3))
        assert trainer.global_step == 6  # 3 batches, two optimisers each
        assert bool(calls) == expect_calls, calls


@pytest.mark.slow
def test_benchmark_script_writes_json_and_markdown(tmp_path):
    out = tmp_path / "bench"
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "benchmark.py"),
        "--sizes", "32",
        "--inference-sizes", "32",
        "--steps", "1",
        "--warmup", "1",
        "--channels", "4",
        "--n-blocks", "1",
        "--matmul-size", "256",
        "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((out / "benchmark.json").read_text())
    assert data["device"] and data["peak_tflops"]["float32"] > 0
    train = data["training"]
    assert {row["config"] for row in train} >= {"reference", "fast"}
    for row in train:
        for key in ("size", "batch", "steps_per_s", "pairs_per_s", "flops_per_step", "tflops", "mfu"):
            assert key in row, key
        assert row["steps_per_s"] > 0 and row["flops_per_step"] > 0 and 0 < row["mfu"] < 1
    assert data["speedup"]["default 32px"] > 0
    infer = data["inference"][0]
    assert infer["size"] == 32 and infer["images_per_s"] > 0 and infer["peak_memory_mb"] > 0
    assert infer["roofline_ratio"] > 0
    markdown = (out / "benchmark.md").read_text()
    assert "MFU" in markdown and "images/s" in markdown and "reference" in markdown


def _fake_official_checkout(root: Path) -> Path:
    """A stand-in for the CUT repository with its module layout: a CycleGAN whose step sleeps 20 ms."""
    files = {
        "options/__init__.py": "",
        "options/base_options.py": (
            "import argparse\n"
            "class BaseOptions:\n"
            "    def parse(self):\n"
            "        parser = argparse.ArgumentParser()\n"
            "        for name in ('dataroot', 'name', 'checkpoints_dir', 'model', 'netG', 'ngf', 'ndf', 'gpu_ids',"
            " 'display_id'):\n"
            "            parser.add_argument('--' + name)\n"
            "        parser.add_argument('--no_html', action='store_true')\n"
            "        import sys\n"
            "        return parser.parse_args(sys.argv[1:])\n"
        ),
        "options/train_options.py": "from .base_options import BaseOptions\nclass TrainOptions(BaseOptions):\n    pass\n",
        "models/__init__.py": "from .cycle_gan_model import CycleGANModel\ndef create_model(opt):\n"
        "    return CycleGANModel(opt)\n",
        "models/base_model.py": (
            "import torch\n"
            "class BaseModel:\n"
            "    def load_networks(self, epoch):  # as the real one: torch.load, then into the unwrapped network\n"
            "        self.loaded = torch.load(self.load_path, weights_only=True)\n"
        ),
        "models/cycle_gan_model.py": (
            "import time\n"
            "from .base_model import BaseModel\n"
            "class CycleGANModel(BaseModel):\n"
            "    def __init__(self, opt):\n"
            "        assert opt.model == 'cycle_gan' and opt.netG == 'resnet_6blocks', opt\n"
            "    def data_dependent_initialize(self, data):\n"
            "        raise TypeError('takes no argument')  # as the real one; the wrapper replaces it\n"
            "    def setup(self, opt):\n"
            "        assert opt.amp is False  # the wrapper defines the option the real code reads\n"
            "    def set_input(self, batch):\n"
            "        assert batch['A'].shape == (1, 3, 32, 32)\n"
            "    def optimize_parameters(self):\n"
            "        time.sleep(0.02)\n"
        ),
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_official_wrapper_lets_the_official_code_resume_what_it_saved_on_a_cpu(tmp_path, monkeypatch):
    """Its CPU checkpoints hold the DataParallel wrapper's "module." keys; its loader wants the network's own."""
    spec = importlib.util.spec_from_file_location(
        "official_cyclegan", REPO / "scripts" / "official_cyclegan.py"
    )
    wrapper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wrapper)
    checkout = _fake_official_checkout(tmp_path / "cut")
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [m for m in sys.modules if m.split(".")[0] in ("models", "options")]:
        monkeypatch.delitem(sys.modules, name)
    wrapper._prepare(checkout)
    from models import base_model

    saved = tmp_path / "19_net_G_A.pth"
    torch.save({"module.model.1.weight": torch.ones(2), "module.model.1.bias": torch.zeros(2)}, saved)
    model = base_model.BaseModel()
    model.load_path = saved
    real_load = torch.load
    model.load_networks(19)
    assert sorted(model.loaded) == ["model.1.bias", "model.1.weight"]
    assert torch.equal(model.loaded["model.1.weight"], torch.ones(2))
    assert torch.load is real_load  # put back after loading
    for name in [m for m in sys.modules if m.split(".")[0] in ("models", "options")]:
        del sys.modules[name]


@pytest.mark.slow
def test_benchmark_times_the_official_step_beside_ours(tmp_path):
    checkout = _fake_official_checkout(tmp_path / "cut")
    out = tmp_path / "bench"
    cmd = [
        sys.executable, str(REPO / "scripts" / "benchmark.py"),
        "--sizes", "32", "--inference-sizes", "--steps", "2", "--warmup", "1", "--channels", "4",
        "--n-blocks", "6", "--matmul-size", "128", "--recipes", "paper", "--threads", "1",
        "--official-code", str(checkout), "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((out / "benchmark.json").read_text())
    (official,) = data["official"]
    assert official["size"] == 32 and official["threads"] == 1
    assert 0.02 <= official["seconds_per_step"] < 0.5  # the fake step's sleep, timed in the child
    for row in data["training"]:
        expected = row["seconds_per_step"] / row["batch"] / official["seconds_per_step"]
        assert row["vs_official"] == pytest.approx(expected)
    assert "Time per image vs the official code" in (out / "benchmark.md").read_text()


def test_step_breakdown_files_each_operator_once_and_sums_to_the_step():
    spec = importlib.util.spec_from_file_location("benchmark_script", REPO / "scripts" / "benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.InstanceNorm2d(8), torch.nn.ReLU())
    opt = torch.optim.Adam(net.parameters())
    loader = torch.utils.data.DataLoader(torch.randn(4, 3, 16, 16), batch_size=2)
    steps = 2
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for batch in loader:
            net(batch).square().mean().backward()
            opt.step()
            opt.zero_grad()
    events = prof.events()
    seconds = sum(e.self_cpu_time_total for e in events) / 1e6 / steps + 0.01  # 10 ms outside any operator
    parts = bench.step_breakdown(events, steps, seconds)
    assert set(parts) == {*(name for name, _ in bench.STEP_PARTS), "outside any operator"}
    assert all(parts[name] > 0 for name in ("convolution", "normalisation", "optimiser step", "data loading"))
    assert sum(parts.values()) == pytest.approx(seconds)
    assert parts["outside any operator"] == pytest.approx(0.01)
    # Adam's element-wise ops count as the optimiser's, not as "other": the part is the step records' whole time.
    step_records = [e for e in events if e.name.startswith("Optimizer.step#")]
    assert len(step_records) == steps
    assert parts["optimiser step"] == pytest.approx(sum(e.cpu_time_total for e in step_records) / 1e6 / steps)

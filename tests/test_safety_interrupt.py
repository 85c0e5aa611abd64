"""Issue 14, item 5: SIGTERM stops training with exit code 143 and status "interrupted" in result.json, and
resuming from interrupted.ckpt in the middle of an epoch continues exactly like the uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import REPO
from helpers.training import data_overrides, step_losses, train_logged
from stylegan_transfer.training.cyclegan import CycleGANModule
from stylegan_transfer.training.errors import TrainingInterrupted
from stylegan_transfer.training.run import run_job


def interrupted_run(compose_cfg, out: Path, overrides: list[str], monkeypatch, step) -> TrainingInterrupted:
    """train_logged into `out` with `step` as CycleGANModule.training_step, which must end in TrainingInterrupted
    (returned); the original step is put back after."""
    original = CycleGANModule.training_step
    monkeypatch.setattr(CycleGANModule, "training_step", step)
    with pytest.raises(TrainingInterrupted) as err:
        train_logged(compose_cfg, out, *overrides)
    monkeypatch.setattr(CycleGANModule, "training_step", original)
    return err.value


def test_sigterm_mid_epoch_then_resume_is_exact(compose_cfg, cyclegan_dir, tmp_path, monkeypatch):
    overrides = data_overrides(cyclegan_dir)
    full = step_losses(train_logged(compose_cfg, tmp_path / "full", *overrides))
    assert len(full) == 12  # 3 epochs x 4 batches

    original = CycleGANModule.training_step

    def terminated(self, batch, batch_idx):
        if self.current_epoch == 1 and batch_idx == 1:  # the scheduler's SIGTERM, mid-epoch
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, batch, batch_idx)

    stopped = interrupted_run(compose_cfg, tmp_path / "stopped", overrides, monkeypatch, terminated)
    interrupted = tmp_path / "stopped" / "checkpoints" / "interrupted.ckpt"
    assert stopped.exit_code == 143 and f"ckpt_path={interrupted}" in str(stopped)
    state = torch.load(interrupted, weights_only=True)
    assert (
        state["epoch"] == 1
        and state["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"] == 2
    )

    resumed = step_losses(
        train_logged(compose_cfg, tmp_path / "resumed", *overrides, f"ckpt_path={interrupted}")
    )
    assert len(resumed) >= 6  # the rest of epoch 1, and epoch 2
    for step, values in resumed.items():
        assert values == pytest.approx(full[step], rel=1e-6, abs=1e-7), f"step {step}"


@pytest.mark.slow
def test_train_py_exits_143_on_sigterm_and_records_the_status(cyclegan_dir, tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(REPO / "src")}
    args = [*data_overrides(cyclegan_dir), "model.epochs_constant=400", f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(
        [sys.executable, "train.py", "debug=tiny", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = time.monotonic()
    while not (run_dir / "checkpoints" / "last.ckpt").exists() and time.monotonic() - started < 120:
        assert process.poll() is None, process.stderr.read()[-2000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "stopped by SIGTERM" in errors[0] and "interrupted.ckpt" in errors[0]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "interrupted"
    assert (run_dir / "checkpoints" / "interrupted.ckpt").is_file()


def test_ctrl_c_exits_130_with_status_interrupted(compose_cfg, cyclegan_dir, tmp_path, monkeypatch, capsys):
    original = CycleGANModule.training_step

    def pressed(self, batch, batch_idx):
        if self.current_epoch == 0 and batch_idx == 1:  # Ctrl-C, mid-epoch
            raise KeyboardInterrupt
        return original(self, batch, batch_idx)

    monkeypatch.setattr(CycleGANModule, "training_step", pressed)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # Lightning ignores SIGINT from then on
    cfg = compose_cfg(*data_overrides(cyclegan_dir))
    run_dir = tmp_path / "stopped"
    cfg.paths.output_dir = str(run_dir)
    with pytest.raises(SystemExit) as exit_:
        run_job(cfg)
    assert exit_.value.code == 130
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "stopped by Ctrl-C" in errors[0] and "interrupted.ckpt" in errors[0]
    assert json.loads((run_dir / "result.json").read_text())["status"] == "interrupted"
    assert (run_dir / "checkpoints" / "interrupted.ckpt").is_file()
    assert not (run_dir / "export").exists()  # nothing half-trained exported as if it were done


def test_ctrl_c_mid_epoch_then_resume_logs_the_steps_of_the_uninterrupted_run(
    compose_cfg, cyclegan_dir, tmp_path, monkeypatch
):
    """Issue 25 item 7: after Ctrl-C the weights resumed exactly, but every logged step came one off."""
    overrides = data_overrides(cyclegan_dir)
    full = step_losses(train_logged(compose_cfg, tmp_path / "full", *overrides))
    original = CycleGANModule.training_step

    def pressed(self, batch, batch_idx):
        if self.current_epoch == 1 and batch_idx == 1:  # Ctrl-C, mid-epoch, before this batch trains
            raise KeyboardInterrupt
        return original(self, batch, batch_idx)

    monkeypatch.setattr(signal, "signal", lambda *args: None)  # Lightning ignores SIGINT from then on
    assert (
        interrupted_run(compose_cfg, tmp_path / "stopped", overrides, monkeypatch, pressed).exit_code == 130
    )
    interrupted = tmp_path / "stopped" / "checkpoints" / "interrupted.ckpt"
    resumed = step_losses(
        train_logged(compose_cfg, tmp_path / "resumed", *overrides, f"ckpt_path={interrupted}")
    )
    assert len(resumed) >= 6  # the rest of epoch 1, and epoch 2
    assert set(resumed) <= set(full), (
        f"logged at steps {sorted(set(resumed) - set(full))} the full run never had"
    )
    for step, values in resumed.items():
        assert values == pytest.approx(full[step], rel=1e-6, abs=1e-7), f"step {step}"


def test_ctrl_c_pressed_inside_a_batch_stops_after_it_and_resumes_exactly(
    compose_cfg, cyclegan_dir, tmp_path, monkeypatch
):
    """A real SIGINT in the middle of a step: the batch finishes, then training stops with interrupted.ckpt."""
    overrides = data_overrides(cyclegan_dir)
    full = step_losses(train_logged(compose_cfg, tmp_path / "full", *overrides))
    original = CycleGANModule.training_step

    def pressed(self, batch, batch_idx):
        if self.current_epoch == 1 and batch_idx == 1:
            os.kill(os.getpid(), signal.SIGINT)  # arrives while this batch trains
        return original(self, batch, batch_idx)

    assert (
        interrupted_run(compose_cfg, tmp_path / "stopped", overrides, monkeypatch, pressed).exit_code == 130
    )
    interrupted = tmp_path / "stopped" / "checkpoints" / "interrupted.ckpt"
    state = torch.load(interrupted, weights_only=True)
    # the 4 batches of epoch 0 and 2 of epoch 1, the pressed one finished
    assert state["global_step"] == 2 * 6
    resumed = step_losses(
        train_logged(compose_cfg, tmp_path / "resumed", *overrides, f"ckpt_path={interrupted}")
    )
    assert sorted(resumed) == [step for step in sorted(full) if step >= 6]
    for step, values in resumed.items():
        assert values == pytest.approx(full[step], rel=1e-6, abs=1e-7), f"step {step}"


def test_a_stop_between_two_optimiser_steps_saves_no_half_stepped_state(
    compose_cfg, cyclegan_dir, tmp_path, monkeypatch, caplog
):
    original = CycleGANModule.discriminator_terms

    def stopped(self, *args, **kwargs):  # the generators have stepped; the discriminators not yet
        if self.current_epoch == 1:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(CycleGANModule, "discriminator_terms", stopped)
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    with pytest.raises(TrainingInterrupted):
        train_logged(compose_cfg, tmp_path / "stopped", *data_overrides(cyclegan_dir))
    checkpoints = tmp_path / "stopped" / "checkpoints"
    assert not (checkpoints / "interrupted.ckpt").exists() and (checkpoints / "last.ckpt").is_file()
    assert "between two optimiser steps" in caplog.text and "resume from last.ckpt" in caplog.text

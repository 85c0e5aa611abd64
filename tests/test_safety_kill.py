"""Issue 14, item 4: the resume point survives a kill at any moment.

A training run (`train()` as `train.py` calls it, in a process forked from a fork server) is killed with
SIGKILL at random moments (many epochs of a few steps each, so that checkpoint saves take a large share of
the time) and restarted on the same run folder from last.ckpt, several times.
After every kill last.ckpt must be an intact training checkpoint, and the next start removes the temporary
files the killed process left.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from helpers.training import data_overrides
from stylegan_transfer.training.resume import find_resume_point
from stylegan_transfer.training.run import train

TMP_NAME = re.compile(r"^\..*\.tmp-(\d+)")


def _train_child(cfg_yaml: str) -> None:
    """Runs in a process forked from the fork server: train() as train.py runs it, nothing preloaded twice."""
    from omegaconf import OmegaConf

    from stylegan_transfer.training.launch import register_resolvers
    from stylegan_transfer.training.run import train

    register_resolvers()
    train(OmegaConf.create(cfg_yaml))


def fork_server():
    """A multiprocessing context whose children fork from a server that imported the training code once:
    each start takes a second instead of the 10-20 s of a fresh `python train.py` on a loaded machine."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["stylegan_transfer.training.run", "test_safety_kill"])
    return context


def intact(path: Path) -> bool:
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(content, dict) and "optimizer_states" in content and "loops" in content


@pytest.mark.slow
def test_random_kills_never_break_the_resume_point(compose_cfg, cyclegan_dir, tmp_path):
    rng = random.Random(14)
    context = fork_server()
    # the default recipe's VGG terms off: this is about checkpoints, and each child should reach its first save fast
    vgg_off = ("model.lambda_content=0", "model.lambda_style=0")
    cfg = compose_cfg(
        *data_overrides(cyclegan_dir), "model.epochs_constant=400", "model.epochs_decay=0", *vgg_off
    )
    ckpt_dir = Path(cfg.paths.output_dir) / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    kills, deadline = 0, time.monotonic() + 150  # 8 kills take well under a minute on an idle 2-core machine
    while kills < 8 and time.monotonic() < deadline:
        with open_dict(cfg):
            cfg.ckpt_path = str(last) if last.exists() else None
        before = _version(last)
        process = context.Process(target=_train_child, args=(OmegaConf.to_yaml(cfg, resolve=True),))
        process.start()
        waited = time.monotonic()
        while _version(last) == before and process.is_alive() and time.monotonic() - waited < 60:
            time.sleep(0.01)  # until this process saved its first resume point: it is training
        assert process.is_alive(), f"training stopped by itself (exit code {process.exitcode})"
        time.sleep(rng.uniform(0.0, 1.0))  # a random moment: mid-step, mid-save or mid-link
        os.kill(process.pid, signal.SIGKILL)
        process.join()
        kills += 1
        assert intact(last), f"last.ckpt broken after kill {kills}"
        assert find_resume_point(last) == last
        assert not [p for p in ckpt_dir.iterdir() if TMP_NAME.match(p.name)]  # swept: their process is dead
    assert kills >= 4
    epochs = torch.load(last, weights_only=True)["epoch"]
    # every run went on from where the killed one stopped and saved at least one more epoch; the stored epoch
    # is 0-based (the first run's first save stores 0), so `kills` runs reach at least kills - 1
    assert epochs >= kills - 1


def _train_killed_at_second_link(cfg_yaml: str, link_function: str) -> None:
    """train() killed (SIGKILL, no clean-up) the moment it links last.ckpt for the second time (epoch 1):
    the new epoch file is saved and the old one removed, the link not yet replaced."""
    real = getattr(os, link_function)
    calls: list[str] = []

    def link_then_die(src, dst, *args, **kwargs):
        if "last" in os.path.basename(dst):
            calls.append(dst)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst, *args, **kwargs)

    setattr(os, link_function, link_then_die)
    _train_child(cfg_yaml)


@pytest.mark.slow
@pytest.mark.parametrize(
    "checkpoint_class, link_function, survives",
    [
        ("stylegan_transfer.training.checkpointing.ResumeCheckpoint", "link", True),
        # the control: Lightning's own save_last=link removes last.ckpt before re-linking it
        ("lightning.pytorch.callbacks.ModelCheckpoint", "symlink", False),
    ],
)
def test_a_kill_while_last_is_relinked(compose_cfg, cyclegan_dir, checkpoint_class, link_function, survives):
    cfg = compose_cfg(
        *data_overrides(cyclegan_dir),
        "trainer.max_epochs=2",
        f"callbacks.checkpoint._target_={checkpoint_class}",
    )
    folder = Path(cfg.paths.output_dir) / "checkpoints"
    process = fork_server().Process(
        target=_train_killed_at_second_link, args=(OmegaConf.to_yaml(cfg, resolve=True), link_function)
    )
    process.start()
    process.join(timeout=240)
    assert process.exitcode == -signal.SIGKILL  # killed at the link, not finished
    epoch_file = folder / "epoch_0001.ckpt"
    assert intact(epoch_file) and not (folder / "epoch_0000.ckpt").exists()  # the moment of the kill
    last = folder / "last.ckpt"
    assert intact(last) == survives
    if survives:  # the previous resume point, whole (a hard link keeps the removed epoch file's data)
        assert torch.load(last, weights_only=True)["epoch"] == 0
        assert find_resume_point(last) == last
    else:  # Lightning's link was gone: resume still finds the newest intact checkpoint
        assert find_resume_point(last) == epoch_file


def test_training_start_removes_temporary_files_of_dead_processes_only(compose_cfg, cyclegan_dir):
    cfg = compose_cfg(*data_overrides(cyclegan_dir), "trainer.max_epochs=1")
    run_dir = Path(cfg.paths.output_dir)
    dead, alive = _dead_pid(), os.getppid()
    stale = [
        run_dir / "checkpoints" / f".last.tmp-{dead}.ckpt",
        run_dir / "checkpoints" / f".epoch_0003.tmp-{dead}.ckpt",
        run_dir / f".result.tmp-{dead}.json",
        run_dir / "export" / f".g_ab.tmp-{dead}.safetensors",
        run_dir / "samples" / f".epoch_0002.tmp-{dead}.png",
    ]
    kept = [
        run_dir / "checkpoints" / f".last.tmp-{alive}.ckpt",  # another process still writing it
        run_dir / "checkpoints" / "notes.txt",
        run_dir / "export" / f"tmp-{dead}.safetensors",  # not one of our temporary names
    ]
    for path in stale + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    train(cfg)
    assert [p for p in stale if p.exists()] == []
    assert all(p.read_bytes() == b"partial" for p in kept)


def test_a_broken_last_checkpoint_falls_back_to_the_newest_intact_one(compose_cfg, cyclegan_dir, caplog):
    cfg = compose_cfg(*data_overrides(cyclegan_dir), "trainer.max_epochs=2")
    train(cfg)
    folder = Path(cfg.paths.output_dir) / "checkpoints"
    last, epoch_file = folder / "last.ckpt", folder / "epoch_0001.ckpt"
    assert epoch_file.is_file() and intact(last)
    stale = folder / f".last.tmp-{_dead_pid()}.ckpt"
    stale.write_bytes(b"half a checkpoint")

    damaged = last.read_bytes()[:1000]
    last.unlink()  # (writing into it would damage epoch_0001.ckpt too: they are one file, hard-linked)
    last.write_bytes(damaged)
    assert find_resume_point(last) == epoch_file
    assert not stale.exists()  # swept: its process is gone
    last.unlink()
    last.symlink_to("epoch_0000.ckpt")  # dangling, as Lightning's own link could leave it
    assert find_resume_point(last) == epoch_file
    last.unlink()  # missing
    assert find_resume_point(last) == epoch_file

    resumed = compose_cfg(*data_overrides(cyclegan_dir), "trainer.max_epochs=3", f"ckpt_path={last}")
    train(resumed)
    assert "resuming from" in caplog.text and str(epoch_file) in caplog.text
    assert (
        torch.load(Path(resumed.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
        == 2
    )


def test_last_checkpoint_is_a_hard_link_not_a_symlink(compose_cfg, cyclegan_dir):
    cfg = compose_cfg(*data_overrides(cyclegan_dir), "trainer.max_epochs=2")
    train(cfg)
    folder = Path(cfg.paths.output_dir) / "checkpoints"
    last = folder / "last.ckpt"
    assert not last.is_symlink()
    assert last.stat().st_ino == (folder / "epoch_0001.ckpt").stat().st_ino
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def _version(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid

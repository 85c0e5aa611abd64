"""Kill-and-resume: a run stopped after an epoch and resumed from last.ckpt continues exactly."""

import pytest
import torch

from helpers.training import data_overrides, step_losses, train_logged
from stylegan_transfer.training.cyclegan import CycleGANModule


@pytest.fixture
def dataset_overrides(cyclegan_dir):
    return data_overrides(cyclegan_dir)


def test_stop_and_resume_matches_uninterrupted_train_logged(compose_cfg, dataset_overrides, tmp_path):
    full = step_losses(train_logged(compose_cfg, tmp_path / "full", *dataset_overrides))
    assert len(full) == 12  # 3 epochs x 4 steps

    first = train_logged(compose_cfg, tmp_path / "first", *dataset_overrides, "trainer.max_epochs=2")
    last = first / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    resumed = step_losses(
        train_logged(compose_cfg, tmp_path / "resumed", *dataset_overrides, f"ckpt_path={last}")
    )
    assert sorted(resumed) == [8, 9, 10, 11]  # only the third epoch was trained again
    for step, values in resumed.items():
        assert values == pytest.approx(full[step], rel=1e-6, abs=1e-7), f"step {step}"


def test_crash_mid_epoch_keeps_last_checkpoint_and_resumes_exactly(
    compose_cfg, dataset_overrides, tmp_path, monkeypatch
):
    full = step_losses(train_logged(compose_cfg, tmp_path / "full", *dataset_overrides))

    original = CycleGANModule.training_step

    def crashing(self, batch, batch_idx):
        if self.current_epoch == 2 and batch_idx == 1:  # in the third epoch, after the epoch-2 checkpoint
            raise RuntimeError("simulated crash")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(CycleGANModule, "training_step", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_logged(compose_cfg, tmp_path / "crashed", *dataset_overrides)
    monkeypatch.setattr(CycleGANModule, "training_step", original)

    checkpoints = tmp_path / "crashed" / "checkpoints"
    assert (checkpoints / "interrupted.ckpt").is_file()  # written on the way down
    state = torch.load(checkpoints / "last.ckpt", weights_only=True)  # plain values only
    assert state["epoch"] == 1 and {"image_pools", "rng", "lr_schedulers"} <= set(state)
    resumed = step_losses(
        train_logged(
            compose_cfg, tmp_path / "resumed", *dataset_overrides, f"ckpt_path={checkpoints / 'last.ckpt'}"
        )
    )
    for step, values in resumed.items():
        assert values == pytest.approx(full[step], rel=1e-6, abs=1e-7), f"step {step}"


def test_atomic_checkpoint_write_keeps_previous_file_on_failure(tmp_path, monkeypatch):
    from stylegan_transfer.training.checkpointing import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"value": torch.tensor(1)}, path)

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"value": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["value"].item() == 1
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_missing_ckpt_path_fails_fast(compose_cfg, dataset_overrides, tmp_path):
    with pytest.raises(FileNotFoundError, match="ckpt_path"):
        train_logged(compose_cfg, tmp_path / "x", *dataset_overrides, f"ckpt_path={tmp_path / 'nope.ckpt'}")


def test_last_checkpoint_follows_every_epoch_even_without_improvement(
    compose_cfg, dataset_overrides, tmp_path
):
    # lr=0: the validation metric never improves after the first epoch; last.ckpt must still move on
    out = train_logged(compose_cfg, tmp_path / "flat", *dataset_overrides, "model.lr=0")
    checkpoints = out / "checkpoints"
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 2
    assert torch.load(checkpoints / "best.ckpt", weights_only=True)["epoch"] == 0

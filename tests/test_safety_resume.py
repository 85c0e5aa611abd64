"""Issue 14, items 2 and 8: resuming never runs pickled code, and a bad ckpt_path is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers.training import data_overrides, train_py
from stylegan_transfer.training.checkpointing import AtomicCheckpointIO
from stylegan_transfer.training.resume import ResumeError
from stylegan_transfer.training.run import train


class Payload:
    """Unpickling this creates `marker`: proof that the file's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


@pytest.fixture
def last_ckpt(compose_cfg, cyclegan_dir) -> Path:
    """last.ckpt of a tiny real training run."""
    cfg = compose_cfg(*data_overrides(cyclegan_dir), "trainer.max_epochs=1")
    train(cfg)
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


def evil_copy(ckpt: Path, out: Path, marker: Path) -> Path:
    """A real checkpoint with a code-running object added: everything else would resume fine."""
    content = torch.load(ckpt, weights_only=True)
    content["callbacks"]["payload"] = Payload(marker)
    torch.save(content, out)
    return out


def test_checkpoint_io_reads_weights_only_whatever_the_environment(last_ckpt, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    evil = evil_copy(last_ckpt, tmp_path / "evil.ckpt", marker)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(Exception, match=r"GLOBAL (builtins\.)?exec"):
        AtomicCheckpointIO().load_checkpoint(evil, weights_only=False)
    assert not marker.exists()
    assert AtomicCheckpointIO().load_checkpoint(last_ckpt)["epoch"] == 0  # an honest one loads


@pytest.mark.slow
def test_train_py_refuses_a_malicious_checkpoint_in_one_line(last_ckpt, cyclegan_dir, tmp_path):
    marker = tmp_path / "pwned"
    evil = evil_copy(last_ckpt, tmp_path / "evil.ckpt", marker)
    result = train_py(
        *data_overrides(cyclegan_dir),
        f"hydra.run.dir={tmp_path / 'run'}",
        f"ckpt_path={evil}",
        env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"},
    )
    assert result.returncode == 2, result.stderr
    assert not marker.exists()
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(evil) in errors[0] and "never unpickled" in errors[0]
    assert "Traceback" not in result.stderr


def _resume(compose_cfg, cyclegan_dir, ckpt: Path, *extra: str) -> str:
    cfg = compose_cfg(*data_overrides(cyclegan_dir), f"ckpt_path={ckpt}", *extra)
    with pytest.raises(ResumeError) as err:
        train(cfg)
    message = str(err.value)
    assert "\n" not in message and str(ckpt) in message
    return message


def test_truncated_checkpoint_is_one_line(compose_cfg, cyclegan_dir, last_ckpt, tmp_path):
    bad = tmp_path / "truncated.ckpt"
    bad.write_bytes(last_ckpt.read_bytes()[:5000])
    assert "truncated" in _resume(compose_cfg, cyclegan_dir, bad)


def test_a_text_file_is_one_line(compose_cfg, cyclegan_dir, tmp_path):
    bad = tmp_path / "notes.ckpt"
    bad.write_text("these are not weights\n" * 50)
    assert "not a PyTorch checkpoint" in _resume(compose_cfg, cyclegan_dir, bad)


@pytest.mark.parametrize(
    "content, expected",
    [
        ([1, 2, 3], "holds a list"),
        ({"epoch": 1}, "no 'state_dict'"),
        ("state", "holds a str"),
    ],
)
def test_foreign_checkpoint_content_is_one_line(compose_cfg, cyclegan_dir, tmp_path, content, expected):
    bad = tmp_path / "foreign.ckpt"
    torch.save(content, bad)
    assert expected in _resume(compose_cfg, cyclegan_dir, bad)


def test_weights_only_checkpoint_cannot_resume(compose_cfg, cyclegan_dir, last_ckpt, tmp_path):
    content = torch.load(last_ckpt, weights_only=True)
    del content["optimizer_states"]
    bad = tmp_path / "weights.ckpt"
    torch.save(content, bad)
    assert "no optimizer and loop state" in _resume(compose_cfg, cyclegan_dir, bad)


def test_checkpoint_of_another_model_size_names_the_settings(compose_cfg, cyclegan_dir, last_ckpt):
    message = _resume(compose_cfg, cyclegan_dir, last_ckpt, "model.generator.channels=8")
    assert "same model settings" in message and "'channels': 4" in message and "'channels': 8" in message

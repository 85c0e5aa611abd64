"""Issue 14, item 10: bad settings and settings that would train nothing are refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.training import data_overrides, refusal_lines, train_py
from stylegan_transfer.training.errors import ConfigError
from stylegan_transfer.training.run import train


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.lr=abc", "model.lr must be a number >= 0, got 'abc'"),
        ("model.lr=-1", "model.lr must be a number >= 0"),
        ("model.beta1=1.5", "model.beta1 must be a number from 0 to below 1"),
        ("model.lambda_cycle=-10", "model.lambda_cycle must be a number >= 0"),
        ("model.epochs_constant=0 model.epochs_decay=0", "nothing would be trained"),
        ("model.pool_size=abc", "model.pool_size must be an integer"),
        ("model.generator.channels=-4", "model.generator must be a valid generator"),
        ("model.generator.n_blocks=100000000", "n_blocks must be an integer from 0 to 64"),
        ("data.max_dataset_size=0", "data.max_dataset_size must be an integer >= 1 (or null), got 0"),
        ("data.val_size=0", "data.val_size must be an integer >= 1, got 0"),
        ("data.batch_size=0", "data.batch_size must be an integer >= 1"),
        ("data.crop_size=abc", "data.crop_size must be an integer >= 4"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 would train nothing"),
        ("+trainer.limit_train_batches=0", "trainer.limit_train_batches=0 would train nothing"),
    ],
)
def test_bad_settings_are_one_line_naming_the_key(compose_cfg, cyclegan_dir, tmp_path, override, expected):
    cfg = compose_cfg(*data_overrides(cyclegan_dir), *override.split())
    with pytest.raises(ConfigError) as err:
        train(cfg)
    message = str(err.value)
    assert expected in message and "\n" not in message
    assert not (Path(cfg.paths.output_dir) / "export").exists()  # nothing untrained exported


def test_fast_style_settings_are_checked_too(compose_cfg, cyclegan_dir, tmp_path):
    cfg = compose_cfg(*data_overrides(cyclegan_dir), "model=fast_style", "model.lambda_style=abc")
    with pytest.raises(ConfigError, match=r"model\.lambda_style must be a number >= 0, got 'abc'"):
        train(cfg)


@pytest.mark.slow
def test_train_py_reports_a_bad_learning_rate_in_one_line(cyclegan_dir, tmp_path):
    errors = refusal_lines(
        train_py(*data_overrides(cyclegan_dir), f"hydra.run.dir={tmp_path / 'run'}", "model.lr=abc")
    )
    assert errors == ["error: model.lr must be a number >= 0, got 'abc'"]

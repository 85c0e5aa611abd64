"""Issue 25, item 3: every numeric setting typed and ranged, every boolean a boolean, checked before anything
is built (`training.config_rules`): one line naming the key, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.training import data_overrides, refusal_lines, train_py
from stylegan_transfer.training.errors import ConfigError
from stylegan_transfer.training.run import train


@pytest.mark.parametrize(
    "override, expected",
    [
        ("data.crop_size=20000 data.load_size=20000", "data.load_size must be an integer >= 4 and <= 8192"),
        ("data.crop_size=20000", "data.crop_size must be an integer >= 4 and <= 4096, got 20000"),
        (
            "model.discriminator.channels=100000000",
            "model.discriminator.channels must be an integer >= 1 and <= 1024",
        ),
        (
            "model.discriminator.channels=1024 model.discriminator.n_layers=8",
            "model.discriminator must be at most",
        ),
        ("seed=abc", "seed must be an integer >= 0 and <= 4294967295, got 'abc'"),
        ("seed=-1", "seed must be an integer >= 0"),
        ("trainer.max_epochs=-5", "trainer.max_epochs must be an integer >= -1"),
        ("data.flip=maybe", "data.flip must be true or false, got 'maybe'"),
        ("data.flip=1", "data.flip must be true or false, got 1"),
        ("model.channels_last=maybe", "model.channels_last must be true or false"),
        ("model.ema_decay=1.5", "model.ema_decay must be a number from 0.0 to"),
        ("data.num_workers=100000", "data.num_workers must be an integer >= 0 and <= 256"),
        ("export=sometimes", "export must be true or false"),
    ],
)
def test_settings_out_of_type_or_range_are_refused_before_anything_is_built(
    compose_cfg, cyclegan_dir, monkeypatch, override, expected
):
    cfg = compose_cfg(*data_overrides(cyclegan_dir), *override.split())
    built = []
    monkeypatch.setattr("stylegan_transfer.training.run.build", lambda *a, **k: built.append(a) or 1 / 0)
    monkeypatch.setattr("lightning.seed_everything", lambda *a, **k: built.append(a) or 1 / 0)
    with pytest.raises(ConfigError) as err:
        train(cfg)
    message = str(err.value)
    assert expected in message and "\n" not in message, message
    assert built == []  # refused before seeding or building anything
    assert not Path(cfg.paths.output_dir).exists()


def test_the_shipped_configs_pass_the_rules(compose_cfg, cyclegan_dir):
    from stylegan_transfer.training import config_rules

    for overrides in (
        [],
        ["experiment=hd"],
        ["model=fast_style"],
        ["model=cut"],
        ["model/discriminator=pixel"],
    ):
        config_rules.check_config(compose_cfg(*data_overrides(cyclegan_dir), *overrides, tiny=False))


@pytest.mark.slow
def test_train_py_reports_an_unusable_seed_in_one_line_with_exit_code_2(cyclegan_dir, tmp_path):
    errors = refusal_lines(
        train_py(*data_overrides(cyclegan_dir), f"hydra.run.dir={tmp_path / 'run'}", "seed=abc")
    )
    assert errors == ["error: seed must be an integer >= 0 and <= 4294967295, got 'abc'"]

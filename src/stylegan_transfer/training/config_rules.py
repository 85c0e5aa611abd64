"""Every numeric and boolean setting of a composed training config, typed and ranged in one table.

`check_config` runs first in `run.train`, before a seed is set or anything is built: a bad value fails with
one line naming the key (`data.crop_size must be an integer >= 4 and <= 4096, got 20000`), exit code 2.
The modules keep their own checks for the Python API; this table is what the command line meets first.
Keys absent from a config (another model's settings) are skipped; upper bounds are far above any recipe
and well below what would exhaust memory before the first step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from stylegan_transfer.discriminators import DISCRIMINATORS
from stylegan_transfer.inference.generator_file import MAX_PARAMETERS
from stylegan_transfer.training import settings
from stylegan_transfer.training.settings import SettingError

Rule = Callable[[str, Any], None]


def _int(low: int, high: int | None = None, *, optional: bool = False) -> Rule:
    return functools.partial(settings.count, low=low, high=high, optional=optional)


def _flag(*, optional: bool = False) -> Rule:
    return functools.partial(settings.flag, optional=optional)


def _number(low: float, high: float) -> Rule:
    return functools.partial(settings.number, low=low, high=high)


MAX_SIDE = 4096  # pixels of a training crop (the HD recipe: 512); load_size may be twice that
RULES: dict[str, Rule] = {
    "seed": _int(0, 2**32 - 1),  # what torch and numpy accept
    "export": _flag(),
    "data.load_size": _int(4, 2 * MAX_SIDE),
    "data.crop_size": _int(4, MAX_SIDE),
    "data.flip": _flag(),
    "data.swap_domains": _flag(),
    "data.download": _flag(),
    "data.batch_size": _int(1, 4096),
    "data.num_workers": _int(0, 256),
    "data.val_size": _int(1),
    "data.max_dataset_size": _int(1, optional=True),
    "model.epochs_constant": _int(0, 100_000),
    "model.epochs_decay": _int(0, 100_000),
    "model.pool_size": _int(0, 10_000),
    "model.ema_decay": _number(0.0, 0.999999),
    "model.channels_last": _flag(),
    "model.compile": _flag(),
    "model.fused_adam": _flag(optional=True),
    "model.discriminator.channels": _int(1, 1024),
    "model.discriminator.n_layers": _int(1, 8),
    "model.discriminator.antialias": _flag(),
    "model.discriminator.spectral_norm": _flag(),
    "trainer.max_epochs": _int(-1, 1_000_000),  # -1: no limit (Lightning's meaning); 0 is refused later
    "trainer.max_steps": _int(-1),
    "trainer.check_val_every_n_epoch": _int(1, optional=True),
    "trainer.log_every_n_steps": _int(1),
    "trainer.num_sanity_val_steps": _int(-1),
    "trainer.use_distributed_sampler": _flag(),
}

_ABSENT = object()


def _value(cfg: DictConfig, key: str) -> Any:
    """The resolved value at `key`, or _ABSENT when the config has no such key or it cannot be resolved
    (a resolution error is left to the builder, which names it)."""
    try:
        value = OmegaConf.select(cfg, key, default=_ABSENT)
    except Exception:
        return _ABSENT
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def check_discriminator_size(cfg: DictConfig) -> None:
    """The discriminator's parameter count (on the meta device: nothing is allocated) within the budget of
    generator files."""
    net = _value(cfg, "model.discriminator")
    if not isinstance(net, dict) or net.get("arch") not in DISCRIMINATORS:
        return  # none, or an unknown arch: the builder names the known ones
    kwargs = {k: v for k, v in net.items() if k != "arch"}
    try:
        with torch.device("meta"):
            count = sum(p.numel() for p in DISCRIMINATORS[net["arch"]](**kwargs).parameters())
    except Exception:
        return  # unknown or ill-typed arguments: `run.check_networks` and the builder say which
    if count > MAX_PARAMETERS:
        raise SettingError(
            "model.discriminator", f"at most {MAX_PARAMETERS:,} parameters", f"{count:,} parameters"
        )


def check_config(cfg: DictConfig) -> None:
    """Raise SettingError (message `<key> must be ..., got ...`) for the first setting out of its range."""
    for key, rule in RULES.items():
        value = _value(cfg, key)
        if value is not _ABSENT:
            rule(key, value)
    check_discriminator_size(cfg)

"""Checks of training settings: each bad value fails with one line naming the setting and what it accepts.

The modules call these on their typed keyword arguments before building anything; `run.train` adds the
configuration key in front (`model.lr must be a number > 0, got 'abc'`).
"""

from __future__ import annotations

import math
from typing import Any

from stylegan_transfer.inference.generator_file import check_generator_args


class SettingError(ValueError):
    """`name` has a value outside what it accepts; str(err) reads `<name> must be ..., got ...`."""

    def __init__(self, name: str, requirement: str, value: Any) -> None:
        self.name, self.requirement, self.value = name, requirement, value
        super().__init__(f"{name} must be {requirement}, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def positive(name: str, value: Any) -> None:
    if not _is_number(value) or value <= 0:
        raise SettingError(name, "a number > 0", value)


def non_negative(name: str, value: Any) -> None:
    if not _is_number(value) or value < 0:
        raise SettingError(name, "a number >= 0", value)


def fraction(name: str, value: Any) -> None:
    """Adam's betas: 0 <= value < 1."""
    if not _is_number(value) or not 0 <= value < 1:
        raise SettingError(name, "a number from 0 to below 1", value)


def count(name: str, value: Any, *, low: int = 0, high: int | None = None, optional: bool = False) -> None:
    """An integer from `low` to `high` (no upper bound when None; None allowed when `optional`)."""
    if optional and value is None:
        return
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < low
        or (high is not None and value > high)
    ):
        upper = f" and <= {high}" if high is not None else ""
        raise SettingError(name, f"an integer >= {low}{upper}" + (" (or null)" if optional else ""), value)


def number(name: str, value: Any, *, low: float, high: float) -> None:
    """A finite number from `low` to `high`."""
    if not _is_number(value) or not low <= value <= high:
        raise SettingError(name, f"a number from {low} to {high}", value)


def flag(name: str, value: Any, *, optional: bool = False) -> None:
    """true or false (None allowed when `optional`); 'maybe', 1 or 'yes' are not booleans."""
    if optional and value is None:
        return
    if not isinstance(value, bool):
        raise SettingError(name, "true or false" + (" (or null)" if optional else ""), value)


def check_training_settings(
    *,
    generator: dict[str, Any],
    lr: Any,
    betas: tuple[Any, Any],
    lambdas: dict[str, Any],
    epochs: tuple[Any, Any],
    init_gain: Any,
) -> None:
    """The settings both training modules share: the generator (as an export would be checked), the
    optimiser, the loss weights and the epoch counts (at least one epoch in all)."""
    kwargs = {k: v for k, v in generator.items() if k != "arch"}
    try:
        check_generator_args(generator.get("arch"), kwargs)
    except ValueError as err:
        raise SettingError("generator", f"a valid generator ({err})", generator) from None
    non_negative("lr", lr)  # 0 is allowed: a run that only evaluates
    fraction("beta1", betas[0])
    fraction("beta2", betas[1])
    for name, value in lambdas.items():
        non_negative(name, value)
    count("epochs_constant", epochs[0])
    count("epochs_decay", epochs[1])
    if epochs[0] + epochs[1] < 1:
        raise SettingError(
            "epochs_constant + epochs_decay", "at least 1 (nothing would be trained)", sum(epochs)
        )
    positive("init_gain", init_gain)

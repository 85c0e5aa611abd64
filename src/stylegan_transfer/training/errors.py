"""How a training run fails: the error types the entry points report, and their one-line messages.

`ConfigError` and the other `USER_ERRORS` end a single run with one line and exit code 2; `TrainingInterrupted`
carries the signal's exit code and says where the saved state is.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L

from stylegan_transfer.datasets import DataError
from stylegan_transfer.perceptual import VGGWeightsError
from stylegan_transfer.training.checkpointing import CheckpointOnException
from stylegan_transfer.training.resume import ResumeError


class ConfigError(ValueError):
    """A configuration that composes but cannot be built, or a setting that is invalid or would train
    nothing; the message names the key and the override that fixes it."""


class TrainingInterrupted(Exception):
    """Training stopped by SIGTERM or Ctrl-C; `exit_code` is the conventional 128 + signal number and
    `status` ("interrupted") is what result.json records."""

    status = "interrupted"

    def __init__(self, message: str, *, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# one clear line, exit code 2
USER_ERRORS = (DataError, VGGWeightsError, FileNotFoundError, ConfigError, ResumeError)


def interrupted_message(cause: str, trainer: L.Trainer, callbacks: list) -> str:
    """Where training stopped and how to resume it (or that nothing was saved yet)."""
    saved = [
        Path(cb.dirpath) / "interrupted.ckpt"
        for cb in callbacks
        if isinstance(cb, CheckpointOnException) and (Path(cb.dirpath) / "interrupted.ckpt").is_file()
    ]
    where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
    if not saved:
        return f"training stopped by {cause} at {where}; no state was saved (nothing was trained yet)"
    return (
        f"training stopped by {cause} at {where}; state saved to {saved[0]}: resume with ckpt_path={saved[0]} "
        "(the epoch goes on with the batches it had not trained; only its epoch-mean metrics restart)"
    )


def one_line(err: BaseException) -> str:
    """The message of a user error; for one re-raised from a DataLoader worker (whose text holds the worker's
    traceback), the original message alone."""
    text = str(err).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        prefix = f"{type(err).__module__}.{type(err).__name__}: "
        text = last.removeprefix(prefix).removeprefix(f"{type(err).__name__}: ")
    return text

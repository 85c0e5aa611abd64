"""Checking a resume checkpoint before Lightning reads it: one clear line instead of a traceback.

`check_resume(path, module)` reads the file the way every checkpoint is read (`weights_only=True`, see
inference.checkpoint), then checks that it is a full training checkpoint whose weights fit `module`
(names and shapes). Lightning's own load then goes through `AtomicCheckpointIO`, weights-only as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from stylegan_transfer.inference.checkpoint import load_checkpoint_file
from stylegan_transfer.inference.generator_file import ExportError

# Modules whose weights are not trained (loaded from their own files at setup) and so may differ.
UNTRAINED_PREFIXES = ("perceptual.",)


class ResumeError(RuntimeError):
    """ckpt_path cannot be resumed from; the one-line message names the file and what to do."""


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if hasattr(value, "shape") else None


def _fit_problem(state: dict[str, Any], module: nn.Module) -> str | None:
    """Why `state` does not fit `module` (first problem), or None."""
    expected = {k: v for k, v in module.state_dict().items() if not k.startswith(UNTRAINED_PREFIXES)}
    given = {k: v for k, v in state.items() if not k.startswith(UNTRAINED_PREFIXES)}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing:
        return f"it lacks {len(missing)} of this model's weights (first: {missing[0]})"
    if unexpected:
        return f"it has {len(unexpected)} weights this model does not (first: {unexpected[0]})"
    for key, value in expected.items():
        if _shape(given[key]) != _shape(value):
            return f"{key} has shape {_shape(given[key])}, this model's is {_shape(value)}"
    return None


def _settings(hparams: Any) -> str:
    if not isinstance(hparams, dict):
        return "?"
    return ", ".join(f"{k}={hparams.get(k)}" for k in ("generator", "discriminator") if k in hparams)


def check_resume(path: str | Path, module: nn.Module) -> dict[str, Any]:
    """Raise ResumeError (one line) unless `path` is a training checkpoint that `module` can resume from."""
    path = Path(path).expanduser()
    try:
        ckpt = load_checkpoint_file(path)
    except ExportError as err:
        raise ResumeError(f"cannot resume: {err}") from None
    if not isinstance(ckpt.get("optimizer_states"), list) or not isinstance(ckpt.get("loops"), dict):
        raise ResumeError(
            f"cannot resume from {path}: it holds weights but no optimizer and loop state (not a full "
            "training checkpoint); resume from <run>/checkpoints/last.ckpt or an epoch_*.ckpt."
        )
    problem = _fit_problem(ckpt["state_dict"], module)
    if problem is not None:
        theirs = _settings(ckpt.get("hyper_parameters"))
        ours = _settings(dict(getattr(module, "hparams", {})))
        raise ResumeError(
            f"cannot resume from {path}: its weights do not fit this model ({problem}); it was trained with "
            f"{theirs} and this run builds {ours}: resume with the same model settings."
        )
    return ckpt

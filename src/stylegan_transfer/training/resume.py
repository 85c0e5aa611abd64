"""Checking a resume checkpoint before Lightning reads it: one clear line instead of a traceback.

`check_resume(path, module)` reads the file the way every checkpoint is read (`weights_only=True`, see
inference.checkpoint), then checks that it is a full training checkpoint whose weights fit `module`
(names and shapes). Lightning's own load then goes through `AtomicCheckpointIO`, weights-only as well.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from torch import nn

from stylegan_transfer.atomic import sweep_stale
from stylegan_transfer.inference.checkpoint import load_checkpoint_file
from stylegan_transfer.inference.generator_file import ExportError

log = logging.getLogger(__name__)

# Modules whose weights are not trained (loaded from their own files at setup) and so may differ.
UNTRAINED_PREFIXES = ("perceptual.",)


class ResumeError(RuntimeError):
    """ckpt_path cannot be resumed from; the one-line message names the file and what to do."""


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if hasattr(value, "shape") else None


def _fit_problem(state: dict[str, Any], module: nn.Module) -> str | None:
    """Why `state` does not fit `module` (first problem), or None. A tensor of `module` of shape (0,) is a buffer
    sized on first use (`perceptual.RunningGrams`): any stored shape fits it, as its loading adopts it."""
    expected = {k: v for k, v in module.state_dict().items() if not k.startswith(UNTRAINED_PREFIXES)}
    given = {k: v for k, v in state.items() if not k.startswith(UNTRAINED_PREFIXES)}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing:
        return f"it lacks {len(missing)} of this model's weights (first: {missing[0]})"
    if unexpected:
        return f"it has {len(unexpected)} weights this model does not (first: {unexpected[0]})"
    for key, value in expected.items():
        if _shape(given[key]) != _shape(value) and _shape(value) != (0,):
            return f"{key} has shape {_shape(given[key])}, this model's is {_shape(value)}"
    return None


def _settings(hparams: Any) -> str:
    if not isinstance(hparams, dict):
        return "?"
    return ", ".join(f"{k}={hparams.get(k)}" for k in ("generator", "discriminator") if k in hparams)


def _read_full_checkpoint(path: Path) -> tuple[str | None, int]:
    """(why `path` is not an intact full training checkpoint or None, its global step), read weights-only."""
    try:
        ckpt = load_checkpoint_file(path)
    except ExportError as err:
        return str(err), -1
    if not isinstance(ckpt.get("optimizer_states"), list) or not isinstance(ckpt.get("loops"), dict):
        return (
            f"{path} holds weights but no optimizer and loop state (not a full training checkpoint); resume "
            "from <run>/checkpoints/last.ckpt or an epoch_*.ckpt.",
            -1,
        )
    step = ckpt.get("global_step")
    return None, step if isinstance(step, int) else 0


def find_resume_point(path: str | Path) -> Path:
    """`path` if it is an intact training checkpoint. When it is a `last.ckpt` that is missing, dangling or
    damaged, the intact checkpoint beside it that trained furthest instead (with a warning). Stale
    temporary files of killed runs in that folder are removed first."""
    path = Path(path).expanduser()
    sweep_stale(path.parent)
    problem, _ = _read_full_checkpoint(path)
    if problem is None:
        return path
    if path.name == "last.ckpt" and path.parent.is_dir():
        intact = []
        for candidate in path.parent.glob("*.ckpt"):
            if candidate != path and not candidate.name.startswith(".") and candidate.is_file():
                found, step = _read_full_checkpoint(candidate)
                if found is None:  # furthest first; at equal steps an epoch file before best.ckpt
                    intact.append((step, candidate.name != "best.ckpt", candidate.stat().st_mtime, candidate))
        if intact:
            best = max(intact)[-1]
            log.warning(
                "%s is missing or damaged; resuming from %s, the intact checkpoint trained furthest",
                path,
                best,
            )
            return best
    if not os.path.lexists(path):
        raise FileNotFoundError(
            f"ckpt_path {path} does not exist; give the path of a .ckpt file "
            "(for example <run>/checkpoints/last.ckpt)."
        )
    raise ResumeError(f"cannot resume: {problem}")


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

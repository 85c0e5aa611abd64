"""The one reader of training checkpoints outside the training stack (no Lightning import).

A checkpoint is read with `torch.load(weights_only=True)`, which refuses arbitrary pickled objects. What
export needs beyond the weights (style, domain names, preprocessing, training size) was written into the
checkpoint at train time under `EXPORT_METADATA_KEY`; no Hydra folder is ever parsed.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stylegan_transfer.inference.generator_file import ExportError, check_generator_args, nonfinite_weight
from stylegan_transfer.networks import GENERATORS, build_generator, size_multiple

# Generator roles: name -> (source domain, target domain).
ROLES = {"g_ab": ("a", "b"), "g_ba": ("b", "a")}
# Checkpoint key holding plain export metadata (style, domain_a, domain_b, preprocess, train_size).
EXPORT_METADATA_KEY = "export_metadata"
# A generator's moving average is stored beside it as `<role>_ema.*`; exports prefer it.
EMA_SUFFIX = "_ema"


@dataclass
class CheckpointGenerators:
    """The generators of one checkpoint: architecture, constructor arguments, weights per role."""

    path: Path
    arch: str
    kwargs: dict[str, Any]
    states: dict[str, dict[str, torch.Tensor]]  # per role: the EMA weights when the checkpoint has them
    epoch: int = 0
    global_step: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)  # written at train time; may be empty
    ema_roles: tuple[str, ...] = ()  # roles whose `states` are moving averages

    def build(self, role: str = "g_ab") -> nn.Module:
        """Rebuild one generator (eval mode), with `.export_metadata` giving its size multiple."""
        if role not in self.states:
            raise ExportError(f"{self.path} has no {role} weights; it has {sorted(self.states)}")
        try:
            generator = build_generator(self.arch, **self.kwargs)  # arguments checked in read_checkpoint
            generator.load_state_dict(self.states[role])
        except Exception as err:
            detail = " ".join(str(err).split())[:300] or type(err).__name__
            raise ExportError(
                f"{self.path}: {role} weights do not fit {self.arch}{self.kwargs}: {detail}"
            ) from None
        bad = nonfinite_weight(self.states[role])
        if bad is not None:
            raise ExportError(
                f"{self.path}: {role} weight {bad} holds NaN or infinite values (the training diverged); "
                "use an earlier checkpoint (best.ckpt or an epoch_*.ckpt)."
            )
        generator.export_metadata = {
            "arch": self.arch,
            "kwargs": self.kwargs,
            "size_multiple": size_multiple(self.arch, self.kwargs),
        }
        return generator.eval()

    def domain(self, which: str) -> str:
        """Human name of domain "a" or "b" (from the training run), else "A" / "B"."""
        return str(self.metadata.get(f"domain_{which}") or which.upper())


def _load_failure(path: Path, err: BaseException) -> str:
    """One line saying why torch could not read `path` (torch's own messages span paragraphs, and some
    advise weights_only=False, which would run the file's code)."""
    text = str(err)
    head = f"{path} is not a readable Lightning checkpoint"
    tail = "use a .ckpt written by train.py (or a .safetensors export)."
    if isinstance(err, pickle.UnpicklingError):
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            return (
                f"{head}: it holds pickled objects that are not plain weights ({found.group(1)}), refused: "
                f"checkpoints are only read as plain tensors and values, never unpickled; {tail}"
            )
        return f"{head}: its pickle data is unreadable (not a PyTorch checkpoint); {tail}"
    if "zip archive" in text or "central directory" in text or isinstance(err, EOFError):
        return f"{head}: it is truncated or not a PyTorch checkpoint; {tail}"
    first = text.strip().splitlines()[0][:200] if text.strip() else ""
    return f"{head} ({type(err).__name__}: {first}); {tail}"


def load_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """A .ckpt file's content, read with `torch.load(weights_only=True)` whatever the environment says
    (an explicit argument wins over TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD): plain tensors and values only, no
    pickled code. Every failure is an ExportError of one line naming the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ExportError(
            f"checkpoint {path} does not exist; give a .ckpt file (e.g. <run>/checkpoints/last.ckpt)"
        )
    try:
        with open(path, "rb") as handle:
            magic = handle.read(2)
    except OSError as err:
        raise ExportError(f"cannot read checkpoint {path} ({err.strerror or err}).") from None
    if magic not in (b"PK", b"\x80\x02"):  # torch's zip format, or its legacy pickle (protocol 2)
        raise ExportError(
            f"{path} is not a readable Lightning checkpoint: an empty file or not a PyTorch checkpoint; use a "
            ".ckpt written by train.py (or a .safetensors export)."
        )
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for corrupt/foreign files
        raise ExportError(_load_failure(path, err)) from err
    if not isinstance(ckpt, dict):
        raise ExportError(
            f"{path} holds a {type(ckpt).__name__}, not a Lightning checkpoint; use a .ckpt written by train.py."
        )
    if not isinstance(ckpt.get("state_dict"), dict):
        raise ExportError(
            f"{path} is not a Lightning checkpoint (no 'state_dict'); use a .ckpt written by train.py."
        )
    return ckpt


def read_checkpoint(path: str | Path) -> CheckpointGenerators:
    """Read a training checkpoint's generators; every problem is an ExportError naming the file."""
    path = Path(path).expanduser()
    ckpt = load_checkpoint_file(path)
    hparams = ckpt.get("hyper_parameters") or {}
    gen = hparams.get("generator") if isinstance(hparams, dict) else None
    if not isinstance(gen, dict) or not isinstance(gen.get("arch"), str):
        raise ExportError(
            f"{path} has no generator hyper-parameters ('hyper_parameters.generator.arch'); "
            "it was not written by stylegan-transfer's training."
        )
    if gen["arch"] not in GENERATORS:
        raise ExportError(f"{path}: unknown generator arch {gen['arch']!r}; known: {sorted(GENERATORS)}")
    kwargs = {k: v for k, v in gen.items() if k != "arch"}
    try:
        check_generator_args(gen["arch"], kwargs)
    except ValueError as err:
        raise ExportError(
            f"{path}: generator hyper-parameters do not fit {gen['arch']}: {err}; the file is damaged or was "
            "not written by stylegan-transfer's training."
        ) from None
    states: dict[str, dict[str, torch.Tensor]] = {}
    ema_roles: list[str] = []
    for role in ROLES:
        for prefix in (role + EMA_SUFFIX + ".", role + "."):  # the moving average first, when kept
            state = {
                k[len(prefix) :]: v
                for k, v in ckpt["state_dict"].items()
                if isinstance(k, str) and k.startswith(prefix) and isinstance(v, torch.Tensor)
            }
            if state:
                states[role] = state
                ema_roles += [role] if prefix.startswith(role + EMA_SUFFIX) else []
                break
    if not states:
        raise ExportError(f"{path} holds no g_ab.* or g_ba.* weights.")
    metadata = ckpt.get(EXPORT_METADATA_KEY) or {}
    return CheckpointGenerators(
        path=path,
        arch=gen["arch"],
        kwargs=kwargs,
        states=states,
        epoch=_count(ckpt.get("epoch")),
        global_step=_count(ckpt.get("global_step")),
        metadata=dict(metadata) if isinstance(metadata, dict) else {},
        ema_roles=tuple(ema_roles),
    )


def _count(value: Any) -> int:
    """A checkpoint's epoch or step as an int (0 when absent or not a plain number)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def generator_from_checkpoint(path: str | Path, role: str = "g_ab") -> nn.Module:
    """Rebuild one generator (eval mode) straight from a training checkpoint."""
    return read_checkpoint(path).build(role)

"""Torch's safe-load refusals, said in one line.

`torch.load(weights_only=True)` refuses a pickle that names anything besides tensors and plain containers
with a message of several lines that ends by suggesting `weights_only=False`, which would run the file's
code. `refusal_reason` keeps only what was refused (`Unsupported global: GLOBAL builtins.exec`); callers say
that nothing was run and name the file.
"""

from __future__ import annotations


def refusal_reason(err: BaseException) -> str:
    """The informative part of a weights-only refusal, one line, never the advice to turn the check off."""
    text = str(err)
    detail = text.partition("WeightsUnpickler error:")[2].strip() or text.strip()
    line = detail.splitlines()[0].strip() if detail else ""
    line = line.partition(" was not an allowed global")[0].strip()
    if not line or "weights_only" in line:
        return type(err).__name__
    return line


def first_line(err: BaseException) -> str:
    """The first line of an error's message (its type when empty)."""
    text = str(err).strip()
    return text.splitlines()[0].strip() if text else type(err).__name__

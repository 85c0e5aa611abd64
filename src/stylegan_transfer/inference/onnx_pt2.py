"""ONNX and torch.export (.pt2) outputs of a generator, each checked against eager PyTorch when written.

Both take any batch, height and width (>= MIN_SIZE): the exported graph pads H and W to the
generator's size multiple and crops the result back (`networks.PaddedGenerator`). After writing, the
file is loaded back (onnxruntime / `torch.export.load`) and run on random inputs of several sizes,
odd ones included; a difference above `atol` raises ParityError and the file is not kept.
ONNX needs the optional extra: `pip install "stylegan-transfer[export]"`.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from stylegan_transfer.atomic import atomic_path
from stylegan_transfer.networks import PaddedGenerator

# (batch, height, width) of the parity inputs: odd, non-square and multiple-of-4 sizes.
CHECK_SIZES: tuple[tuple[int, int, int], ...] = ((1, 37, 53), (3, 64, 64), (2, 29, 96))
MIN_SIZE = 16
MAX_SIZE = 16384


class ParityError(RuntimeError):
    """An exported model's outputs differ from eager PyTorch by more than the tolerance."""


class MissingExtraError(RuntimeError):
    """An optional dependency of an export format is not installed."""


def _dynamic_shapes(multiple: int) -> dict:
    low = max(MIN_SIZE, 2 * multiple)
    batch = torch.export.Dim("batch", min=1, max=4096)
    height = torch.export.Dim("height", min=low, max=MAX_SIZE)
    width = torch.export.Dim("width", min=low, max=MAX_SIZE)
    return {"x": {0: batch, 2: height, 3: width}}


def _example(multiple: int) -> torch.Tensor:
    # Batch 2 (a batch of 1 would specialise the batch dimension) and sizes that need padding.
    side = max(MIN_SIZE, 2 * multiple) + 1
    return torch.rand(2, 3, side, side + 2) * 2 - 1  # (B, C, H, W)


def _inputs(sizes: Sequence[tuple[int, int, int]], multiple: int) -> list[torch.Tensor]:
    rng = torch.Generator().manual_seed(0)
    low = max(MIN_SIZE, 2 * multiple)
    return [
        torch.rand(b, 3, max(h, low), max(w, low), generator=rng) * 2 - 1  # (B, C, H, W)
        for b, h, w in sizes
    ]


def _parity(
    exported: Callable[[torch.Tensor], torch.Tensor],
    model: nn.Module,
    check_sizes: Sequence[tuple[int, int, int]],
    multiple: int,
    atol: float,
    what: str,
) -> float:
    """The max |exported(x) - model(x)| over test inputs of `check_sizes`; ParityError when a shape differs or
    the difference exceeds `atol` (NaN included)."""
    diff = 0.0
    for x in _inputs(check_sizes, multiple):
        out = exported(x)
        if tuple(out.shape) != tuple(x.shape):
            raise ParityError(f"{what} output shape {tuple(out.shape)} != input {tuple(x.shape)}")
        diff = max(diff, float((out - model(x)).abs().max()))
    if not diff <= atol:  # also catches NaN
        raise ParityError(f"{what} output differs from eager PyTorch by {diff:.3e} > atol {atol:.1e}")
    return diff


@torch.no_grad()
def export_pt2(
    generator: nn.Module,
    path: str | Path,
    *,
    multiple: int = 4,
    atol: float = 1e-4,
    check_sizes: Sequence[tuple[int, int, int]] = CHECK_SIZES,
) -> float:
    """Write a torch.export program with dynamic batch/H/W; returns the max |exported - eager|."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = PaddedGenerator(generator.eval(), multiple).eval()
    program = torch.export.export(model, (_example(multiple),), dynamic_shapes=_dynamic_shapes(multiple))
    with atomic_path(path) as tmp:  # kept only when the parity check passes
        torch.export.save(program, str(tmp))
        loaded = torch.export.load(str(tmp)).module()
        return _parity(loaded, model, check_sizes, multiple, atol, "torch.export")


def _onnxruntime():
    try:
        import onnxruntime
        import onnxscript  # noqa: F401  (the dynamo ONNX exporter needs it)
    except ImportError as err:
        raise MissingExtraError(
            f"ONNX export needs the optional extra ({err.name} is missing): "
            'pip install "stylegan-transfer[export]"'
        ) from err
    return onnxruntime


@torch.no_grad()
def export_onnx(
    generator: nn.Module,
    path: str | Path,
    *,
    multiple: int = 4,
    atol: float = 1e-4,
    check_sizes: Sequence[tuple[int, int, int]] = CHECK_SIZES,
    opset: int = 18,
) -> float:
    """Write an ONNX model (input `image`, output `output`, dynamic batch/H/W); returns max |onnx - eager|."""
    ort = _onnxruntime()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = PaddedGenerator(generator.eval(), multiple).eval()
    with atomic_path(path) as tmp:  # kept only when the parity check passes
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress lines
            torch.onnx.export(
                model,
                (_example(multiple),),
                str(tmp),
                dynamo=True,
                dynamic_shapes=_dynamic_shapes(multiple),
                input_names=["image"],
                output_names=["output"],
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run_onnx(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run(None, {name: x.numpy()})[0])

        return _parity(run_onnx, model, check_sizes, multiple, atol, "ONNX")

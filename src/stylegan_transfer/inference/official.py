"""Generators trained with the official CycleGAN / pix2pix code, converted into our generator file format.

    stylegan-export --from-official checkpoints/horse2zebra/latest_net_G_A.pth --domain-a horse --domain-b zebra

The official repository (github.com/junyanz/pytorch-CycleGAN-and-pix2pix, `models/networks.py`) saves each
network as a plain state dict (`<epoch>_net_G_A.pth`). Our `ResnetGenerator` and `UnetGenerator` are built
layer for layer like theirs, so the conversion is a renaming plus checks; the architecture and its constructor
arguments are inferred from the tensors alone. The official key names relied on:

ResNet (`resnet_9blocks`, `resnet_6blocks`): one `nn.Sequential` named `model`:
  model.1        Conv2d 7x7, in -> C          (model.0 ReflectionPad2d(3); model.2 norm; model.3 ReLU)
  model.4, .7    Conv2d 3x3 stride 2, C -> 2C -> 4C   (model.5, .8 norm)
  model.{10..9+n}.conv_block.{i}   n ResnetBlocks, `conv_block` = [pad, conv(1), norm(2), ReLU, (Dropout),
                 pad, conv(5, or 6 with dropout), norm(6, or 7)]
  model.{10+n}, model.{13+n}   ConvTranspose2d 4C -> 2C -> C   (norms at 11+n, 14+n)
  model.{17+n}   Conv2d 7x7, C -> out (with bias); then Tanh
  Ours differs only in the block's attribute name: `body` for `conv_block`.
U-Net (`unet_128`, `unet_256`): nested UnetSkipConnectionBlocks, each with a Sequential `model`:
  outermost  model.model.{0 down conv, 1 submodule, 3 ConvTranspose2d}
  middle     ...model.{1 down conv, 2 norm, 3 submodule, 5 ConvTranspose2d, 6 norm}
  innermost  ...model.{1 down conv, 3 ConvTranspose2d, 4 norm}
  so the submodule of level k sits at `model.model.1.model.3.model.3...`; ours has the same names.

What the tensors tell: the norm (BatchNorm layers carry weight and running statistics; with instance norm the
convolutions have biases and the norm layers nothing; with `--norm none` neither, and our zero biases stand in
for the missing ones), ResNet dropout (it shifts the block's second convolution from index 5 to 6), widths,
block count and U-Net depth. U-Net dropout leaves no trace in the weights; it does nothing at inference
(eval mode) anyway. Old PyTorch versions saved `running_mean`/`running_var` (and `num_batches_tracked`) for
InstanceNorm layers that do not use them: they are dropped, as the official test script does. A `module.`
prefix (DataParallel) and a wrapping `{"state_dict": ...}` are removed. Converted generators run in eval mode:
batch norm uses its running statistics (the official test script keeps train mode unless given `--eval`,
which matters for pix2pix's batch-norm U-Nets only; the published CycleGAN models use instance norm).
Only the official reflection padding in residual blocks is accepted (the default; zero padding is refused).

Files are read with `torch.load(weights_only=True)`: nothing in them is executed, and anything other than a
mapping of names to tensors is refused. Nothing is built from a file before its size (MAX_FILE_BYTES), its
tensors' element count and the inferred architecture have passed the bounds of `generator_file`
(`check_generator_args`: widths, depths and at most MAX_PARAMETERS parameters), counted from the shapes alone:
a small file whose tensors expand from one stored value cannot make the converter allocate gigabytes.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stylegan_transfer.inference.generator_file import (
    MAX_PARAMETERS,
    ExportError,
    check_generator_args,
    save_generator,
)
from stylegan_transfer.networks import build_generator
from stylegan_transfer.unpickling import refusal_reason

SOURCE_FORMAT = "official CycleGAN/pix2pix state dict (junyanz/pytorch-CycleGAN-and-pix2pix)"
_RESNET_BLOCK = re.compile(r"^model\.(\d+)\.conv_block\.(\d+)\.weight$")
_STAT_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
MAX_FILE_BYTES = (
    4 * MAX_PARAMETERS + 64 * 2**20
)  # float32 weights of the largest generator allowed, plus slack


class OfficialFormatError(ExportError):
    """A file is not an official-layout generator state dict we can convert; the message says why."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a `.pth` state dict, read without running any code from the file."""
    path = Path(path)
    if not path.is_file():
        raise OfficialFormatError(f"{path} does not exist; give the path of a .pth state dict.")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise OfficialFormatError(
            f"{path} was refused: {size:,} bytes, more than a generator file can be ({MAX_FILE_BYTES:,})."
        )
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the refusal below says enough
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise OfficialFormatError(
            f"{path} was refused: not a plain state dict of tensors ({refusal_reason(err)}); "
            "nothing in it was run."
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OfficialFormatError(f"{path} is not a readable PyTorch state dict ({first}).") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise OfficialFormatError(f"{path} holds a {type(state).__name__}, not a state dict of tensors.")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise OfficialFormatError(f"{path} is not a state dict of tensors (entry {bad[0]!r}).")
    if all(k.startswith("module.") for k in state):  # saved from a DataParallel wrapper
        state = {k.removeprefix("module."): v for k, v in state.items()}
    check_tensor_sizes(state, str(path))
    return dict(state)


def check_tensor_sizes(state: dict[str, torch.Tensor], where: str) -> None:
    """Refuse tensors that claim more elements than the largest generator allowed has parameters (from their
    shapes alone: a tensor expanded from one stored value claims its full size)."""
    total = 0
    for key, value in state.items():
        total += value.numel()
        if total > 2 * MAX_PARAMETERS:  # weights plus norm statistics, with room to spare
            raise OfficialFormatError(
                f"{where} was refused: its tensors claim more than {2 * MAX_PARAMETERS:,} values "
                f"(at {key}, shape {tuple(value.shape)}); no generator this package builds is that large."
            )


def _drop_unused_norm_statistics(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove running statistics of layers without weights: InstanceNorm extras of old PyTorch versions."""
    layers = {k.rpartition(".")[0] for k in state if k.endswith(_STAT_SUFFIXES)}
    unused = {layer for layer in layers if f"{layer}.weight" not in state}
    return {k: v for k, v in state.items() if k.rpartition(".")[0] not in unused}


def _shape(state: dict[str, torch.Tensor], key: str, where: str) -> tuple[int, ...]:
    if key not in state:
        raise OfficialFormatError(f"{where}: expected the official key {key!r}, which is missing.")
    return tuple(state[key].shape)


def _infer_norm(state: dict[str, torch.Tensor], norm_key: str, conv_key: str) -> str:
    if f"{norm_key}.weight" in state:
        return "batch"
    return "instance" if f"{conv_key}.bias" in state else "none"


def _infer_resnet(
    state: dict[str, torch.Tensor], where: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    convs: dict[int, set[int]] = {}
    for key, value in state.items():
        if (match := _RESNET_BLOCK.match(key)) and value.dim() == 4:  # convolutions, not batch-norm scales
            convs.setdefault(int(match[1]), set()).add(int(match[2]))
    blocks = sorted(convs)
    n_blocks = len(blocks)
    if blocks != list(range(10, 10 + n_blocks)):
        raise OfficialFormatError(
            f"{where}: residual blocks at model.{blocks} instead of model.10 onwards; "
            "not the official ResNet layout (2 downsamplings)."
        )
    layouts = {frozenset(c) for c in convs.values()}
    if len(layouts) != 1 or next(iter(layouts)) not in ({1, 5}, {1, 6}):
        found = sorted(next(iter(convs.values())))
        raise OfficialFormatError(
            f"{where}: residual block convolutions at conv_block.{found}; only reflection padding "
            "(conv_block.1 and .5, or .6 with dropout) can be converted."
        )
    dropout = 6 in next(iter(layouts))
    channels, in_channels, *_ = _shape(state, "model.1.weight", where)
    out_channels = _shape(state, f"model.{17 + n_blocks}.weight", where)[0]
    kwargs = {
        "in_channels": in_channels,
        "out_channels": out_channels,
        "channels": channels,
        "n_blocks": n_blocks,
        "norm": _infer_norm(state, "model.2", "model.1"),
        "upsample": "transpose",
        "dropout": dropout,
    }
    renamed = {re.sub(r"^(model\.\d+)\.conv_block\.", r"\1.body.", k): v for k, v in state.items()}
    return kwargs, renamed


def _infer_unet(
    state: dict[str, torch.Tensor], where: str, dropout: bool
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    channels, in_channels, *_ = _shape(state, "model.model.0.weight", where)
    out_channels = _shape(state, "model.model.3.weight", where)[1]  # ConvTranspose2d: (in, out, kH, kW)
    level, num_downs = "model.model.1.model.", 2
    while any(k.startswith(f"{level}3.model.") for k in state):
        level, num_downs = f"{level}3.model.", num_downs + 1
    if num_downs < 5:
        raise OfficialFormatError(f"{where}: a U-Net with {num_downs} levels; at least 5 are needed.")
    kwargs = {
        "in_channels": in_channels,
        "out_channels": out_channels,
        "channels": channels,
        "num_downs": num_downs,
        "norm": _infer_norm(state, "model.model.1.model.2", "model.model.0"),
        "dropout": dropout,
    }
    return kwargs, dict(state)


def _looks_like_discriminator(state: dict[str, torch.Tensor]) -> bool:
    first = state.get("model.0.weight")
    return first is not None and first.dim() == 4 and tuple(first.shape[-2:]) in ((4, 4), (1, 1))


def _fit(generator: nn.Module, state: dict[str, torch.Tensor], norm: str, where: str) -> None:
    """Load `state` into `generator` strictly, after checking every name and shape."""
    expected = generator.state_dict()
    state = dict(state)
    for key, value in expected.items():
        if key in state:
            continue
        if norm == "none" and key.endswith(".bias") and key.removesuffix(".bias") + ".weight" in state:
            state[key] = torch.zeros_like(value)  # official convs have no bias with --norm none
        elif key.endswith(".num_batches_tracked"):
            state[key] = torch.zeros_like(value)  # BatchNorm of PyTorch < 0.4.1
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}")
        raise OfficialFormatError(f"{where}: keys do not fit the inferred network ({'; '.join(parts)}).")
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise OfficialFormatError(
                f"{where}: {key} has shape {tuple(state[key].shape)}, the inferred network needs "
                f"{tuple(value.shape)}; not an official-layout generator."
            )
    generator.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


def convert_state_dict(
    state: dict[str, torch.Tensor], *, where: str = "state dict", unet_dropout: bool = False
) -> tuple[str, dict[str, Any], nn.Module]:
    """(arch, constructor kwargs, our generator holding the weights) for an official-layout state dict."""
    check_tensor_sizes(state, where)
    state = _drop_unused_norm_statistics(state)
    if any(_RESNET_BLOCK.match(k) for k in state):
        arch = "resnet"
        kwargs, mapped = _infer_resnet(state, where)
    elif any(k.startswith("model.model.") for k in state):
        arch = "unet"
        kwargs, mapped = _infer_unet(state, where, unet_dropout)
    elif _looks_like_discriminator(state):
        raise OfficialFormatError(
            f"{where} looks like a discriminator (net_D); only generators (net_G, net_G_A, net_G_B) translate images."
        )
    else:
        first = ", ".join(sorted(state)[:3])
        raise OfficialFormatError(
            f"{where}: not an official CycleGAN/pix2pix generator (no ResNet `model.N.conv_block` or U-Net "
            f"`model.model` keys; first keys: {first})."
        )
    if (kwargs["in_channels"], kwargs["out_channels"]) != (3, 3):
        raise OfficialFormatError(
            f"{where}: a generator for {kwargs['in_channels']} -> {kwargs['out_channels']} channels; "
            "only RGB (3 -> 3) generators can be converted."
        )
    try:  # widths, depths and the parameter budget, counted without building anything
        check_generator_args(arch, kwargs)
    except ValueError as err:
        raise OfficialFormatError(
            f"{where} was refused: the inferred {arch} is out of bounds: {err}."
        ) from None
    del kwargs["in_channels"], kwargs["out_channels"]
    try:
        generator = build_generator(arch, **kwargs)
    except (TypeError, ValueError) as err:
        raise OfficialFormatError(f"{where}: inferred {arch} {kwargs} cannot be built: {err}") from None
    _fit(generator, mapped, kwargs["norm"], where)
    return arch, kwargs, generator.eval()


def role_of(path: str | Path) -> str:
    """`g_ba` for the official `*_net_G_B.pth` (B -> A), else `g_ab`."""
    return "g_ba" if Path(path).stem.endswith("G_B") else "g_ab"


def convert_official(
    source: str | Path,
    target: str | Path,
    *,
    name: str | None = None,
    style: str | None = None,
    domain_a: str | None = None,
    domain_b: str | None = None,
    role: str | None = None,
    train_size: int | None = None,
    source_url: str | None = None,
    unet_dropout: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Convert an official-layout `.pth` generator into a `.safetensors` generator file at `target`.

    `role` defaults from the file name (`..._net_G_B.pth` is B -> A); the direction recorded is
    `<domain_a> -> <domain_b>` for g_ab and the reverse for g_ba.
    """
    source, target = Path(source), Path(target)
    arch, kwargs, generator = convert_state_dict(
        read_state_dict(source), where=str(source), unet_dropout=unet_dropout
    )
    role = role or role_of(source)
    names = {"a": domain_a or "A", "b": domain_b or "B"}
    direction = f"{names['a']} -> {names['b']}" if role == "g_ab" else f"{names['b']} -> {names['a']}"
    info: dict[str, Any] = {
        "name": name or target.stem,
        "style": style or name or "",
        "role": role,
        "domain_a": names["a"],
        "domain_b": names["b"],
        "source_format": SOURCE_FORMAT,
        "converted_from": source.name,
    }
    if train_size is not None:
        info["train_size"] = int(train_size)
    if source_url:
        info["source_url"] = source_url
    return save_generator(
        generator, target, arch=arch, kwargs=kwargs, direction=direction, extra={**info, **(extra or {})}
    )

"""Issue 14, items 6, 7 and 11: crafted generator files and checkpoints give one line naming the file.

Every bad file is generated here from a tiny real generator: crafted safetensors metadata (absurd sizes,
wrong types, deep JSON), crafted .ckpt files (unknown arch, bad arguments, shape mismatch, non-dict, no
state_dict) and NaN weights, each read by the library and by the export, translate and eval commands.
"""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import TINY_G_KWARGS, write_images
from stylegan_transfer.inference import export, translation
from stylegan_transfer.inference.checkpoint import generator_from_checkpoint
from stylegan_transfer.inference.generator_file import (
    ExportError,
    check_generator_args,
    load_generator,
    read_metadata,
    save_generator,
)
from stylegan_transfer.metrics import evaluate
from stylegan_transfer.networks import build_generator

translate = importlib.import_module("stylegan_transfer.inference.translate")  # the package exports a function

TINY = TINY_G_KWARGS  # the tiny ResNet generator's constructor arguments


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    generator = build_generator("resnet", **TINY)
    return save_generator(generator, tmp_path / "g_ab.safetensors", arch="resnet", kwargs=TINY)


def edited(exported: Path, out: Path, *, raw: str | None = None, **changes) -> Path:
    """A copy of `exported` with metadata fields changed (or the whole metadata string replaced)."""
    text = raw if raw is not None else json.dumps({**read_metadata(exported), **changes})
    save_file(load_file(str(exported)), str(out), metadata={"stylegan_transfer": text})
    return out


def tiny_checkpoint(path: Path, *, generator: dict | None = None, state: dict | None = None, **top) -> Path:
    """A checkpoint shaped like train.py's (the parts export reads): hyper-parameters and g_ab/g_ba weights."""
    net = build_generator("resnet", **TINY)
    if state is None:
        state = {f"{role}.{k}": v for role in ("g_ab", "g_ba") for k, v in net.state_dict().items()}
    content = {
        "epoch": 0,
        "global_step": 1,
        "state_dict": state,
        "hyper_parameters": {"generator": generator or {"arch": "resnet", **TINY}},
        **top,
    }
    torch.save(content, path)
    return path


def one_line(message: str, path: Path) -> None:
    assert "\n" not in message.strip(), message
    assert str(path) in message, message
    assert "Traceback" not in message


# ----------------------------------------------------------------------------- item 6: crafted metadata
BAD_KWARGS = {
    "negative_channels": {"channels": -4, "n_blocks": 1},
    "channels_1e5": {"channels": 100_000, "n_blocks": 1},
    "channels_1e9": {"channels": 1_000_000_000, "n_blocks": 1},
    "n_blocks_1e8": {"channels": 4, "n_blocks": 100_000_000},
    "float_channels": {"channels": 4.5, "n_blocks": 1},
    "bool_channels": {"channels": True, "n_blocks": 1},
    "string_blocks": {"channels": 4, "n_blocks": "9"},
    "unknown_norm": {"channels": 4, "n_blocks": 1, "norm": "layer"},
    "unknown_argument": {"channels": 4, "n_blocks": 1, "bogus": 1},
    "over_budget": {"channels": 1024, "n_blocks": 64},
}


@pytest.mark.parametrize("case", sorted(BAD_KWARGS))
def test_crafted_constructor_arguments_are_refused_quickly(exported, tmp_path, case):
    bad = edited(exported, tmp_path / f"{case}.safetensors", kwargs=BAD_KWARGS[case])
    start = time.perf_counter()
    with pytest.raises(ExportError, match="do not fit") as err:
        load_generator(bad)
    assert time.perf_counter() - start < 5  # nothing was built
    one_line(str(err.value), bad)


@pytest.mark.parametrize("value", [0, -4, 100_000, "abc", 4.0, True, 6])
def test_crafted_size_multiple_is_refused(exported, tmp_path, value):
    bad = edited(exported, tmp_path / "multiple.safetensors", size_multiple=value)
    with pytest.raises(ExportError, match="size_multiple") as err:
        load_generator(bad)
    one_line(str(err.value), bad)


def test_deeply_nested_metadata_is_refused(exported, tmp_path):
    bad = edited(exported, tmp_path / "nested.safetensors", raw="[" * 200_000 + "]" * 200_000)
    with pytest.raises(ExportError) as err:
        load_generator(bad)
    one_line(str(err.value), bad)


def test_unet_depth_is_bounded_and_sane_arguments_pass():
    check_generator_args("unet", {"channels": 8, "num_downs": 7})
    check_generator_args("johnson", {"channels": 32, "n_blocks": 5, "norm": "instance"})
    check_generator_args("resnet", {"channels": 64, "n_blocks": 9, "upsample": "resize", "dropout": True})
    with pytest.raises(ValueError, match="num_downs"):
        check_generator_args("unet", {"channels": 8, "num_downs": 40})
    with pytest.raises(ValueError, match="takes no argument 'upsample'"):
        check_generator_args("johnson", {"upsample": "resize"})


def test_translate_cli_reports_crafted_metadata_in_one_line(exported, tmp_path, capsys):
    bad = edited(exported, tmp_path / "big.safetensors", kwargs={"channels": 4, "n_blocks": 100_000_000})
    write_images(tmp_path / "in", 1)
    code = translate.main(
        ["--checkpoint", str(bad), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o")]
    )
    assert code == 2
    one_line(capsys.readouterr().err, bad)
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- item 7: crafted checkpoints
def crafted_checkpoints(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the message must say)."""
    other = build_generator("resnet", channels=8, n_blocks=1).state_dict()
    return {
        "unknown_arch": (
            tiny_checkpoint(tmp_path / "arch.ckpt", generator={"arch": "os.system"}),
            "unknown generator arch",
        ),
        "bad_arguments": (
            tiny_checkpoint(tmp_path / "args.ckpt", generator={"arch": "resnet", "channels": -4}),
            "channels must be an integer",
        ),
        "huge_arguments": (
            tiny_checkpoint(tmp_path / "huge.ckpt", generator={"arch": "resnet", "n_blocks": 10**8}),
            "n_blocks must be an integer",
        ),
        "shape_mismatch": (
            tiny_checkpoint(tmp_path / "shape.ckpt", state={f"g_ab.{k}": v for k, v in other.items()}),
            "do not fit",
        ),
        "not_a_dict": (_saved(tmp_path / "list.ckpt", [1, 2, 3]), "holds a list"),
        "no_state_dict": (_saved(tmp_path / "nostate.ckpt", {"epoch": 3}), "no 'state_dict'"),
        "no_generators": (
            tiny_checkpoint(tmp_path / "nogen.ckpt", state={"d_a.w": torch.zeros(1)}),
            "no g_ab",
        ),
        "nan_weights": (_nan_checkpoint(tmp_path / "nan.ckpt"), "NaN"),
    }


def _saved(path: Path, content) -> Path:
    torch.save(content, path)
    return path


def _nan_checkpoint(path: Path) -> Path:
    net = build_generator("resnet", **TINY)
    state = {f"g_ab.{k}": v.clone() for k, v in net.state_dict().items()}
    state["g_ab.model.1.weight"][0, 0, 0, 0] = float("nan")
    return tiny_checkpoint(path, state=state)


CKPT_CASES = [
    "unknown_arch",
    "bad_arguments",
    "huge_arguments",
    "shape_mismatch",
    "not_a_dict",
    "no_state_dict",
    "no_generators",
    "nan_weights",
]


@pytest.mark.parametrize("case", CKPT_CASES)
def test_crafted_checkpoints_in_export_translate_and_eval(tmp_path, capsys, case):
    path, expected = crafted_checkpoints(tmp_path)[case]
    with pytest.raises(ExportError, match=expected):
        generator_from_checkpoint(path)

    out = tmp_path / "export_out"
    assert export.main([str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    one_line(err, path)
    assert expected in err and not out.exists()

    write_images(tmp_path / "in", 1)
    args = ["--checkpoint", str(path), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "t")]
    assert translate.main(args) == 2
    one_line(capsys.readouterr().err, path)

    args = ["model", "--checkpoint", str(path), "--input-dir", str(tmp_path / "in"), "--target-dir"]
    assert evaluate.main([*args, str(tmp_path / "in"), "--offline", "--device", "cpu"]) == 2
    one_line(capsys.readouterr().err, path)


# ----------------------------------------------------------------------------- item 11: non-finite
def test_nan_weights_in_an_export_are_refused_at_load(tmp_path, capsys):
    generator = build_generator("resnet", **TINY)
    with torch.no_grad():
        generator.model[1].weight[0] = float("nan")
    path = save_generator(generator, tmp_path / "nan.safetensors", arch="resnet", kwargs=TINY)
    with pytest.raises(ExportError, match="NaN or infinite"):
        load_generator(path)
    write_images(tmp_path / "in", 1)
    args = ["--checkpoint", str(path), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o")]
    assert translate.main(args) == 2
    one_line(capsys.readouterr().err, path)
    assert not (tmp_path / "o").exists()  # no black image written


def test_non_finite_outputs_are_an_error_not_a_black_image(exported, tmp_path, capsys):
    generator = load_generator(exported)
    with torch.no_grad():  # finite weights whose output overflows to infinity
        generator.model[1].weight.fill_(3e38)
    with pytest.raises(translation.NonFiniteOutputError):
        translation.translate_tensor(generator, torch.ones(1, 3, 16, 16), device="cpu")

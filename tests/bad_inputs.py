"""The bad-input corpus: damaged, foreign, crafted and malicious files for every entry point (issue 14).

Each function writes its cases into a folder and returns {case name: path}. Everything is generated (tiny,
deterministic, no network): `python tests/bad_inputs.py OUT` writes the whole corpus to OUT for manual use;
`tests/test_safety_corpus.py` feeds every case to train, translate, export, eval, stylize and download.

Malicious cases are real: unpickling them would create a file named `PWNED` in the current folder.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from helpers import TINY_G_KWARGS
from stylegan_transfer.inference.generator_file import read_metadata, save_generator
from stylegan_transfer.networks import build_generator

TINY = TINY_G_KWARGS  # the tiny ResNet generator's constructor arguments
MARKER = "PWNED"  # what a payload would create if it ever ran


class Payload:
    """Unpickling runs exec(...), which creates MARKER: the proof that a loader executed the file."""

    def __reduce__(self):
        return (exec, (f"open({MARKER!r}, 'w').close()",))


def _jpeg_bytes(seed: int = 0, size: tuple[int, int] = (48, 40)) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png() -> bytes:
    """A tiny PNG whose header claims 100000 x 100000 pixels."""
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + _png_chunk(b"IEND", b"")
    )


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------- images
def images(folder: Path) -> dict[str, Path]:
    """Image files that cannot be used: each must be named once, the rest of a run must go on."""
    jpeg = _jpeg_bytes()
    header_cut = bytearray(jpeg)
    header_cut[2:40] = b"\0" * 38
    return {
        "empty_file": _write(folder / "empty.jpg", b""),
        "text_as_png": _write(folder / "notes.png", b"these are not pixels\n" * 20),
        "truncated_jpeg": _write(folder / "truncated.jpg", jpeg[: len(jpeg) // 2]),
        "damaged_header": _write(folder / "damaged.jpg", bytes(header_cut)),
        "decompression_bomb": _write(folder / "bomb.png", _bomb_png()),
        "pickle_as_jpeg": _write(folder / "payload.jpg", pickle.dumps(Payload())),
    }


# ----------------------------------------------------------------------------- generator exports
def _export(path: Path, *, kwargs: dict | None = None, nan: bool = False) -> Path:
    kwargs = kwargs or TINY
    torch.manual_seed(0)
    generator = build_generator("resnet", **kwargs)
    if nan:
        with torch.no_grad():
            generator.model[1].weight[0] = float("nan")
    return save_generator(generator, path, arch="resnet", kwargs=kwargs)


def _edited(base: Path, path: Path, *, raw: str | None = None, **changes) -> Path:
    text = raw if raw is not None else json.dumps({**read_metadata(base), **changes})
    save_file(load_file(str(base)), str(path), metadata={"stylegan_transfer": text})
    return path


def generator_files(folder: Path) -> dict[str, Path]:
    """.safetensors generator exports: damaged, foreign, crafted metadata, wrong or NaN weights."""
    folder.mkdir(parents=True, exist_ok=True)
    base = _export(folder / "_good.safetensors")
    data = base.read_bytes()
    plain = folder / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    wrong = _export(folder / "_wide.safetensors", kwargs={"channels": 8, "n_blocks": 1})
    cases = {
        "empty_file": _write(folder / "empty.safetensors", b""),
        "truncated": _write(folder / "truncated.safetensors", data[: len(data) // 2]),
        "header_only": _write(folder / "header.safetensors", data[:20]),
        "garbage": _write(folder / "garbage.safetensors", np.random.default_rng(0).bytes(4096)),
        "pickle": _write(folder / "payload.safetensors", pickle.dumps(Payload())),
        "no_metadata": plain,
        "foreign_format": _edited(base, folder / "foreign.safetensors", format="something-else"),
        "newer_version": _edited(base, folder / "newer.safetensors", format_version=99),
        "unknown_arch": _edited(base, folder / "arch.safetensors", arch="os.system"),
        "channels_negative": _edited(
            base, folder / "neg.safetensors", kwargs={"channels": -4, "n_blocks": 1}
        ),
        "channels_1e9": _edited(base, folder / "wide.safetensors", kwargs={"channels": 10**9, "n_blocks": 1}),
        "n_blocks_1e8": _edited(base, folder / "deep.safetensors", kwargs={"channels": 4, "n_blocks": 10**8}),
        "kwargs_object": _edited(
            base, folder / "obj.safetensors", kwargs={"channels": {"_target_": "os.system"}}
        ),
        "size_multiple_text": _edited(base, folder / "multiple_abc.safetensors", size_multiple="abc"),
        "size_multiple_zero": _edited(base, folder / "multiple_0.safetensors", size_multiple=0),
        "nested_json": _edited(base, folder / "nested.safetensors", raw="[" * 200_000 + "]" * 200_000),
        "metadata_not_json": _edited(base, folder / "notjson.safetensors", raw="{arch: resnet"),
        "shape_mismatch": _edited(wrong, folder / "shape.safetensors", kwargs=TINY),
        "nan_weights": _export(folder / "nan.safetensors", nan=True),
    }
    base.unlink()
    wrong.unlink()
    return cases


# ----------------------------------------------------------------------------- training checkpoints
def _ckpt(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(content, path)
    return path


def checkpoints(folder: Path) -> dict[str, Path]:
    """.ckpt files: damaged, foreign, malicious, crafted hyper-parameters, wrong or NaN weights."""
    net = build_generator("resnet", **TINY).state_dict()
    wide = build_generator("resnet", channels=8, n_blocks=1).state_dict()

    def shaped(state: dict, generator: dict | None = None) -> dict:
        return {
            "epoch": 0,
            "global_step": 1,
            "state_dict": state,
            "hyper_parameters": {"generator": generator or {"arch": "resnet", **TINY}},
        }

    weights = {f"{role}.{k}": v for role in ("g_ab", "g_ba") for k, v in net.items()}
    good = _ckpt(folder / "_good.ckpt", shaped(weights))
    data = good.read_bytes()
    nan = {k: v.clone() for k, v in weights.items()}
    nan["g_ab.model.1.weight"][0] = float("nan")
    cases = {
        "empty_file": _write(folder / "empty.ckpt", b""),
        "text": _write(folder / "notes.ckpt", b"these are not weights\n" * 50),
        "garbage": _write(folder / "garbage.ckpt", np.random.default_rng(1).bytes(4096)),
        "truncated": _write(folder / "truncated.ckpt", data[: len(data) // 2]),
        "plain_pickle_exec": _write(folder / "payload.ckpt", pickle.dumps({"state_dict": Payload()})),
        "torch_save_exec": _ckpt(folder / "payload_zip.ckpt", {**shaped(weights), "callbacks": Payload()}),
        "a_list": _ckpt(folder / "list.ckpt", [1, 2, 3]),
        "no_state_dict": _ckpt(folder / "nostate.ckpt", {"epoch": 3}),
        "state_dict_not_dict": _ckpt(folder / "statelist.ckpt", {"state_dict": [1, 2]}),
        "no_hyper_parameters": _ckpt(folder / "nohp.ckpt", {"state_dict": weights}),
        "unknown_arch": _ckpt(folder / "arch.ckpt", shaped(weights, {"arch": "os.system"})),
        "bad_arguments": _ckpt(folder / "args.ckpt", shaped(weights, {"arch": "resnet", "channels": -4})),
        "huge_arguments": _ckpt(folder / "huge.ckpt", shaped(weights, {"arch": "resnet", "n_blocks": 10**8})),
        "shape_mismatch": _ckpt(folder / "shape.ckpt", shaped({f"g_ab.{k}": v for k, v in wide.items()})),
        "no_generators": _ckpt(folder / "nogen.ckpt", shaped({"d_a.w": torch.zeros(1)})),
        "nan_weights": _ckpt(folder / "nan.ckpt", shaped(nan)),
    }
    good.unlink()
    return cases


# ----------------------------------------------------------------------------- dataset archives
def _zip(entries: dict[str, bytes], *, compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def archives() -> dict[str, bytes]:
    """Archive bytes to place as <data_dir>/facades.zip (a download placed by hand)."""
    jpeg = _jpeg_bytes()
    layout = {"facades/trainA/a.jpg": jpeg, "facades/trainB/b.jpg": jpeg}
    good = _zip(layout)
    flipped = bytearray(good)
    start = flipped.index(b"\xff\xd8\xff") + 100
    flipped[start : start + 40] = bytes(b ^ 0x5A for b in flipped[start : start + 40])
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in layout.items():
            zf.writestr(name, data)
        with zf.open("facades/trainB/huge.jpg", "w", force_zip64=True) as member:
            for _ in range(32):
                member.write(b"\0" * (1 << 20))
    return {
        "empty_file": b"",
        "html_error_page": b"<html>503 Service Unavailable</html>",
        "truncated": good[: len(good) // 2],
        "crc_mismatch": bytes(flipped),
        "wrong_layout": _zip({"readme.txt": b"no images here"}),
        "unsafe_path": _zip({**layout, "../../escape.txt": b"x"}),
        "zip_bomb": bomb.getvalue(),
        "pickle": pickle.dumps(Payload()),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tests/bad_inputs.py OUT_FOLDER", file=sys.stderr)
        return 2
    out = Path(argv[0])
    images(out / "images")
    generator_files(out / "generators")
    checkpoints(out / "checkpoints")
    for name, data in archives().items():
        _write(out / "archives" / name / "facades.zip", data)
    print(f"wrote the bad-input corpus to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Generator exports: checkpoint -> safetensors round trip, bad files, ONNX / torch.export parity."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from helpers import REPO, TINY_D, TINY_G, TINY_G_KWARGS, quiet_trainer
from stylegan_transfer.inference.checkpoint import generator_from_checkpoint
from stylegan_transfer.inference.export import export_checkpoint
from stylegan_transfer.inference.generator_file import (
    ExportError,
    load_generator,
    read_metadata,
    save_generator,
)
from stylegan_transfer.networks import PaddedGenerator, build_generator
from stylegan_transfer.training.cyclegan import CycleGANModule


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src")}


def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300
    )


@pytest.fixture
def trained_ckpt(cyclegan_dir: Path, tmp_path: Path) -> tuple[Path, CycleGANModule]:
    """A CycleGANModule trained for 2 steps on tiny images, saved as a Lightning checkpoint."""
    from stylegan_transfer.training.data import UnpairedDataModule

    module = CycleGANModule(generator=TINY_G, discriminator=TINY_D, pool_size=2)
    datamodule = UnpairedDataModule(
        root=str(cyclegan_dir), load_size=36, crop_size=32, num_workers=0, val_size=2
    )
    trainer = quiet_trainer(default_root_dir=tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    trainer.save_checkpoint(path)
    return path, module.eval()


ROUND_TRIP = """
import sys, torch
from PIL import Image
from safetensors.torch import save_file
from stylegan_transfer.images import to_tensor
from stylegan_transfer.inference.generator_file import load_generator
from stylegan_transfer.inference.translation import translate_tensor
generator = load_generator(sys.argv[1])
x = to_tensor(Image.open(sys.argv[2])).unsqueeze(0)
save_file({"y": translate_tensor(generator, x, device="cpu").contiguous()}, sys.argv[3])
assert not any(m.split(".")[0] in ("lightning", "hydra", "wandb") for m in sys.modules)
"""


@pytest.mark.slow
def test_checkpoint_export_translate_in_fresh_process_equals_module_forward(trained_ckpt, tmp_path):
    ckpt, module = trained_ckpt
    out = tmp_path / "export"
    result = run_module("stylegan_transfer.inference.export", str(ckpt), "-o", str(out), "--style", "demo")
    assert result.returncode == 0, result.stderr
    meta = read_metadata(out / "g_ab.safetensors")
    assert meta["arch"] == "resnet" and meta["kwargs"] == {"channels": 4, "n_blocks": 1}
    assert meta["role"] == "g_ab" and meta["style"] == "demo" and meta["direction"] == "A -> B"
    assert meta["package_version"] and meta["value_range"] == [-1.0, 1.0] and meta["size_multiple"] == 4
    assert read_metadata(out / "g_ba.safetensors")["direction"] == "B -> A"

    image_path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(9).integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(image_path)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            ROUND_TRIP,
            str(out / "g_ab.safetensors"),
            str(image_path),
            str(tmp_path / "y"),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    from stylegan_transfer.images import to_tensor

    with torch.no_grad():
        expected = module.g_ab(to_tensor(Image.open(image_path)).unsqueeze(0))  # (1, 3, 36, 40)
    assert torch.equal(load_file(str(tmp_path / "y"))["y"], expected)

    # The CLI writes the same pixels, and the ba generator is the module's g_ba.
    result = run_module(
        "stylegan_transfer.inference.translate",
        "--checkpoint", str(out / "g_ab.safetensors"),
        "--input", str(image_path),
        "--output", str(tmp_path / "cli"),
        "--device", "cpu",
        "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    from stylegan_transfer.images import to_image

    written = Image.open(tmp_path / "cli" / image_path.name)
    assert list(written.getdata()) == list(to_image(expected).getdata())
    g_ba = load_generator(out / "g_ba.safetensors")
    for key, value in module.g_ba.state_dict().items():
        assert torch.equal(g_ba.state_dict()[key], value), key


def test_generator_from_checkpoint_without_lightning_matches_module(trained_ckpt):
    ckpt, module = trained_ckpt
    generator = generator_from_checkpoint(ckpt, role="g_ba")
    x = torch.rand(2, 3, 20, 24) * 2 - 1  # (B, C, H, W)
    with torch.no_grad():
        assert torch.equal(generator(x), module.g_ba(x))


def test_export_refuses_to_overwrite_and_reads_metadata_written_at_train_time(cyclegan_dir, tmp_path):
    from stylegan_transfer.training.checkpointing import ExportMetadata
    from stylegan_transfer.training.data import UnpairedDataModule

    module = CycleGANModule(generator=TINY_G, discriminator=TINY_D, pool_size=2)
    datamodule = UnpairedDataModule(root=str(cyclegan_dir), load_size=36, crop_size=32, num_workers=0)
    facts = ExportMetadata(
        style="demo", domain_a="photo", domain_b="painting", preprocess="crop", train_size=64
    )
    trainer = quiet_trainer(default_root_dir=tmp_path, max_steps=1, limit_val_batches=0, callbacks=[facts])
    trainer.fit(module, datamodule=datamodule)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    hydra_dir = (
        ckpt.parent.parent / ".hydra"
    )  # a run folder's config is never read: the checkpoint says it all
    hydra_dir.mkdir()
    (hydra_dir / "config.yaml").write_text("style: {name: other, domain_a: x, domain_b: y}\n")
    out = tmp_path / "exp"
    export_checkpoint(ckpt, out, roles=("g_ab",), log=lambda _msg: None)
    meta = read_metadata(out / "g_ab.safetensors")
    assert meta["direction"] == "photo -> painting" and meta["style"] == "demo"
    assert meta["preprocess"] == "crop" and meta["train_size"] == 64
    assert not (out / "g_ba.safetensors").exists()
    with pytest.raises(ExportError, match="overwrite"):
        export_checkpoint(ckpt, out, roles=("g_ab",), log=lambda _msg: None)
    export_checkpoint(ckpt, out, roles=("g_ab",), overwrite=True, log=lambda _msg: None)


# ----------------------------------------------------------------------------- bad files
@pytest.fixture
def exported(tmp_path) -> Path:
    generator = build_generator(**TINY_G)
    return save_generator(generator, tmp_path / "g.safetensors", arch="resnet", kwargs=TINY_G_KWARGS)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_truncated_foreign_and_malicious_files_give_clear_errors(exported, tmp_path):
    data = exported.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportError, match=r"truncated|corrupt|not a readable"):
        load_generator(truncated)
    cut_header = tmp_path / "cut.safetensors"
    cut_header.write_bytes(data[:20])
    with pytest.raises(ExportError, match="not a readable"):
        load_generator(cut_header)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(ExportError, match="not a readable"):
        load_generator(garbage)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ExportError, match="not a stylegan-transfer generator"):
        load_generator(plain)
    with pytest.raises(ExportError, match="does not exist"):
        load_generator(tmp_path / "missing.safetensors")

    # A pickle that would run a command: never unpickled, as an export nor as a checkpoint.
    marker = tmp_path / "pwned"
    _Exploit.marker = marker
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"state_dict": _Exploit()}))
    with pytest.raises(ExportError):
        load_generator(evil)
    with pytest.raises(ExportError, match="not a readable Lightning checkpoint"):
        generator_from_checkpoint(evil)
    torch.save({"state_dict": _Exploit()}, evil)
    with pytest.raises(ExportError, match="not a readable Lightning checkpoint"):
        generator_from_checkpoint(evil)
    assert not marker.exists()


def _with_metadata(exported: Path, tmp_path: Path, **changes) -> Path:
    meta = {**read_metadata(exported), **changes}
    path = tmp_path / "edited.safetensors"
    save_file(load_file(str(exported)), str(path), metadata={"stylegan_transfer": json.dumps(meta)})
    return path


def test_metadata_is_validated_against_the_registry(exported, tmp_path):
    with pytest.raises(ExportError, match="unknown generator arch"):
        load_generator(_with_metadata(exported, tmp_path, arch="os.system"))
    with pytest.raises(ExportError, match="plain values"):
        load_generator(_with_metadata(exported, tmp_path, kwargs={"channels": {"_target_": "os.system"}}))
    with pytest.raises(ExportError, match="do not fit"):
        load_generator(_with_metadata(exported, tmp_path, kwargs={"channels": 4, "bogus": 1}))
    with pytest.raises(ExportError, match="do not match"):
        load_generator(_with_metadata(exported, tmp_path, kwargs={"channels": 8, "n_blocks": 1}))
    with pytest.raises(ExportError, match="format"):
        load_generator(_with_metadata(exported, tmp_path, format="something-else"))
    with pytest.raises(ExportError, match="newer"):
        load_generator(_with_metadata(exported, tmp_path, format_version=99))


def test_export_cli_reports_bad_checkpoint_without_traceback(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    result = run_module("stylegan_transfer.inference.export", str(bad), "-o", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "bad.ckpt" in result.stderr and "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- ONNX / torch.export
def _eager(generator, x):
    with torch.no_grad():
        return PaddedGenerator(generator, 4)(x)


@pytest.mark.slow
def test_onnx_export_matches_eager_on_odd_sizes(trained_ckpt, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    ckpt, module = trained_ckpt
    written = export_checkpoint(ckpt, tmp_path / "o", roles=("g_ab",), onnx=True, log=lambda _m: None)
    assert tmp_path / "o" / "g_ab.onnx" in written
    session = ort.InferenceSession(str(tmp_path / "o" / "g_ab.onnx"), providers=["CPUExecutionProvider"])
    for shape in ((1, 3, 19, 23), (3, 3, 33, 17), (2, 3, 40, 64)):
        x = torch.rand(shape) * 2 - 1
        y = session.run(None, {"image": x.numpy()})[0]
        assert y.shape == shape
        assert abs(torch.from_numpy(y) - _eager(module.g_ab, x)).max() < 1e-4


@pytest.mark.slow
def test_torch_export_matches_eager_on_odd_sizes_and_fails_loudly(trained_ckpt, tmp_path):
    from stylegan_transfer.inference import onnx_pt2 as exporters

    ckpt, module = trained_ckpt
    export_checkpoint(ckpt, tmp_path / "o", roles=("g_ab",), pt2=True, log=lambda _m: None)
    program = torch.export.load(str(tmp_path / "o" / "g_ab.pt2")).module()
    for shape in ((1, 3, 19, 23), (3, 3, 33, 17), (2, 3, 40, 64)):
        x = torch.rand(shape) * 2 - 1
        y = program(x)
        assert y.shape == shape
        assert (y - _eager(module.g_ab, x)).abs().max() < 1e-4
    # A tolerance that cannot be met: the export fails and leaves no file behind.
    with pytest.raises(exporters.ParityError, match="differs"):
        exporters.export_pt2(module.g_ab, tmp_path / "strict.pt2", atol=-1.0, check_sizes=((1, 17, 19),))
    assert not list(tmp_path.glob("strict*"))


def test_export_of_a_checkpoint_written_before_the_reorganisation_is_byte_identical(tmp_path):
    """tests/data/tiny_cyclegan.ckpt was written by the flat-package code (trained 2 steps, optimiser state
    dropped); the digests are of the tensors its `stylegan-export` wrote then. The same checkpoint must
    export to the same bytes, whatever moved around the generator code."""
    data = Path(__file__).parent / "data"
    expected = json.loads((data / "tiny_cyclegan_export_digests.json").read_text())
    export_checkpoint(data / "tiny_cyclegan.ckpt", tmp_path, log=lambda _msg: None)
    for role, digests in expected.items():
        tensors = load_file(str(tmp_path / f"{role}.safetensors"))
        found = {
            k: f"{hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest()}|{v.dtype}|{list(v.shape)}"
            for k, v in tensors.items()
        }
        assert found == digests, role


@pytest.mark.parametrize("arch", ["resnet", "johnson"])
def test_resize_upsampling_exports_to_onnx_and_pt2(arch, tmp_path):
    # `ResizeConv2d` (the default ResNet's and the Johnson network's up-sampler) traces with dynamic sizes; both
    # exporters check parity with eager on odd sizes themselves and raise when it is not met.
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from stylegan_transfer.inference import onnx_pt2 as exporters

    kwargs = {"channels": 4, "n_blocks": 1} | ({"upsample": "resize"} if arch == "resnet" else {})
    generator = build_generator(arch, **kwargs).eval()
    assert exporters.export_onnx(generator, tmp_path / "g.onnx") < 1e-4
    assert exporters.export_pt2(generator, tmp_path / "g.pt2") < 1e-4

"""Issue 14, item 16: stylegan-translate tiles huge images by default (bounded memory), `--tile 0` does not.

Automatic tiling must give exactly the documented `--tile 512` output; the budget decides when it applies.
"""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import REPO, TINY_G_KWARGS, tiny_generator_file
from stylegan_transfer.inference import tiling
from stylegan_transfer.networks import build_generator

translate = importlib.import_module("stylegan_transfer.inference.translate")  # the package exports a function

TINY = TINY_G_KWARGS  # the tiny ResNet generator's constructor arguments


@pytest.fixture
def export(tmp_path: Path) -> Path:
    return tiny_generator_file(tmp_path / "g.safetensors")


def smooth_photo(path: Path, width: int, height: int) -> Path:
    yy, xx = np.mgrid[0:height, 0:width]
    array = np.stack([xx * 255 // width, yy * 255 // height, (xx + 2 * yy) % 256], -1).astype(np.uint8)
    Image.fromarray(array).save(path)
    return path


def test_default_generator_on_a_6000x4000_photo_is_tiled_on_the_cpu():
    with torch.device("meta"):
        generator = build_generator("resnet")  # the paper's 64 channels
    assert tiling.plan_tiles(generator, (1, 3, 4000, 6000), torch.device("cpu")) == tiling.TileOptions()
    assert not tiling.plan_tiles(generator, (1, 3, 256, 256), torch.device("cpu")).tiled
    # 4 photos of 1000x700 in one batch would not fit untiled; one would
    assert tiling.plan_tiles(generator, (4, 3, 700, 1000), torch.device("cpu")).tiled
    assert not tiling.plan_tiles(generator, (1, 3, 700, 1000), torch.device("cpu")).tiled


def test_on_a_gpu_the_budget_is_half_its_free_memory(monkeypatch):
    with torch.device("meta"):
        generator = build_generator("resnet")
    per_image = 4000 * 6000 * tiling.bytes_per_pixel(generator)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * per_image, 80 << 30))
    assert not tiling.plan_tiles(generator, (1, 3, 4000, 6000), torch.device("cuda")).tiled
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (per_image, 80 << 30))
    assert tiling.plan_tiles(generator, (1, 3, 4000, 6000), torch.device("cuda")).tiled


def translate_argv(export: Path, photo: Path, out: Path) -> list[str]:
    """stylegan-translate's arguments: the generator file `export` on `photo`, into the folder `out`, quietly."""
    return ["--checkpoint", str(export), "--input", str(photo), "--output", str(out), "--quiet"]


def _run(export: Path, photo: Path, out: Path, *extra: str) -> bytes:
    assert translate.main([*translate_argv(export, photo, out), "--device", "cpu", *extra]) == 0
    return (out / f"{photo.stem}.png").read_bytes()


def test_automatic_tiling_equals_the_documented_tile_512_and_tile_0_turns_it_off(
    export, tmp_path, monkeypatch
):
    photo = smooth_photo(tmp_path / "photo.png", 700, 530)
    monkeypatch.setattr(tiling, "CPU_UNTILED_BUDGET", 1 << 20)  # this photo then counts as huge
    automatic = _run(export, photo, tmp_path / "auto")
    assert automatic == _run(export, photo, tmp_path / "t512", "--tile", "512")
    untiled = _run(export, photo, tmp_path / "t0", "--tile", "0")
    assert untiled != automatic
    monkeypatch.setattr(tiling, "CPU_UNTILED_BUDGET", 1 << 40)  # ample memory: untiled, as before
    assert _run(export, photo, tmp_path / "big_budget") == untiled


def test_help_documents_automatic_tiling(capsys):
    with pytest.raises(SystemExit):
        translate.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "automatically, as --tile 512" in text and "0: never tile" in text


PEAK = """
import sys
from stylegan_transfer.inference import tiling
tiling.CPU_UNTILED_BUDGET = int(sys.argv[1])
translate = __import__("importlib").import_module("stylegan_transfer.inference.translate")
code = translate.main(sys.argv[2:])
# VmHWM: this process's peak resident memory (ru_maxrss would include the parent's, kept across exec)
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")))  # KiB
sys.exit(code)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc (Linux)")
def test_automatic_tiling_bounds_the_peak_memory(export, tmp_path):
    """A 3000x2000 photo with a budget of 64 MiB: the automatic run's peak stays far below the untiled one."""
    photo = smooth_photo(tmp_path / "photo.png", 3000, 2000)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}

    def peak_mib(*extra: str) -> float:
        args = translate_argv(export, photo, tmp_path / "o")
        result = subprocess.run(
            [sys.executable, "-c", PEAK, str(64 << 20), *args, "--overwrite", "--device", "cpu", *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        return int(result.stdout.split()[-1]) / 1024

    untiled, automatic = peak_mib("--tile", "0"), peak_mib()
    assert automatic < untiled - 150, (automatic, untiled)  # untiled activations of 6 MP: about 400 MiB


# ----------------------------------------------------------------------------- one rule (issue 24), strips (issue 25.5)
def test_one_tiling_rule_gives_each_request_one_meaning():
    with torch.device("meta"):
        generator = build_generator("resnet")
    cpu, huge, small = torch.device("cpu"), (1, 3, 4000, 6000), (1, 3, 300, 400)
    assert tiling.plan_tiles(generator, huge, cpu) == tiling.plan_tiles(
        generator, huge, cpu, tiling.AutoTiling()
    )
    assert tiling.plan_tiles(generator, huge, cpu, None) == tiling.TileOptions()  # None: automatic
    assert tiling.plan_tiles(generator, huge, cpu, 0) == tiling.NO_TILES  # 0: never
    assert tiling.plan_tiles(generator, huge, cpu, 256) == tiling.TileOptions(tile=256)
    assert tiling.plan_tiles(generator, small, cpu, 512) == tiling.NO_TILES  # fits in one tile: one pass
    # a caller's own limit (the web app's) is an argument of the same rule
    limit = tiling.AutoTiling(tiling.TileOptions(tile=128), above=350)
    assert tiling.plan_tiles(generator, small, cpu, limit) == tiling.TileOptions(tile=128)
    assert not tiling.plan_tiles(generator, (1, 3, 300, 340), cpu, limit).tiled
    assert tiling.plan_tiles(
        generator, huge, cpu, tiling.AutoTiling(above=10**6)
    ).tiled  # memory still decides
    for request in (None, 0, 256, tiling.TileOptions(tile=300, overlap=32), limit):
        plan = tiling.plan_tiles(generator, huge, cpu, request)
        assert tiling.plan_tiles(generator, huge, cpu, plan) == plan  # a plan passed back plans itself
    with pytest.raises(ValueError, match="0 \\(never tile\\)"):
        tiling.plan_tiles(generator, huge, cpu, -1)
    with pytest.raises(TypeError):
        tiling.plan_tiles(generator, huge, cpu, True)


@pytest.mark.parametrize("height, width", [(20, 3000), (9, 1500), (2, 900), (1500, 40)])
def test_extreme_aspect_ratios_translate_tiled_and_untiled(height, width):
    torch.manual_seed(0)
    generator = build_generator("resnet", **TINY).eval()
    x = torch.rand(1, 3, height, width) * 2 - 1
    from stylegan_transfer.inference.translation import translate_tensor

    untiled = translate_tensor(generator, x, tile=0, device="cpu")
    for tile in (256, tiling.TileOptions(tile=128, overlap=32, stats_size=200)):
        tiled = translate_tensor(generator, x, tile=tile, device="cpu")
        assert tiled.shape == x.shape and bool(torch.isfinite(tiled).all())
    # statistics from the whole strip: the tiles agree with one untiled pass
    exact = translate_tensor(
        generator, x, tile=tiling.TileOptions(tile=256, overlap=64, stats_size=4096), device="cpu"
    )
    assert (exact - untiled).abs().mean() < 0.02


def test_a_strip_through_stylegan_translate_keeps_its_size(export, tmp_path):
    strip = smooth_photo(tmp_path / "strip.png", 3000, 12)
    result = Image.open(io.BytesIO(_run(export, strip, tmp_path / "out", "--tile", "256")))
    assert result.size == (3000, 12)

"""Translation API and CLI: sizes, folders, globs, skipping, errors, EXIF, side-by-side, tiling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import TINY_G_KWARGS
from stylegan_transfer.inference.generator_file import load_generator, save_generator
from stylegan_transfer.inference.tiling import (
    TileOptions,
    fixed_instance_norm_stats,
    record_instance_norm_stats,
)
from stylegan_transfer.inference.translate import main
from stylegan_transfer.inference.translation import translate, translate_tensor
from stylegan_transfer.networks import build_generator, init_weights


def smooth_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photo-like image: smooth random colour field plus some texture."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((3, height // 16 + 2, width // 16 + 2)).astype(np.float32)
    field = torch.nn.functional.interpolate(
        torch.from_numpy(coarse)[None], size=(height, width), mode="bicubic", align_corners=False
    )[0]  # (3, H, W)
    field = field + 0.1 * torch.from_numpy(rng.standard_normal((3, height, width)).astype(np.float32))
    array = (field.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array, mode="RGB")


@pytest.fixture
def export_path(tmp_path) -> Path:
    torch.manual_seed(0)
    generator = init_weights(build_generator("resnet", **TINY_G_KWARGS))
    return save_generator(
        generator, tmp_path / "g.safetensors", arch="resnet", kwargs={"channels": 4, "n_blocks": 1}
    )


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    smooth_image(37, 29, seed=1).save(folder / "a.jpg")
    smooth_image(24, 20, seed=2).save(folder / "b.png")
    smooth_image(24, 20, seed=3).save(folder / "c.png")
    smooth_image(30, 18, seed=4).save(folder / "sub" / "d.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def cli(export_path: Path, *args: str) -> int:
    return main(["--checkpoint", str(export_path), "--device", "cpu", "--quiet", *args])


def test_api_keeps_odd_sizes_and_batches_match_single_images(export_path):
    generator = load_generator(export_path)
    image = smooth_image(37, 29)
    result = translate(generator, image, device="cpu")
    assert result.size == (37, 29) and result.mode == "RGB"
    x = torch.rand(3, 3, 21, 26) * 2 - 1  # (B, C, H, W)
    batch = translate_tensor(generator, x, device="cpu")
    single = torch.cat([translate_tensor(generator, x[i : i + 1], device="cpu") for i in range(3)])
    assert batch.shape == x.shape
    assert torch.allclose(batch, single, atol=1e-6)


def test_cli_folders_recursive_globs_and_sizes(export_path, photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(export_path, "--input", str(photos), "--output", str(out), "--batch-size", "2") == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]
    assert Image.open(out / "a.png").size == (37, 29)
    assert cli(export_path, "--input", str(photos), "--output", str(out), "--recursive") == 0
    assert Image.open(out / "sub" / "d.png").size == (30, 18)
    glob_out = tmp_path / "glob"
    assert cli(export_path, "--input", str(photos / "**" / "*.png"), "--output", str(glob_out)) == 0
    assert sorted(p.name for p in glob_out.iterdir()) == ["b.png", "c.png", "d.png"]
    jpg_out = tmp_path / "jpg"
    assert (
        cli(export_path, "--input", str(photos / "a.jpg"), "--output", str(jpg_out), "--format", "jpg") == 0
    )
    assert Image.open(jpg_out / "a.jpg").format == "JPEG"


def test_cli_skips_existing_unless_overwrite(export_path, photos, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    Image.new("RGB", (5, 5), (1, 2, 3)).save(out / "b.png")
    assert cli(export_path, "--input", str(photos / "b.png"), "--output", str(out)) == 0
    assert Image.open(out / "b.png").size == (5, 5)
    assert "1 skipped" in capsys.readouterr().err
    assert cli(export_path, "--input", str(photos / "b.png"), "--output", str(out), "--overwrite") == 0
    assert Image.open(out / "b.png").size == (24, 20)


def test_cli_refuses_two_inputs_that_would_share_an_output(export_path, photos, tmp_path, capsys):
    smooth_image(24, 20, seed=9).save(photos / "sub" / "b.png")  # same name as photos/b.png
    out = tmp_path / "out"
    code = cli(
        export_path, "--input", str(photos / "b.png"), str(photos / "sub" / "b.png"), "--output", str(out)
    )
    assert code == 2 and not out.exists()  # nothing written, nothing overwritten
    assert "would both be written to" in capsys.readouterr().err
    # the same file named twice (a file and a glob matching it) is simply translated once
    assert cli(export_path, "--input", str(photos / "b.png"), str(photos / "b.*"), "--output", str(out)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["b.png"]
    assert "1 written" in capsys.readouterr().err


def test_cli_reports_bad_files_and_continues(export_path, photos, tmp_path, capsys):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    data = (photos / "a.jpg").read_bytes()
    (photos / "truncated.jpg").write_bytes(data[: len(data) // 3])
    out = tmp_path / "out"
    code = cli(export_path, "--input", str(photos), "--output", str(out), "--batch-size", "3")
    err = capsys.readouterr().err
    assert code == 1
    assert "broken.jpg" in err and "truncated.jpg" in err and "2 failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]


def test_cli_bad_arguments_exit_2_with_a_message(export_path, tmp_path, capsys):
    assert cli(export_path, "--input", str(tmp_path / "nope.jpg"), "--output", str(tmp_path / "o")) == 2
    assert "nope.jpg does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(export_path, "--input", str(empty), "--output", str(tmp_path / "o")) == 2
    assert "--recursive" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"junk")
    assert main(["--checkpoint", str(bad), "--input", str(empty), "--output", str(tmp_path / "o")]) == 2
    assert "bad.safetensors" in capsys.readouterr().err


def test_cli_exif_orientation_and_side_by_side(export_path, tmp_path):
    image = smooth_image(40, 24)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    image.save(tmp_path / "rotated.jpg", exif=exif)
    out = tmp_path / "out"
    assert (
        cli(export_path, "--input", str(tmp_path / "rotated.jpg"), "--output", str(out), "--side-by-side")
        == 0
    )
    assert Image.open(out / "rotated.png").size == (24, 40)
    assert Image.open(out / "rotated_side_by_side.png").size == (48, 40)


# ----------------------------------------------------------------------------- tiling
def test_fixed_statistics_reproduce_the_untiled_forward_and_are_restored():
    torch.manual_seed(0)
    generator = init_weights(build_generator("resnet", **TINY_G_KWARGS)).eval()
    x = torch.rand(1, 3, 32, 48) * 2 - 1  # (B, C, H, W)
    with torch.no_grad():
        expected = generator(x)
        stats = record_instance_norm_stats(generator, x)
        with fixed_instance_norm_stats(generator, stats):
            assert torch.allclose(generator(x), expected, atol=1e-5)
            # Fixed statistics: a crop is normalised like the whole image, not by its own statistics.
            crop = generator(x[:, :, :16, :16])
        assert not torch.allclose(generator(x[:, :, :16, :16]), crop, atol=1e-3)
        assert torch.equal(generator(x), expected)  # original forward back


def test_consistent_tiling_matches_untiled_and_beats_naive_tiling():
    torch.manual_seed(0)
    generator = init_weights(build_generator("resnet", channels=8, n_blocks=2)).eval()
    image = torch.from_numpy(np.asarray(smooth_image(301, 203), dtype=np.float32)).permute(2, 0, 1)[None]
    image = image / 127.5 - 1  # (1, 3, 203, 301)
    full = translate_tensor(generator, image, device="cpu")
    consistent = translate_tensor(generator, image, tile=TileOptions(tile=128, overlap=64), device="cpu")
    naive = translate_tensor(
        generator, image, tile=TileOptions(tile=128, overlap=64, consistent=False), device="cpu"
    )
    assert consistent.shape == naive.shape == full.shape
    consistent_err = (consistent - full).abs()
    naive_err = (naive - full).abs()
    assert consistent_err.max() < 0.02  # documented tolerance: < 2.5/255 on this toy network
    assert naive_err.mean() > 5 * consistent_err.mean()

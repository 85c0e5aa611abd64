"""Issue 14, item 12: tiny images translate, x.jpg and x.png both get an output, unreadable folders and
symbolic link loops are named."""

from __future__ import annotations

import importlib
import io
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import TINY_G_KWARGS, tiny_generator_file, write_images
from helpers.training import refusal_lines, train_py
from stylegan_transfer import images
from stylegan_transfer.datasets import DataError
from stylegan_transfer.images import FolderError, list_images
from stylegan_transfer.training.data import UnpairedDataModule

translate = importlib.import_module("stylegan_transfer.inference.translate")  # the package exports a function

TINY = TINY_G_KWARGS  # the tiny ResNet generator's constructor arguments


@pytest.fixture
def export(tmp_path: Path) -> Path:
    return tiny_generator_file(tmp_path / "g.safetensors")


def cli(export: Path, *args: str) -> int:
    return translate.main(["--checkpoint", str(export), "--quiet", "--device", "cpu", *args])


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (7, 1), (3, 2), (5, 5)])
def test_tiny_images_translate_to_their_own_size(export, tmp_path, size, capsys):
    photo = tmp_path / "in" / "tiny.png"
    photo.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
        photo
    )
    assert cli(export, "--input", str(photo), "--output", str(tmp_path / "out")) == 0, capsys.readouterr().err
    assert Image.open(tmp_path / "out" / "tiny.png").size == size


def test_tiny_padding_matches_a_translation_of_the_padded_image(export):
    from stylegan_transfer.inference.generator_file import load_generator

    generator = load_generator(export)
    x = torch.rand(1, 3, 3, 2) * 2 - 1
    padded = torch.nn.functional.pad(x, (0, 6, 0, 5), mode="replicate")  # (1, 3, 8, 8)
    expected = translate.translate_tensor(generator, padded, device="cpu")[:, :, :3, :2]
    assert torch.equal(translate.translate_tensor(generator, x, device="cpu"), expected)


def test_x_jpg_and_x_png_both_get_an_output(export, tmp_path, capsys):
    folder = tmp_path / "in"
    write_images(folder, 1)  # img_000.jpg
    Image.new("RGB", (20, 16), (10, 200, 30)).save(folder / "img_000.png")
    out = tmp_path / "out"
    assert cli(export, "--input", str(folder), "--output", str(out)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["img_000_jpg.png", "img_000_png.png"]
    assert Image.open(out / "img_000_png.png").size == (20, 16)
    assert Image.open(out / "img_000_jpg.png").size == (40, 36)
    assert "keep the extension" in capsys.readouterr().err
    # the same names are planned again: the second run skips both
    assert cli(export, "--input", str(folder), "--output", str(out)) == 0
    assert "2 skipped" in capsys.readouterr().err


@pytest.fixture
def unreadable(monkeypatch):
    """Make a folder unreadable (chmod has no effect for root, which runs this container's tests)."""
    blocked: list[Path] = []
    real_scandir = os.scandir

    def scandir(path):
        if Path(path) in blocked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(images.os, "scandir", scandir)
    return blocked


def test_an_unreadable_folder_is_named_as_unreadable(cyclegan_dir, unreadable, tmp_path, capsys, export):
    unreadable.append(cyclegan_dir / "trainB")
    with pytest.raises(FolderError, match="Permission denied"):
        list_images(cyclegan_dir / "trainB")
    dm = UnpairedDataModule(root=str(cyclegan_dir), num_workers=0, load_size=36, crop_size=32)
    with pytest.raises(DataError) as err:
        dm.check()
    message = str(err.value)
    assert "cannot read folder" in message and str(cyclegan_dir / "trainB") in message
    assert "contains no images" not in message
    assert cli(export, "--input", str(cyclegan_dir / "trainB"), "--output", str(tmp_path / "o")) == 2
    assert "cannot read folder" in capsys.readouterr().err


def test_unreadable_sub_folders_are_skipped_with_a_warning(cyclegan_dir, unreadable, caplog):
    write_images(cyclegan_dir / "trainA" / "more", 2)
    unreadable.append(cyclegan_dir / "trainA" / "more")
    with caplog.at_level(logging.WARNING, logger="stylegan_transfer.images"):
        files = list_images(cyclegan_dir / "trainA")
    assert len(files) == 5
    assert "skipping folder" in caplog.text and "more" in caplog.text


def test_symbolic_link_loops_are_named_and_listed_once(tmp_path, caplog):
    root = tmp_path / "photos"
    write_images(root / "sub", 2)
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    (root / "dangling.jpg").symlink_to(tmp_path / "missing.jpg")
    with caplog.at_level(logging.WARNING, logger="stylegan_transfer.images"):
        files = list_images(root)
    assert files == [root / "sub" / "img_000.jpg", root / "sub" / "img_001.jpg"]
    assert "symbolic link loop" in caplog.text and str(root / "sub" / "loop") in caplog.text
    assert "broken symbolic link" in caplog.text and "dangling.jpg" in caplog.text


# ----------------------------------------------------------------------------- item 9: decode failures, workers
def decode_failing_jpeg(path: Path, seed: int) -> Path:
    """A JPEG whose header is fine (it passes the setup scan) and whose pixel data is cut off."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
        buffer, "JPEG"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def logged(result) -> list[str]:
    """Log lines of a train.py run (Hydra logs to stdout, errors go to stderr)."""
    return (result.stdout + result.stderr).splitlines()


@pytest.mark.slow
def test_a_domain_whose_files_all_fail_to_decode_is_one_refusal_with_workers(tmp_path):
    good = tmp_path / "A"
    write_images(good, 4)
    bad = [decode_failing_jpeg(tmp_path / "B" / f"b{i}.jpg", i) for i in range(3)]
    result = train_py(
        f"data.dir_a={good}", f"data.dir_b={tmp_path / 'B'}", "style=custom", "data.num_workers=2",
        f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    errors = refusal_lines(result)
    assert (
        len(errors) == 1 and str(tmp_path / "B") in errors[0]
    )  # (KID's fixed subset or training refuses it)
    assert "could be decoded" in errors[0] or "readable images" in errors[0]
    for path in bad:  # named once per run, whichever worker met it first
        assert sum(f"skipping {path}:" in line for line in logged(result)) == 1


@pytest.mark.slow
def test_each_bad_file_is_named_once_per_run_with_workers_and_validation(tmp_path):
    write_images(tmp_path / "A", 4)
    write_images(tmp_path / "B", 3, seed=5)
    bad = decode_failing_jpeg(tmp_path / "A" / "img_000b.jpg", 9)  # in training and in the validation pairs
    result = train_py(
        f"data.dir_a={tmp_path / 'A'}", f"data.dir_b={tmp_path / 'B'}", "style=custom", "data.num_workers=2",
        "data.val_size=4", "data.max_dataset_size=null", f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert sum(f"skipping {bad}:" in line for line in logged(result)) == 1


def test_a_broken_link_is_named_once_however_often_its_folder_is_listed(tmp_path, caplog):
    folder = tmp_path / "trainA"
    good = sorted(write_images(folder, 2, seed=1))
    (folder / "broken.png").symlink_to(tmp_path / "missing.png")
    with caplog.at_level(logging.WARNING, logger="stylegan_transfer.images"):
        for _ in range(3):  # a run lists its folders several times (check, data module, evaluation files)
            assert list_images(folder) == good
    assert caplog.text.count(str(folder / "broken.png")) == 1, caplog.text

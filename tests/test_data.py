"""Robust loading of images from the wild, preprocessing modes, and the deterministic sampler."""

from __future__ import annotations

import io
import logging
import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import write_images
from stylegan_transfer.datasets import DataError
from stylegan_transfer.images import list_images, load_rgb, probe_image, scan_images, to_image
from stylegan_transfer.training.data import UnpairedDataModule
from stylegan_transfer.training.unpaired import Augment, PairedEvalDataset, UnpairedDataset, UnpairedSampler

# ---------------------------------------------------------------- generated bad and unusual files


def _noise(w: int = 50, h: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_bomb_png(path: Path, side: int = 100_000) -> Path:
    """A tiny PNG whose header claims side x side pixels (10 gigapixels): a decompression bomb."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\0" * 1000)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )
    return path


def write_truncated(path: Path, fmt: str) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(_noise()).save(buffer, fmt)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def write_corrupt_png(path: Path) -> Path:
    """Valid header, damaged compressed pixel data."""
    buffer = io.BytesIO()
    Image.fromarray(_noise()).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"IDAT") + 20
    data[start : start + 40] = bytes(b ^ 0xFF for b in data[start : start + 40])
    path.write_bytes(bytes(data))
    return path


def write_corrupt_jpeg(path: Path) -> Path:
    """A JPEG whose header was overwritten."""
    buffer = io.BytesIO()
    Image.fromarray(_noise()).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    data[2:40] = b"\0" * 38
    path.write_bytes(bytes(data))
    return path


# ---------------------------------------------------------------- load_rgb: every mode becomes 8-bit RGB


def test_cmyk_jpeg_loads_as_rgb(tmp_path):
    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # pure red in CMYK
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    image = load_rgb(tmp_path / "cmyk.jpg")
    assert image.mode == "RGB" and image.size == (20, 10)
    r, g, b = np.asarray(image).reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 16384, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    pixels = np.asarray(load_rgb(tmp_path / "deep.png"))
    assert pixels.shape == (1, 4, 3)
    np.testing.assert_allclose(pixels[0, :, 0], [0, 64, 128, 255], atol=1)
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_palette_with_transparency_and_rgba_composite_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:, :4] = (0, 0, 255, 255)  # opaque blue left half, transparent right half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 255, 0, 0, 0, 0] + [0] * 762)
    palette.paste(1, (4, 0, 8, 8))
    palette.save(tmp_path / "palette.png", transparency=1)
    for name, left in (("rgba.png", (0, 0, 255)), ("palette.png", (0, 255, 0))):
        pixels = np.asarray(load_rgb(tmp_path / name))
        assert pixels.shape == (8, 8, 3), name
        assert tuple(pixels[0, 0]) == left, name
        assert tuple(pixels[0, 7]) == (255, 255, 255), name  # transparent → white, not black


def test_grayscale_becomes_three_equal_channels(tmp_path):
    Image.fromarray(np.full((6, 9), 77, dtype=np.uint8), "L").save(tmp_path / "gray.png")
    Image.new("1", (9, 6), 1).save(tmp_path / "bw.png")
    gray = np.asarray(load_rgb(tmp_path / "gray.png"))
    assert gray.shape == (6, 9, 3) and (gray == 77).all()
    assert (np.asarray(load_rgb(tmp_path / "bw.png")) == 255).all()


def test_exif_rotation_is_applied(tmp_path):
    array = np.zeros((20, 40, 3), dtype=np.uint8)  # landscape, red marker in the top-left corner
    array[:5, :5] = (255, 0, 0)
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    loaded = load_rgb(tmp_path / "rotated.jpg")
    assert loaded.size == (20, 40)  # portrait after rotation
    pixels = np.asarray(loaded).astype(int)
    assert pixels[:5, -5:, 0].mean() > 200  # top-left went to the top-right
    assert pixels[:5, :5, 0].mean() < 50


def test_large_jpeg_draft_decodes_smaller_but_close(tmp_path):
    x = np.linspace(0, 255, 800)
    smooth = np.stack([np.add.outer(x[:600], x) / 2, np.tile(x, (600, 1)), np.full((600, 800), 90)], -1)
    Image.fromarray(smooth.astype(np.uint8)).save(tmp_path / "big.jpg", quality=95)
    full = load_rgb(tmp_path / "big.jpg")
    draft = load_rgb(tmp_path / "big.jpg", draft_size=100)
    assert full.size == (800, 600)
    assert min(draft.size) >= 100 and draft.size[0] < 800
    a = np.asarray(full.resize((128, 128), Image.BICUBIC), dtype=float)
    b = np.asarray(draft.resize((128, 128), Image.BICUBIC), dtype=float)
    assert np.abs(a - b).mean() < 3.0


# ---------------------------------------------------------------- bad files: refused up front or skipped later


def test_probe_flags_every_unusable_file_without_decoding(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not an image\n")
    write_corrupt_jpeg(tmp_path / "corrupt.jpg")
    write_bomb_png(tmp_path / "bomb.png")
    Image.fromarray(_noise()).save(tmp_path / "good.jpg")
    assert probe_image(tmp_path / "good.jpg") is None
    assert "empty" in probe_image(tmp_path / "empty.jpg")
    assert "not an image" in probe_image(tmp_path / "text.jpg")
    assert "not an image" in probe_image(tmp_path / "corrupt.jpg")
    assert "decompression bomb" in probe_image(tmp_path / "bomb.png")
    assert "decompression bomb" in probe_image(tmp_path / "good.jpg", max_pixels=100)
    with pytest.raises(Image.DecompressionBombError):
        load_rgb(tmp_path / "bomb.png")
    with pytest.raises(Image.DecompressionBombError):
        load_rgb(tmp_path / "good.jpg", max_pixels=100)


def test_scan_warns_once_per_file_with_a_summary_and_ignores_non_images(tmp_path, caplog):
    folder = tmp_path / "A"
    write_images(folder, 3)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("text named .jpg")
    write_bomb_png(folder / "bomb.png")
    for name in ("readme.txt", "labels.csv", ".DS_Store", "Thumbs.db", "model.pt"):
        (folder / name).write_text("not an image")
    (folder / "sub.jpg").mkdir()  # a folder named like an image
    with caplog.at_level(logging.WARNING):
        usable = scan_images(folder, label="A")
    assert [p.name for p in usable] == ["img_000.jpg", "img_001.jpg", "img_002.jpg"]
    messages = [r.getMessage() for r in caplog.records]
    for bad in ("empty.jpg", "notes.jpg", "bomb.png"):
        assert sum(bad in m for m in messages) == 1, bad
    assert any("skipped 3 of 6" in m for m in messages)
    assert not any(
        name in m for m in messages for name in ("readme", "labels", "DS_Store", "Thumbs", "model.pt")
    )


@pytest.mark.parametrize("writer", ["truncated_jpeg", "truncated_png", "corrupt_png"])
def test_file_failing_at_decode_is_skipped_once_and_the_epoch_completes(tmp_path, caplog, writer):
    folder_a, folder_b = tmp_path / "A", tmp_path / "B"
    write_images(folder_a, 3, seed=1)
    write_images(folder_b, 2, seed=2)
    bad = {
        "truncated_jpeg": lambda: write_truncated(folder_a / "bad.jpg", "JPEG"),
        "truncated_png": lambda: write_truncated(folder_a / "bad.png", "PNG"),
        "corrupt_png": lambda: write_corrupt_png(folder_a / "bad.png"),
    }[writer]()
    assert probe_image(bad) is None  # the header is fine: only decoding finds the damage
    files_a = scan_images(folder_a)
    assert bad in files_a
    dataset = UnpairedDataset(
        files_a, list_images(folder_b), augment=Augment(load_size=36, crop_size=32), seed=0
    )
    with caplog.at_level(logging.WARNING):
        samples = [dataset[key] for key in range(3 * len(dataset))]  # three epochs
    assert all(s["a"].shape == (3, 32, 32) and torch.isfinite(s["a"]).all() for s in samples)
    assert sum(bad.name in r.getMessage() for r in caplog.records) == 1


def test_unreadable_file_is_skipped(tmp_path, caplog):
    # root reads anything: then check as an unprivileged user, in a folder that user can enter
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    folder = Path(tempfile.mkdtemp()) if as_root else tmp_path / "A"
    try:
        os.chmod(folder, 0o755)
        write_images(folder, 2)
        for path in folder.iterdir():
            os.chmod(path, 0o644)
        locked = folder / "locked.jpg"
        shutil.copy(folder / "img_000.jpg", locked)
        os.chmod(locked, 0o000)
        if as_root:
            os.seteuid(65534)
        try:
            with caplog.at_level(logging.WARNING):
                usable = scan_images(folder)
            with pytest.raises(PermissionError):
                load_rgb(locked)
        finally:
            if as_root:
                os.seteuid(0)
        assert locked not in usable and len(usable) == 2
        assert any("locked.jpg" in r.getMessage() and "permission" in r.getMessage() for r in caplog.records)
    finally:
        if as_root:
            shutil.rmtree(folder)


def test_missing_empty_and_all_bad_domains_refuse_to_start(tmp_path):
    write_images(tmp_path / "ok", 2)
    (tmp_path / "empty").mkdir()
    (tmp_path / "only_text").mkdir()
    (tmp_path / "only_text" / "readme.txt").write_text("hi")
    (tmp_path / "all_bad").mkdir()
    (tmp_path / "all_bad" / "a.jpg").write_bytes(b"")
    (tmp_path / "all_bad" / "b.png").write_text("nope")
    cases = {"missing": "does not exist", "empty": "contains no images", "only_text": "contains no images"}
    cases["all_bad"] = "no usable image"
    for name, message in cases.items():
        dm = UnpairedDataModule(dir_a=str(tmp_path / "ok"), dir_b=str(tmp_path / name), num_workers=0)
        with pytest.raises(DataError, match=message) as err:
            dm.check()
        assert str(tmp_path / name) in str(err.value)


def test_training_loader_survives_bad_files_with_workers(tmp_path):
    folder_a, folder_b = tmp_path / "A", tmp_path / "B"
    write_images(folder_a, 4, seed=1)
    write_images(folder_b, 3, seed=2)
    write_truncated(folder_a / "trunc.jpg", "JPEG")
    write_corrupt_png(folder_b / "corrupt.png")
    (folder_b / "zero.jpg").write_bytes(b"")
    dm = UnpairedDataModule(
        dir_a=str(folder_a), dir_b=str(folder_b), load_size=36, crop_size=32, num_workers=2, batch_size=2
    )
    dm.check()
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert sum(b["a"].shape[0] for b in batches) == 5
    assert all(b["b"].shape[1:] == (3, 32, 32) for b in batches)
    val = next(iter(dm.val_dataloader()))
    assert torch.isfinite(val["a"]).all() and torch.isfinite(val["b"]).all()


def test_eval_dataset_replaces_a_file_that_fails_to_decode(tmp_path):
    good = write_images(tmp_path, 2)
    bad = write_truncated(tmp_path / "a_bad.jpg", "JPEG")
    dataset = PairedEvalDataset([bad, *good], good, size=16, count=2)
    sample = dataset[0]
    assert sample["a"].shape == (3, 16, 16)
    assert torch.equal(sample["a"], dataset[1]["a"])  # the bad first file was replaced by the next good one


# ---------------------------------------------------------------- preprocessing modes


def _augment(image: Image.Image, seed: int = 0, **kwargs) -> Image.Image:
    return to_image(Augment(**kwargs)(image, np.random.default_rng(seed)))


@pytest.mark.parametrize(
    ("preprocess", "size", "expected"),
    [
        ("resize_and_crop", (50, 40), (32, 32)),
        ("crop", (50, 40), (32, 32)),
        ("crop", (10, 12), (32, 32)),  # smaller than the crop: enlarged first
        ("resize_and_crop", (7, 5), (32, 32)),
        ("scale_width", (50, 40), (36, 32)),  # width → load_size, height ≥ crop_size, multiple of 4
        ("scale_width", (50, 90), (36, 68)),  # 90·36/50 = 64.8 → 65 → padded to 68
        ("scale_width_and_crop", (50, 40), (32, 32)),
        ("scale_width_and_crop", (9, 6), (32, 32)),
        ("none", (50, 42), (52, 44)),  # kept, padded to multiples of 4
        ("none", (48, 40), (48, 40)),
    ],
)
def test_preprocess_output_sizes(preprocess, size, expected):
    image = Image.fromarray(_noise(*size))
    out = _augment(image, preprocess=preprocess, load_size=36, crop_size=32, flip=False)
    assert out.size == expected and out.mode == "RGB"


def test_none_keeps_pixels_and_pads_by_repeating_the_edge():
    # The package pads with one border mode everywhere (networks.PAD_MODE, recorded in exports).
    array = _noise(50, 42)
    out = np.asarray(_augment(Image.fromarray(array), preprocess="none", flip=False))
    assert out.shape == (44, 52, 3)
    np.testing.assert_array_equal(out[:42, :50], array)
    np.testing.assert_array_equal(out[42:, :50], np.repeat(array[-1:], 2, axis=0))  # last row repeated
    np.testing.assert_array_equal(out[:42, 50:], np.repeat(array[:, -1:], 2, axis=1))


def test_flip_on_and_off():
    image = Image.fromarray(_noise(32, 32))
    kwargs = {"preprocess": "crop", "load_size": 32, "crop_size": 32}
    plain = np.asarray(image)
    for seed in range(10):
        assert np.array_equal(np.asarray(_augment(image, seed, flip=False, **kwargs)), plain)
    outs = [np.asarray(_augment(image, seed, flip=True, **kwargs)) for seed in range(20)]
    assert any(np.array_equal(o, plain[:, ::-1]) for o in outs) and any(
        np.array_equal(o, plain) for o in outs
    )


def test_bad_preprocess_settings_are_refused(cyclegan_dir):
    with pytest.raises(ValueError, match="unknown preprocess"):
        Augment(preprocess="zoom")
    with pytest.raises(ValueError, match="load_size"):
        Augment(load_size=200, crop_size=256)
    for mode in ("none", "scale_width"):
        with pytest.raises(ValueError, match="batch_size=1"):
            UnpairedDataModule(root=str(cyclegan_dir), preprocess=mode, batch_size=4)


def test_preprocess_none_trains_on_varying_sizes_with_batch_size_one(tmp_path):
    write_images(tmp_path / "trainA", 2, size=(37, 30))
    write_images(tmp_path / "trainB", 2, size=(44, 52), seed=3)
    dm = UnpairedDataModule(root=str(tmp_path), preprocess="none", num_workers=0, flip=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["a"].shape == (1, 3, 32, 40) and batch["b"].shape == (1, 3, 52, 44)


# ---------------------------------------------------------------- direction, size limit, determinism


def test_direction_swaps_domains_and_max_dataset_size_caps_length(cyclegan_dir):
    ab = UnpairedDataModule(root=str(cyclegan_dir), load_size=36, crop_size=32, num_workers=0)
    ba = UnpairedDataModule(
        root=str(cyclegan_dir), load_size=36, crop_size=32, num_workers=0, swap_domains=True
    )
    capped = UnpairedDataModule(root=str(cyclegan_dir), num_workers=0, max_dataset_size=2)
    for dm in (ab, ba, capped):
        dm.setup("fit")
    assert len(ab.train_set) == 5 and len(capped.train_set) == 2
    assert ab.train_set.files_a == ba.train_set.files_b and ab.train_set.files_b == ba.train_set.files_a
    red = ab.train_set[0]["a"][0].mean() - ab.train_set[0]["a"][2].mean()  # trainA is tinted red
    assert red > 0.3 and ba.train_set[0]["b"][0].mean() - ba.train_set[0]["b"][2].mean() > 0.3


def test_samples_are_a_pure_function_of_seed_epoch_and_position(cyclegan_dir):
    files_a, files_b = list_images(cyclegan_dir / "trainA"), list_images(cyclegan_dir / "trainB")
    augment = Augment(load_size=36, crop_size=32)
    one = UnpairedDataset(files_a, files_b, augment=augment, seed=3)
    two = UnpairedDataset(files_a, files_b, augment=augment, seed=3)
    other = UnpairedDataset(files_a, files_b, augment=augment, seed=4)
    for key in (7, 0, 12, 7):  # any order: no hidden state
        assert torch.equal(one[key]["a"], two[key]["a"]) and torch.equal(one[key]["b"], two[key]["b"])
    assert any(not torch.equal(one[k]["a"], other[k]["a"]) for k in range(5))
    epoch0 = sorted(int(one._permutation(0)[p]) for p in range(5))
    assert epoch0 == list(range(5))  # each A image once per epoch


def test_worker_count_does_not_change_the_data(cyclegan_dir):
    def batches(workers: int) -> list[torch.Tensor]:
        dm = UnpairedDataModule(root=str(cyclegan_dir), load_size=36, crop_size=32, num_workers=workers)
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(1)
        return [torch.cat([b["a"], b["b"]]) for b in loader]

    for x, y in zip(batches(0), batches(2), strict=True):
        assert torch.equal(x, y)


def test_sampler_shards_cover_every_position_once():
    shards = [list(UnpairedSampler(10, rank=r, world_size=3)) for r in range(3)]
    for shard in shards:
        assert len(shard) == 4
    sampler = UnpairedSampler(10, rank=0, world_size=1)
    sampler.set_epoch(2)
    assert list(sampler) == list(range(20, 30))
    assert {k % 10 for shard in shards for k in shard} == set(range(10))


@pytest.mark.parametrize("preprocess", ["resize_and_crop", "scale_width_and_crop"])
def test_crop_modes_match_resize_then_crop(preprocess):
    """The fast path (resize only the cropped box) gives the pixels of a full resize followed by the crop."""
    image = Image.fromarray(_noise(60, 48, seed=5))
    augment = Augment(preprocess=preprocess, load_size=40, crop_size=32, flip=False)
    for seed in range(4):
        out = np.asarray(to_image(augment(image, np.random.default_rng(seed))), dtype=int)
        rng = np.random.default_rng(seed)
        size = (40, 40) if preprocess == "resize_and_crop" else (40, 32)  # 48·40/60 = 32
        x, y = int(rng.integers(0, size[0] - 31)), int(rng.integers(0, size[1] - 31))
        reference = np.asarray(image.resize(size, Image.BICUBIC).crop((x, y, x + 32, y + 32)), dtype=int)
        assert np.abs(out - reference).max() <= 2 and np.abs(out - reference).mean() < 0.05

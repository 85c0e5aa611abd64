"""Issue 14, items 1 and 3: the downloader never deletes what it did not create, and bounds what it extracts.

Every archive comes from a loopback HTTP server (helpers.loopback) serving files built here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections import namedtuple
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import stylegan_transfer.datasets as datasets
from helpers import write_images
from stylegan_transfer.atomic import sweep_stale
from stylegan_transfer.datasets import DATASETS, DataError, DownloadError, download_dataset, main
from stylegan_transfer.training.run import train
from test_datasets import make_archive


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` with its content (None for folders): to prove nothing was touched."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


def user_folder(tmp_path: Path) -> Path:
    """A folder a user keeps other data in: another dataset and a text file."""
    root = tmp_path / "datasets"
    write_images(root / "other_dataset" / "images", 2)
    (root / "notes.txt").write_text("my notes, not yours to delete\n")
    return root


# ----------------------------------------------------------------------------- item 1: never delete
def test_a_folder_holding_other_files_is_refused_before_downloading(server, tmp_path):
    server.files["/horse2zebra.zip"] = make_archive(tmp_path, "horse2zebra")
    root = user_folder(tmp_path)
    before = snapshot(root)
    with pytest.raises(DownloadError) as err:
        download_dataset("horse2zebra", target=root, url=f"{server.url}/horse2zebra.zip", progress=False)
    message = str(err.value)
    assert "\n" not in message and str(root) in message and "notes.txt" in message
    assert snapshot(root) == before
    assert server.requests == []  # refused before any transfer
    assert not list(tmp_path.glob("horse2zebra.zip*"))


def test_train_with_download_into_a_foreign_folder_keeps_it(server, tmp_path, compose_cfg, monkeypatch):
    server.files["/horse2zebra.zip"] = make_archive(tmp_path, "horse2zebra")
    monkeypatch.setenv("STYLEGAN_DATASETS_URL", server.url)
    root = user_folder(tmp_path)
    before = snapshot(root)
    cfg = compose_cfg("style=horse2zebra", f"data.root={root}", "data.download=true")
    with pytest.raises(DataError, match="nothing was changed"):
        train(cfg)
    assert snapshot(root) == before


def test_cli_keeps_a_partial_dataset_folder(server, tmp_path, capsys):
    server.files["/horse2zebra.zip"] = make_archive(tmp_path, "horse2zebra")
    data_dir = tmp_path / "D"
    write_images(data_dir / "horse2zebra" / "testA", 2, seed=7)
    before = snapshot(data_dir)
    assert main(["horse2zebra", "--data-dir", str(data_dir), "--base-url", server.url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "testA" in err and str(data_dir / "horse2zebra") in err
    assert snapshot(data_dir) == before


def test_an_empty_target_folder_is_filled(server, tmp_path):
    server.files["/horse2zebra.zip"] = make_archive(tmp_path, "horse2zebra")
    target = tmp_path / "d" / "h2z"
    target.mkdir(parents=True)
    download_dataset("horse2zebra", target=target, url=f"{server.url}/horse2zebra.zip", progress=False)
    assert len(list((target / "trainB").glob("*.jpg"))) == 3
    assert sorted(p.name for p in target.parent.iterdir()) == ["h2z"]  # archive and temp folder removed


def test_a_corrupt_archive_placed_by_hand_is_kept(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    archive = data_dir / "facades.zip"
    archive.write_bytes(b"not a zip at all")
    with pytest.raises(DownloadError, match="by hand"):
        download_dataset("facades", data_dir, url="http://127.0.0.1:9/facades.zip", progress=False)
    assert archive.read_bytes() == b"not a zip at all"


def test_a_good_archive_placed_by_hand_is_kept_after_extracting(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "facades.zip").write_bytes(make_archive(tmp_path, "facades"))
    download_dataset("facades", data_dir, url="http://127.0.0.1:9/facades.zip", progress=False)
    assert (data_dir / "facades.zip").is_file() and (data_dir / "facades" / "trainA").is_dir()


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_sweep_removes_only_temporary_files_of_dead_processes(tmp_path):
    dead = _dead_pid()
    stale_dir = tmp_path / f".horse2zebra.tmp-{dead}-abc"
    write_images(stale_dir / "trainA", 1)
    stale_file = tmp_path / f".last.tmp-{dead}.ckpt"
    stale_file.write_bytes(b"x")
    live = tmp_path / f".last.tmp-{os.getppid()}.ckpt"  # our parent process is alive
    live.write_bytes(b"x")
    mine = tmp_path / f".last.tmp-{os.getpid()}.ckpt"
    mine.write_bytes(b"x")
    user = tmp_path / f"notes.tmp-{dead}.txt"  # not hidden: not one of our names
    user.write_bytes(b"x")
    assert sorted(sweep_stale(tmp_path)) == sorted([stale_dir, stale_file])
    assert live.exists() and mine.exists() and user.exists()
    assert not stale_dir.exists() and not stale_file.exists()


# ----------------------------------------------------------------------------- item 3: bounded archives
def zip_bomb(path: Path, *, inflated: int = 64 << 20) -> Path:
    """A CycleGAN-looking archive with one member of `inflated` zero bytes (deflates ~1000×)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("trainA/a.jpg", b"\xff\xd8\xff" + b"\0" * 100)
        zf.writestr("trainB/b.jpg", b"\xff\xd8\xff" + b"\0" * 100)
        with zf.open("trainB/huge.jpg", "w", force_zip64=True) as member:
            block = b"\0" * (1 << 20)
            for _ in range(inflated // len(block)):
                member.write(block)
    return path


def test_a_zip_bomb_is_refused_before_extracting(server, tmp_path):
    bomb = zip_bomb(tmp_path / "bomb.zip")
    assert bomb.stat().st_size < 1 << 20
    server.files["/horse2zebra.zip"] = bomb.read_bytes()
    data_dir = tmp_path / "data"
    with pytest.raises(DownloadError, match="zip bomb"):
        download_dataset("horse2zebra", data_dir, url=f"{server.url}/horse2zebra.zip", progress=False)
    assert sorted(p.name for p in data_dir.iterdir()) == []  # nothing extracted, the bomb deleted


def _incompressible_archive(path: Path, mib: float) -> Path:
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("trainA/a.jpg", rng.bytes(int(mib * (1 << 20))))
        zf.writestr("trainB/b.jpg", rng.bytes(100))
    return path


def test_archives_larger_than_the_dataset_can_be_are_refused(server, tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS, "facades", replace(DATASETS["facades"], max_mib=1))
    server.files["/facades.zip"] = _incompressible_archive(tmp_path / "big.zip", 1.5).read_bytes()
    data_dir = tmp_path / "data"
    with pytest.raises(DownloadError, match="more than the 1 MiB"):  # announced by Content-Length
        download_dataset("facades", data_dir, url=f"{server.url}/facades.zip", progress=False)
    assert list(data_dir.iterdir()) == []
    # placed by hand: the extracted size is bounded too
    (data_dir / "facades.zip").write_bytes(server.files["/facades.zip"])
    with pytest.raises(DownloadError, match=r"would extract to 1\.5 MiB, more than the 1 MiB"):
        download_dataset("facades", data_dir, url=f"{server.url}/facades.zip", progress=False)
    assert sorted(p.name for p in data_dir.iterdir()) == ["facades.zip"]


def test_not_enough_free_disk_space_is_refused_before_extracting(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "facades.zip").write_bytes(make_archive(tmp_path, "facades"))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(datasets.shutil, "disk_usage", lambda _path: usage(1 << 30, 1 << 30, 10 << 20))
    with pytest.raises(DownloadError, match="not enough free disk space"):
        download_dataset("facades", data_dir, url="http://127.0.0.1:9/facades.zip", progress=False)
    assert sorted(p.name for p in data_dir.iterdir()) == ["facades.zip"]


def test_every_dataset_has_a_size_bound():
    assert all(0 < info.max_mib <= 1024 for info in DATASETS.values())

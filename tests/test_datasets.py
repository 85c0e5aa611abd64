"""The real download code against a loopback HTTP server serving archives these tests build."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import pytest

from helpers import write_images
from helpers.loopback import closed_port_url
from stylegan_transfer.datasets import (
    DATASETS,
    DataError,
    DownloadError,
    check_archive,
    download_dataset,
    main,
    resolve_name,
)
from stylegan_transfer.training.data import UnpairedDataModule
from stylegan_transfer.training.run import train


def make_archive(tmp_path: Path, name: str = "vangogh2photo", *, top_folder: bool = True) -> bytes:
    """A small CycleGAN-layout zip like the official ones: <name>/trainA/... (images stored uncompressed)."""
    source = tmp_path / "archive_src" / name
    for i, split in enumerate(("trainA", "trainB", "testA", "testB")):
        write_images(source / split, 3, seed=i)
    archive = tmp_path / f"built_{name}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(source.rglob("*.jpg")):
            arcname = path.relative_to(source.parent if top_folder else source).as_posix()
            zf.write(path, arcname)
    return archive.read_bytes()


def test_full_download_extracts_the_layout_and_is_idempotent(server, tmp_path):
    data = make_archive(tmp_path)
    server.files["/vangogh2photo.zip"] = data
    data_dir = tmp_path / "data"
    url = f"{server.url}/vangogh2photo.zip"
    target = download_dataset("vangogh", data_dir, url=url, progress=False)
    assert target == data_dir / "vangogh2photo"
    for split in ("trainA", "trainB", "testA", "testB"):
        assert len(list((target / split).glob("*.jpg"))) == 3
    built = tmp_path / "archive_src" / "vangogh2photo" / "trainB" / "img_001.jpg"
    assert (target / "trainB" / "img_001.jpg").read_bytes() == built.read_bytes()
    assert sorted(p.name for p in data_dir.iterdir()) == ["vangogh2photo"]  # no .zip, .part or temp left
    assert len(server.requests) == 1
    assert download_dataset("vangogh2photo", data_dir, url=url, progress=False) == target
    assert len(server.requests) == 1  # second call: nothing fetched


def test_archive_without_top_folder_and_kept_archive(server, tmp_path):
    server.files["/horse2zebra.zip"] = make_archive(tmp_path, "horse2zebra", top_folder=False)
    target = download_dataset(
        "horse2zebra", tmp_path / "d", url=f"{server.url}/horse2zebra.zip", keep_archive=True, progress=False
    )
    assert len(list((target / "trainA").glob("*.jpg"))) == 3
    assert (tmp_path / "d" / "horse2zebra.zip").is_file()


def test_interrupted_transfer_resumes_with_a_range_request(server, tmp_path):
    data = make_archive(tmp_path)
    server.files["/vangogh2photo.zip"] = data
    server.cut_after = len(data) // 3
    data_dir = tmp_path / "data"
    url = f"{server.url}/vangogh2photo.zip"
    with pytest.raises(DownloadError, match="resume") as err:
        download_dataset("vangogh2photo", data_dir, url=url, progress=False)
    assert url in str(err.value)
    part = data_dir / "vangogh2photo.zip.part"
    assert part.stat().st_size == len(data) // 3
    assert not (data_dir / "vangogh2photo").exists()

    target = download_dataset("vangogh2photo", data_dir, url=url, progress=False)
    assert server.requests[-1] == ("/vangogh2photo.zip", f"bytes={len(data) // 3}-")
    assert len(list((target / "testB").glob("*.jpg"))) == 3
    assert not part.exists()


def test_whole_part_file_is_finished_from_a_416_answer(server, tmp_path):
    data = make_archive(tmp_path)
    server.files["/vangogh2photo.zip"] = data
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "vangogh2photo.zip.part").write_bytes(data)
    download_dataset(
        "vangogh2photo", tmp_path / "data", url=f"{server.url}/vangogh2photo.zip", progress=False
    )
    assert server.requests[-1][1] == f"bytes={len(data)}-"
    assert (tmp_path / "data" / "vangogh2photo" / "trainA").is_dir()


@pytest.mark.parametrize("damage", ["flipped_bytes", "not_a_zip", "wrong_layout"])
def test_corrupt_archive_is_refused_and_deleted(server, tmp_path, damage):
    data = bytearray(make_archive(tmp_path))
    if damage == "flipped_bytes":  # inside the first member's stored data: CRC mismatch
        start = data.index(b"\xff\xd8\xff")  # the first JPEG's start
        data[start + 200 : start + 260] = bytes(b ^ 0x5A for b in data[start + 200 : start + 260])
    elif damage == "not_a_zip":
        data = bytearray(b"<html>Service Unavailable</html>")
    else:
        bogus = tmp_path / "bogus.zip"
        with zipfile.ZipFile(bogus, "w") as zf:
            zf.writestr("readme.txt", "no images here")
        data = bytearray(bogus.read_bytes())
    server.files["/vangogh2photo.zip"] = bytes(data)
    data_dir = tmp_path / "data"
    with pytest.raises(DownloadError) as err:
        download_dataset("vangogh2photo", data_dir, url=f"{server.url}/vangogh2photo.zip", progress=False)
    message = str(err.value)
    assert {"flipped_bytes": "CRC", "not_a_zip": "not a valid zip", "wrong_layout": "trainA"}[
        damage
    ] in message
    assert "by hand" in message
    assert not (data_dir / "vangogh2photo").exists()
    assert not list(data_dir.glob("*.zip*"))  # nothing corrupt left behind to be reused


def test_zip_with_unsafe_paths_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("trainA/a.jpg", b"x")
        zf.writestr("trainB/b.jpg", b"x")
        zf.writestr("../../escape.txt", b"x")
    with pytest.raises(DownloadError, match="unsafe"):
        check_archive(archive)


def test_offline_fails_within_seconds_naming_the_url_and_the_manual_route(tmp_path):
    url = f"{closed_port_url()}/vangogh2photo.zip"
    start = time.perf_counter()
    with pytest.raises(DownloadError) as err:
        download_dataset("vangogh2photo", tmp_path / "data", url=url, timeout=3, progress=False)
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert url in message
    assert str(tmp_path / "data" / "vangogh2photo.zip") in message  # where to put the archive by hand


def test_archive_placed_by_hand_is_used_without_network(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "monet2photo.zip").write_bytes(make_archive(tmp_path, "monet2photo"))
    target = download_dataset("monet", data_dir, url=f"{closed_port_url()}/monet2photo.zip", progress=False)
    assert len(list((target / "trainA").glob("*.jpg"))) == 3


def test_cli_downloads_lists_and_reports_errors(server, tmp_path, monkeypatch, capsys):
    server.files["/apple2orange.zip"] = make_archive(tmp_path, "apple2orange")
    data_dir = str(tmp_path / "data")
    assert main(["apple2orange", "--data-dir", data_dir, "--base-url", server.url]) == 0
    assert (tmp_path / "data" / "apple2orange" / "trainB").is_dir()
    monkeypatch.setenv("STYLEGAN_DATASETS_URL", server.url)
    assert main(["maps", "--data-dir", data_dir]) == 2  # 404 from the server
    assert f"{server.url}/maps.zip" in capsys.readouterr().err
    assert main(["nonsense", "--data-dir", data_dir]) == 2
    assert "unknown dataset" in capsys.readouterr().err
    assert main(["--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in DATASETS)


def test_every_style_file_names_a_downloadable_dataset(compose_cfg):
    for info in DATASETS.values():
        cfg = compose_cfg(f"style={info.style}")
        assert cfg.style.dataset == info.name and resolve_name(info.style) == info.name
        assert cfg.data.dataset == info.name and cfg.data.download is False
        assert cfg.data.swap_domains in (True, False)
        assert f"stylegan-download data {info.name}" in cfg.data.missing_hint
    assert compose_cfg("style=custom").data.dataset is None


def test_datamodule_download_true_fetches_a_missing_dataset(server, tmp_path, monkeypatch):
    server.files["/vangogh2photo.zip"] = make_archive(tmp_path)
    monkeypatch.setenv("STYLEGAN_DATASETS_URL", server.url)
    root = tmp_path / "data" / "vangogh2photo"
    dm = UnpairedDataModule(root=str(root), dataset="vangogh2photo", download=True, swap_domains=True)
    dm.check()
    assert (root / "trainA").is_dir() and len(server.requests) == 1
    dm.setup("fit")
    assert dm.train_set.files_a[0].parent == root / "trainB"  # BtoA: A = the photos


def test_datamodule_download_offline_is_a_clear_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLEGAN_DATASETS_URL", closed_port_url())
    dm = UnpairedDataModule(root=str(tmp_path / "d" / "maps"), dataset="maps", download=True)
    with pytest.raises(DataError, match="could not download"):
        dm.check()


def test_train_without_the_dataset_fails_fast_naming_the_folder(compose_cfg, tmp_path):
    cfg = compose_cfg("style=horse2zebra", f"paths.data_dir={tmp_path / 'nowhere'}")
    start = time.perf_counter()
    with pytest.raises(DataError) as err:
        train(cfg)
    assert time.perf_counter() - start < 10
    message = str(err.value)
    assert str(tmp_path / "nowhere" / "horse2zebra" / "trainA") in message
    assert "stylegan-download data horse2zebra" in message

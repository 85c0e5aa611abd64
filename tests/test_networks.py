import pytest
import torch

from stylegan_transfer.discriminators import DISCRIMINATORS, PatchDiscriminator, PixelDiscriminator
from stylegan_transfer.layers import ResizeConv2d
from stylegan_transfer.networks import (
    GENERATORS,
    ResnetGenerator,
    UnetGenerator,
    build_generator,
    init_weights,
)


@pytest.mark.parametrize("n_blocks", [6, 9])
@pytest.mark.parametrize("upsample", ["transpose", "resize"])
@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
def test_resnet_generator_keeps_shape_and_range(n_blocks, upsample, norm):
    net = ResnetGenerator(channels=4, n_blocks=n_blocks, upsample=upsample, norm=norm)
    x = torch.randn(2, 3, 32, 36)  # (B, C, H, W), H and W multiples of 4
    y = net(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1.0
    residual_blocks = sum(type(m).__name__ == "ResnetBlock" for m in net.modules())
    assert residual_blocks == n_blocks


def test_resnet_defaults_are_the_paper_model():
    net = ResnetGenerator()
    # ResNet-9, 64 channels: 11.378 M parameters in the CycleGAN reference implementation.
    assert sum(p.numel() for p in net.parameters()) == 11_378_179


@pytest.mark.parametrize(("num_downs", "size"), [(7, 128), (8, 256)])
def test_unet_generator_sizes(num_downs, size):
    net = UnetGenerator(channels=2, num_downs=num_downs)
    x = torch.randn(1, 3, size, size)
    assert net(x).shape == x.shape


def test_unet_rejects_too_shallow():
    with pytest.raises(ValueError, match="num_downs"):
        UnetGenerator(num_downs=4)


def test_patch_discriminator_70px_receptive_field_output_size():
    net = PatchDiscriminator()  # paper default: 3 layers, 70x70 patches
    assert net(torch.randn(1, 3, 256, 256)).shape == (1, 1, 30, 30)


def test_patch_discriminator_receptive_field_is_70():
    net = PatchDiscriminator(channels=2, norm="none")
    x = torch.zeros(1, 3, 128, 128, requires_grad=True)
    out = net(x)
    out[0, 0, 5, 5].backward()
    rows = x.grad[0].abs().sum(dim=(0, 2)).nonzero()
    cols = x.grad[0].abs().sum(dim=(0, 1)).nonzero()
    assert rows.max() - rows.min() + 1 == 70
    assert cols.max() - cols.min() + 1 == 70


def test_pixel_discriminator_scores_every_pixel():
    net = PixelDiscriminator(channels=4)
    assert net(torch.randn(2, 3, 16, 20)).shape == (2, 1, 16, 20)


@pytest.mark.parametrize("init_type", ["normal", "xavier", "kaiming", "orthogonal"])
def test_init_weights(init_type):
    net = init_weights(ResnetGenerator(channels=8, n_blocks=1), init_type=init_type, gain=0.02)
    conv = net.model[1]
    assert torch.count_nonzero(conv.bias) == 0
    if init_type == "normal":
        assert conv.weight.std().item() == pytest.approx(0.02, rel=0.15)
    assert torch.isfinite(conv.weight).all()


def test_init_weights_rejects_unknown():
    with pytest.raises(ValueError, match="init_type"):
        init_weights(ResnetGenerator(channels=2, n_blocks=1), init_type="bogus")


def test_registry_builds_and_rejects():
    assert set(GENERATORS) == {"resnet", "unet", "johnson"} and set(DISCRIMINATORS) == {"patch", "pixel"}
    assert isinstance(build_generator("resnet", channels=2, n_blocks=1), ResnetGenerator)
    with pytest.raises(ValueError, match="unknown generator"):
        build_generator("os.system")


def test_resize_upsampling_has_no_checkerboard_on_constant_input():
    # A constant image must stay constant away from the borders; strided transposed convs instead
    # produce a period-2 pattern (Odena et al. 2016).
    x = torch.full((1, 3, 48, 48), 0.3)
    for upsample, expect_flat in (("resize", True), ("transpose", False)):
        torch.manual_seed(0)
        net = ResnetGenerator(channels=4, n_blocks=1, upsample=upsample, norm="none")
        init_weights(net, gain=0.3)
        with torch.no_grad():
            for m in net.modules():
                if getattr(m, "bias", None) is not None:
                    m.bias.normal_(0, 0.3)
        y = net(x)[0, 0, 16:-16, 16:-16]  # centre, away from padding effects
        flat = (y - y.mean()).abs().max().item() < 1e-5
        assert flat == expect_flat, upsample


def _three_layer_resize(conv: torch.nn.Conv2d) -> torch.nn.Sequential:
    """The plain form `ResizeConv2d` replaces: nearest x2, reflect pad 1, 3x3 conv (weights shared)."""
    return torch.nn.Sequential(
        torch.nn.Upsample(scale_factor=2, mode="nearest"), torch.nn.ReflectionPad2d(1), conv
    )


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(2, 5, 4, 4), (1, 5, 7, 3), (1, 5, 1, 1)])
def test_resize_conv_is_upsample_pad_conv(bias, shape):
    # Same outputs and the same gradients for input, weight and bias, in float64 (odd sizes and 1x1 included).
    torch.manual_seed(0)
    layer = ResizeConv2d(5, 6, bias=bias).double()
    plain = _three_layer_resize(torch.nn.Conv2d(5, 6, 3, bias=bias).double())
    plain[2].load_state_dict(layer.state_dict())
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    y, y_plain = layer(x), plain(x)
    assert y.shape == (shape[0], 6, 2 * shape[2], 2 * shape[3])
    torch.testing.assert_close(y, y_plain, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(y)
    params = [x, *layer.parameters()]
    got = torch.autograd.grad(y, params, grad)
    want = torch.autograd.grad(y_plain, [x, *plain[2].parameters()], grad)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


def test_resize_generator_keeps_the_three_layer_state_dict():
    # Exports and checkpoints saved with Upsample/ReflectionPad2d/Conv2d load unchanged (strict) and translate
    # the same: the fast layer sits at the plain conv's index.
    torch.manual_seed(0)
    net = ResnetGenerator(channels=4, n_blocks=2, upsample="resize")
    plain = ResnetGenerator(channels=4, n_blocks=2, upsample="resize")
    for index, module in enumerate(plain.model):
        if isinstance(module, ResizeConv2d):
            conv = torch.nn.Conv2d(module.in_channels, module.out_channels, 3, bias=module.bias is not None)
            for offset, layer in enumerate(_three_layer_resize(conv)):
                plain.model[index - 2 + offset] = layer
    assert sum(isinstance(m, torch.nn.Upsample) for m in plain.modules()) == 2
    assert list(plain.state_dict()) == list(net.state_dict())
    net.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(1, 3, 20, 28)
    torch.testing.assert_close(net(x), plain(x), rtol=1e-5, atol=1e-6)


def test_resize_conv_under_bf16_autocast_stays_close():
    torch.manual_seed(0)
    layer = ResizeConv2d(8, 4)
    x = torch.randn(1, 8, 6, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    plain = _three_layer_resize(torch.nn.Conv2d(8, 4, 3))
    plain[2].load_state_dict(layer.state_dict())
    torch.testing.assert_close(y.float(), plain(x), rtol=0.05, atol=0.05)

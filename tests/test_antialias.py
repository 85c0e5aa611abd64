"""Anti-aliased resampling (Zhang 2019, as the CUT code uses it) and spectral norm, against their definitions."""

import pytest
import torch
import torch.nn.functional as F

from stylegan_transfer.discriminators import PatchDiscriminator
from stylegan_transfer.inference.generator_file import load_generator, save_generator
from stylegan_transfer.inference.tiling import TileOptions, translate_tiled
from stylegan_transfer.layers import BlurPool2d, BlurUpsample2d, binomial_filter
from stylegan_transfer.networks import ResnetGenerator, build_generator, init_weights


def test_binomial_filters_are_the_normalised_outer_products():
    assert torch.equal(
        binomial_filter(3), torch.tensor([1.0, 2, 1])[:, None] * torch.tensor([1.0, 2, 1]) / 16
    )
    assert torch.equal(
        binomial_filter(4), torch.tensor([1.0, 3, 3, 1])[:, None] * torch.tensor([1.0, 3, 3, 1]) / 64
    )


# ----------------------------------------------------------------------------- blur-pool
def test_blur_pool_is_the_binomial_filter_at_every_second_pixel():
    x = torch.randn(2, 3, 9, 12)  # odd height too
    y = BlurPool2d(3)(x)
    assert y.shape == (2, 3, 5, 6)  # ceil(H/2), ceil(W/2)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")  # (2, 3, 11, 14)
    weights = [1.0, 2.0, 1.0]
    expected = torch.zeros_like(y)
    for i in range(y.shape[2]):
        for j in range(y.shape[3]):
            window = padded[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]  # (2, 3, 3, 3)
            expected[:, :, i, j] = sum(
                weights[u] * weights[v] / 16 * window[:, :, u, v] for u in range(3) for v in range(3)
            )
    torch.testing.assert_close(y, expected)


def test_blur_pool_removes_what_plain_subsampling_aliases():
    # A pattern at the Nyquist frequency: subsampling every second pixel turns it into a constant (aliasing);
    # the [1, 2, 1] filter has a zero there, so blur-pool returns 0 everywhere (reflect padding included).
    rows = torch.arange(16)
    checker = ((rows[:, None] + rows[None, :]) % 2 * 2 - 1).float().expand(1, 2, 16, 16)  # ±1
    assert torch.equal(checker[:, :, ::2, ::2], -torch.ones(1, 2, 8, 8))
    assert BlurPool2d(2)(checker).abs().max() < 1e-6


def test_blur_pool_shift_by_two_shifts_output_by_one():
    x = torch.randn(1, 2, 20, 20)
    y, y_shifted = BlurPool2d(2)(x), BlurPool2d(2)(torch.roll(x, shifts=(2, 2), dims=(2, 3)))
    torch.testing.assert_close(y_shifted[:, :, 2:-1, 2:-1], y[:, :, 1:-2, 1:-2])  # away from the border


# ----------------------------------------------------------------------------- low-pass upsampling
def _zero_insert(x: torch.Tensor) -> torch.Tensor:
    """x[i, j] at z[2i, 2j], zeros between: (B, C, H, W) -> (B, C, 2H - 1, 2W - 1)."""
    b, c, h, w = x.shape
    z = x.new_zeros(b, c, 2 * h - 1, 2 * w - 1)
    z[:, :, ::2, ::2] = x
    return z


def test_blur_upsample_is_zero_insertion_then_the_fixed_low_pass():
    x = torch.randn(2, 3, 5, 7)
    y = BlurUpsample2d(3)(x)
    assert y.shape == (2, 3, 10, 14)
    kernel = (4 * binomial_filter(4)).expand(3, 1, 4, 4)  # ×stride² keeps the mean
    z = _zero_insert(F.pad(x, (1, 1, 1, 1), mode="replicate"))  # (2, 3, 13, 17)
    full = F.conv2d(z, kernel, padding=1, groups=3)  # (2, 3, 12, 16)
    torch.testing.assert_close(y, full[:, :, 1:-1, 1:-1])


def test_blur_upsample_equals_bilinear_and_keeps_constants():
    x = torch.randn(1, 2, 6, 8)
    torch.testing.assert_close(
        BlurUpsample2d(2)(x), F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    )
    constant = torch.full((1, 2, 6, 8), 0.7)
    torch.testing.assert_close(BlurUpsample2d(2)(constant), torch.full((1, 2, 12, 16), 0.7))
    # whereas a stride-2 transposed conv with a 3x3 kernel that is not a low-pass (as a learnt one) leaves a
    # period-2 checkerboard on the same constant image
    kernel = torch.rand(3, 3, generator=torch.Generator().manual_seed(0)).expand(2, 1, 3, 3)
    up = F.conv_transpose2d(constant, kernel, stride=2, groups=2)
    assert up[:, :, 2:-2, 2:-2].std() > 0.1


def test_blur_upsample_shift_by_one_shifts_output_by_two():
    x = torch.randn(1, 2, 12, 12)
    y, y_shifted = BlurUpsample2d(2)(x), BlurUpsample2d(2)(torch.roll(x, shifts=(1, 1), dims=(2, 3)))
    torch.testing.assert_close(y_shifted[:, :, 4:-2, 4:-2], y[:, :, 2:-4, 2:-4])


# ----------------------------------------------------------------------------- networks
def test_antialiased_resnet_has_cut_layout_and_the_paper_parameter_count():
    net = ResnetGenerator(antialias=True, upsample="blur")
    kinds = [type(m).__name__ for m in net.model]
    assert (
        kinds[:12]
        == ["ReflectionPad2d", "Conv2d", "InstanceNorm2d", "ReLU"]
        + [
            "Conv2d",
            "InstanceNorm2d",
            "ReLU",
            "BlurPool2d",
        ]
        * 2
    )
    assert all(m.stride == (1, 1) for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert kinds.count("BlurUpsample2d") == 2 and "ConvTranspose2d" not in kinds
    # fixed filters are buffers outside the state dict; 3x3 convs replace the 3x3 transposed convs
    assert sum(p.numel() for p in net.parameters()) == 11_378_179
    assert not any("kernel" in k for k in net.state_dict())
    assert net.encoder_layers() == [0, 4, 8, 12, 16]  # the CUT code's nce_layers
    assert ResnetGenerator().encoder_layers() == [0, 4, 7, 10, 14]  # same meaning without blur-pool


@pytest.mark.parametrize("upsample", ["transpose", "resize", "blur"])
def test_antialiased_generator_keeps_shape_and_range(upsample):
    net = ResnetGenerator(channels=4, n_blocks=1, antialias=True, upsample=upsample)
    x = torch.randn(2, 3, 32, 36)
    y = net(x)
    assert y.shape == x.shape and y.abs().max() <= 1


def test_blur_upsampling_generator_has_no_checkerboard_on_constant_input():
    net = ResnetGenerator(channels=4, n_blocks=1, upsample="blur", antialias=True, norm="none")
    init_weights(net, gain=0.3)
    with torch.no_grad():
        for m in net.modules():
            if getattr(m, "bias", None) is not None:
                m.bias.fill_(0.05)
        y = net(torch.full((1, 3, 48, 48), 0.3))[0, :, 12:-12, 12:-12]
    assert y.std(dim=(1, 2)).max() < 1e-5


def test_antialiased_discriminator_blurs_instead_of_striding():
    plain, blurred = PatchDiscriminator(channels=4), PatchDiscriminator(channels=4, antialias=True)
    kinds = [type(m).__name__ for m in blurred.model]
    assert kinds.count("BlurPool2d") == 3  # one per stride-2 conv of the paper's D
    assert all(m.stride == (1, 1) for m in blurred.modules() if isinstance(m, torch.nn.Conv2d))
    shapes = sorted(tuple(v.shape) for v in blurred.state_dict().values())
    assert shapes == sorted(tuple(v.shape) for v in plain.state_dict().values())  # no filter buffers
    x = torch.randn(1, 3, 64, 64)
    assert blurred(x).shape[:2] == (1, 1) and blurred(x).shape[-1] >= plain(x).shape[-1]


def test_antialiased_generator_exports_loads_and_tiles(tmp_path):
    kwargs = {"channels": 4, "n_blocks": 1, "antialias": True, "upsample": "blur"}
    net = init_weights(build_generator("resnet", **kwargs), init_type="xavier").eval()
    path = save_generator(net, tmp_path / "g.safetensors", arch="resnet", kwargs=kwargs)
    loaded = load_generator(path)
    x = torch.rand(1, 3, 40, 44) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))
        whole = net(x)
    tiled = translate_tiled(
        loaded, x, TileOptions(tile=24, overlap=12), torch.device("cpu"), torch.float32
    )  # 40x44 in several tiles
    assert tiled.shape == x.shape
    assert (tiled - whole).abs().mean() < 0.05


# ----------------------------------------------------------------------------- spectral norm
def _largest_singular_values(net: torch.nn.Module) -> list[float]:
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    return [torch.linalg.matrix_norm(m.weight.flatten(1), ord=2).item() for m in convs]


def test_spectral_norm_bounds_every_conv_after_init_and_training_forwards():
    torch.manual_seed(0)
    net = PatchDiscriminator(channels=4, n_layers=2, spectral_norm=True, norm="none")
    assert any("parametrizations.weight.original" in k for k in net.state_dict())
    init_weights(net, init_type="normal", gain=0.02)
    originals = [m.parametrizations.weight.original for m in net.modules() if hasattr(m, "parametrizations")]
    assert len(originals) == 4
    assert all(o.std().item() == pytest.approx(0.02, rel=0.3) for o in originals)  # the init reached them
    for _ in range(10):  # one power iteration per training forward
        net(torch.randn(2, 3, 32, 32))
    net.eval()
    assert _largest_singular_values(net) == pytest.approx([1.0] * 4, abs=2e-2)
    plain = init_weights(PatchDiscriminator(channels=4, n_layers=2), gain=0.5)
    assert max(_largest_singular_values(plain)) > 2  # without spectral norm nothing bounds it


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_spectral_norm_with_a_normalisation_layer_is_refused_by_name(norm):
    with pytest.raises(ValueError, match=rf"spectral_norm=True needs norm='none', not norm='{norm}'"):
        PatchDiscriminator(channels=4, n_layers=2, spectral_norm=True, norm=norm)


def _jacobian_norm(net: torch.nn.Module, x: torch.Tensor, iterations: int = 30) -> float:
    """Largest singular value of the Jacobian of `net` at `x`, by power iteration on JᵀJ."""
    v = torch.randn_like(x, generator=torch.Generator().manual_seed(0))
    for _ in range(iterations):
        v = v / v.norm()
        _, jv = torch.func.jvp(net, (x,), (v,))
        _, pullback = torch.func.vjp(net, x)
        (v,) = pullback(jv)
    v = v / v.norm()
    return torch.func.jvp(net, (x,), (v,))[1].norm().item()


def test_spectral_norm_discriminator_has_no_norm_layer_and_a_bounded_lipschitz_constant():
    """With spectral norm D holds no normalisation layer, and its Jacobian's norm (anywhere, even at nearly
    constant images) stays under the product of its convolutions' bounds: ||conv|| ≤ σ(W)·ceil(k/s) (every
    input pixel enters at most ceil(k/s)² windows; LeakyReLU is 1-Lipschitz). An instance norm would divide by
    the activations' own spread, which a nearly constant image makes arbitrarily small."""
    torch.manual_seed(0)
    net = init_weights(PatchDiscriminator(channels=4, n_layers=3, spectral_norm=True, norm="none"))
    kinds = {type(m).__name__ for m in net.modules()}
    assert not kinds & {"InstanceNorm2d", "BatchNorm2d"}, kinds
    for _ in range(50):  # power iterations of the spectral norm
        net(torch.randn(1, 3, 32, 32))
    net.eval()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    bound = 1.0
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2).item()
        assert sigma == pytest.approx(1.0, abs=5e-2)  # the bound below uses the exact value
        bound *= sigma * -(-conv.kernel_size[0] // conv.stride[0])
    flat = 0.3 + 1e-4 * torch.randn(1, 3, 64, 64)  # (1, 3, 64, 64): nearly constant
    noisy = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        for x in (flat, noisy):
            assert _jacobian_norm(net, x) <= bound * 1.001
        y = torch.rand(1, 3, 64, 64) * 2 - 1
        assert (net(noisy) - net(y)).norm() <= bound * (noisy - y).norm()

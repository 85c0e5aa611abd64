"""Video translation: streaming, held instance-norm statistics (flicker), audio, rotation, damaged files, CLI.

Every video is generated here with PyAV: small moving shapes, a sine tone as the audio track.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import REPO, TINY_G_KWARGS
from stylegan_transfer.inference.generator_file import save_generator
from stylegan_transfer.inference.translate import main
from stylegan_transfer.inference.video import (
    FlickerMeter,
    VideoError,
    _sample_indices,
    flicker_ratio,
    translate_video,
)
from stylegan_transfer.networks import build_generator, init_weights

try:
    import av
except ImportError:  # the base install: only the tests that need no video files run
    av = None
needs_av = pytest.mark.skipif(av is None, reason='the video extra: pip install "stylegan-transfer[video]"')


# ----------------------------------------------------------------------------- fixtures
def moving_shapes(count: int, width: int, height: int) -> list[np.ndarray]:
    """A smooth background with a red square moving right and a blue disc moving down."""
    ys, xs = np.mgrid[0:height, 0:width]
    background = np.stack([60 + 80 * xs / width, 70 + 60 * ys / height, 90 + 0 * xs], axis=-1)
    frames = []
    for i in range(count):
        frame = background.copy()
        x0 = (3 * i) % max(1, width - 10)
        frame[4:14, x0 : x0 + 10] = (220, 40, 40)
        cy, cx = (2 * i) % height, width // 2
        frame[(ys - cy) ** 2 + (xs - cx) ** 2 < 36] = (40, 60, 230)
        frames.append(frame.clip(0, 255).astype(np.uint8))
    return frames


def write_video(
    path: Path,
    frames: list[np.ndarray],
    *,
    fps: int = 10,
    audio: str | None = "aac",
    rotation: int | None = None,
    codec: str = "libx264",
    options: dict | None = None,
    pix_fmt: str = "yuv420p",
) -> Path:
    """Encode `frames` (H, W, 3 uint8) with PyAV, plus `len(frames) / fps` seconds of a 440 Hz tone."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        if options is not None:
            video.options = options
        elif codec == "libx264":
            video.options = {"preset": "ultrafast"}
        if rotation is not None:
            video.set_display_rotation(rotation)
        sound = None
        if audio is not None:
            sound = out.add_stream(audio, rate=16000 if audio != "libopus" else 48000)
            sound.layout = "mono"
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode())
        if sound is not None:
            rate = sound.codec_context.sample_rate
            total = round(len(frames) / fps * rate)
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / rate)).astype(np.float32)[None]
            step = sound.codec_context.frame_size or 1024
            for start in range(0, total, step):
                chunk = av.AudioFrame.from_ndarray(
                    tone[:, start : start + step].copy(), format="flt", layout="mono"
                )
                chunk.sample_rate, chunk.pts = rate, start
                out.mux(sound.encode(chunk))
            out.mux(sound.encode())
    return path


def read_video(path: Path) -> dict:
    """Independent read-back: frames (as arrays), rate, stored size, rotation, audio codecs and duration."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        audio = container.streams.audio
        return {
            "frames": [f.to_ndarray(format="rgb24") for f in frames],
            "fps": stream.average_rate,
            "size": (stream.codec_context.width, stream.codec_context.height),
            "rotation": frames[0].rotation,
            "audio": [a.codec_context.name for a in audio],
            "audio_seconds": [float(a.duration * a.time_base) if a.duration else None for a in audio],
            "duration": container.duration / 1e6 if container.duration else None,
        }


@pytest.fixture
def generator() -> torch.nn.Module:
    torch.manual_seed(0)
    return init_weights(build_generator("resnet", **TINY_G_KWARGS)).eval()


@pytest.fixture
def export_path(tmp_path, generator) -> Path:
    return save_generator(generator, tmp_path / "g.safetensors", arch="resnet", kwargs=TINY_G_KWARGS)


# ----------------------------------------------------------------------------- flicker metric
def test_flicker_ratio_on_synthetic_frames():
    torch.manual_seed(0)
    inputs = torch.rand(6, 3, 8, 8) * 2 - 1  # (T, 3, H, W)
    assert flicker_ratio(inputs, inputs) == pytest.approx(1.0)
    assert flicker_ratio(inputs, 0.5 * inputs) == pytest.approx(0.5)
    assert flicker_ratio(inputs, torch.zeros_like(inputs)) == 0.0  # a still output removes all change
    assert flicker_ratio(inputs, inputs + torch.rand(6, 1, 1, 1)) > 1.0  # global jumps added: flicker
    assert flicker_ratio(inputs[:1], inputs[:1]) is None  # no pair of frames
    assert flicker_ratio(inputs[:1].expand(4, -1, -1, -1), inputs[:4]) is None  # a still input


def test_flicker_meter_streams_batches_like_one_pass():
    torch.manual_seed(1)
    inputs, outputs = torch.rand(7, 3, 5, 5), torch.rand(7, 3, 5, 5)
    meter = FlickerMeter()
    for start in (0, 3, 4):  # uneven batches: pairs across batch borders count too
        end = {0: 3, 3: 4, 4: 7}[start]
        meter.update(inputs[start:end], outputs[start:end])
    assert meter.pairs == 6
    assert meter.ratio == pytest.approx(flicker_ratio(inputs, outputs))


def test_statistics_frames_are_spread_over_the_clip():
    assert sorted(_sample_indices(100, 4)) == [12, 37, 62, 87]
    assert sorted(_sample_indices(3, 8)) == [0, 1, 2]
    assert _sample_indices(1, 8) == {0}


def test_without_pyav_a_video_input_ends_with_the_install_line(tmp_path, export_path, monkeypatch, capsys):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not read: the missing PyAV is reported first")
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError, as in the base install
    code = main(["--checkpoint", str(export_path), "--device", "cpu", "--quiet", "--input", str(clip),
                 "--output", str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "clip.mp4" in err[0] and 'pip install "stylegan-transfer[video]"' in err[0]
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- end to end
@needs_av
@pytest.mark.slow
@pytest.mark.parametrize(
    ("source_name", "audio_codec", "output_name", "size", "expect"),
    [
        ("clip.mp4", "aac", "out.mp4", None, {"size": (48, 32), "audio": ["aac"]}),  # copied
        ("clip.mkv", "pcm_s16le", "out.webm", 40, {"size": (40, 26), "audio": ["opus"]}),  # transcoded
        ("clip.mp4", "aac", "out.gif", None, {"size": (48, 32), "audio": []}),  # GIF: no audio
    ],
)
def test_translated_video_keeps_frames_rate_size_and_audio(
    tmp_path, generator, source_name, audio_codec, output_name, size, expect
):
    frames = moving_shapes(15, 48, 32)
    source = write_video(tmp_path / source_name, frames, fps=12, audio=audio_codec)
    report = translate_video(generator, source, tmp_path / output_name, size=size, device="cpu", batch_size=4)
    result = read_video(tmp_path / output_name)
    assert report.frames == len(result["frames"]) == 15
    assert report.damaged is None
    assert abs(result["fps"] - 12) <= (0.5 if output_name.endswith(".gif") else 0)  # GIF: 1/100 s delays
    assert result["size"] == report.size == expect["size"]
    assert result["audio"] == expect["audio"]
    if expect["audio"]:
        assert result["duration"] == pytest.approx(15 / 12, abs=0.1)  # the audio stays as long as the video
    assert report.flicker is not None and report.flicker > 0


@needs_av
@pytest.mark.slow
def test_rotation_metadata_is_kept_and_the_generator_sees_upright_frames(tmp_path, generator):
    frames = moving_shapes(6, 48, 32)
    lossless = {"options": {"crf": "0", "preset": "ultrafast"}, "pix_fmt": "yuv444p", "audio": None}
    source = write_video(tmp_path / "phone.mp4", frames, rotation=90, **lossless)
    report = translate_video(generator, source, tmp_path / "out.mp4", device="cpu", crf=0)
    result = read_video(tmp_path / "out.mp4")
    assert result["rotation"] == report.rotation == 90
    assert result["size"] == (48, 32)  # stored orientation kept; the display matrix turns it
    # the frames went through the generator upright: the same as translating the turned clip
    upright = write_video(tmp_path / "upright.mp4", [np.rot90(f).copy() for f in frames], **lossless)
    translate_video(generator, upright, tmp_path / "upright_out.mp4", device="cpu", crf=0)
    turned_back = [np.rot90(f, -1) for f in read_video(tmp_path / "upright_out.mp4")["frames"]]
    difference = np.mean(
        [np.abs(a.astype(int) - b).mean() for a, b in zip(turned_back, result["frames"], strict=True)]
    )
    assert difference < 4.0  # only the encodes differ (16 when the generator sees the stored frames)
    gif = translate_video(generator, source, tmp_path / "out.gif", device="cpu")  # no rotation metadata
    assert gif.size == (32, 48) and gif.rotation == 0 and read_video(tmp_path / "out.gif")["size"] == (32, 48)


def brightness_clip(kind: str, count: int = 12, size: int = 48, seed: int = 0) -> list[np.ndarray]:
    """A still picture whose frames differ only by random brightness noise: over the whole frame
    ("global") or inside one corner patch, a flickering lamp ("local")."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((1, 3, 5, 5)).astype(np.float32))
    base = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    base = base[0].permute(1, 2, 0).numpy() * 180 + 40  # (H, W, 3)
    frames = []
    for _ in range(count):
        frame = base.copy()
        if kind == "global":
            frame += rng.normal(0, 12)
        else:
            frame[: size // 4, : size // 4] += rng.normal(0, 40)
        frames.append(frame.clip(0, 255).astype(np.uint8))
    return frames


@needs_av
@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet", "johnson"])
def test_held_statistics_add_less_flicker_than_per_frame_statistics(tmp_path, arch):
    torch.manual_seed(0)
    generator = init_weights(build_generator(arch, **TINY_G_KWARGS)).eval()
    lossless = {"codec": "libx264", "options": {"crf": "0", "preset": "ultrafast"}, "pix_fmt": "yuv444p"}
    clip = write_video(tmp_path / "lamp.mkv", brightness_clip("local"), audio=None, **lossless)
    held = translate_video(generator, clip, tmp_path / "held.mkv", stats="clip", device="cpu")
    per_frame = translate_video(generator, clip, tmp_path / "per_frame.mkv", stats="per-frame", device="cpu")
    assert held.stats.startswith("held") and per_frame.stats == "per frame"
    assert held.flicker < 0.8 * per_frame.flicker, (held.flicker, per_frame.flicker)
    # Per-frame statistics normalise a whole-frame brightness change away (an affine change of the input);
    # held statistics pass it through like any other change: the documented trade-off.
    clip = write_video(tmp_path / "global.mkv", brightness_clip("global"), audio=None, **lossless)
    held = translate_video(generator, clip, tmp_path / "held_g.mkv", stats="clip", device="cpu")
    per_frame = translate_video(
        generator, clip, tmp_path / "per_frame_g.mkv", stats="per-frame", device="cpu"
    )
    assert per_frame.flicker < held.flicker


MEMORY_CHILD = """
import json, sys, torch
from stylegan_transfer.inference.video import translate_video

torch.set_num_threads(1)
# A cheap generator with instance norm (held statistics included): the pipeline is what is measured.
generator = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.InstanceNorm2d(3), torch.nn.Tanh())
result = []
for name in sys.argv[1:]:
    report = translate_video(generator, name, name + ".out.mp4", device="cpu", preset="ultrafast")
    # VmHWM: this process's peak resident size so far (ru_maxrss would start at the parent's peak)
    status = open("/proc/self/status").read()
    result.append([report.frames, int(status.split("VmHWM:")[1].split()[0]) * 1024])
print(json.dumps(result))
"""


@needs_av
@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads VmHWM from /proc; glibc's malloc settings")
def test_peak_memory_does_not_grow_with_the_length_of_the_video(tmp_path):
    width, height, short = 256, 192, 16
    frames = moving_shapes(4 * short, width, height)
    short_clip = write_video(tmp_path / "short.mp4", frames[:short])
    long_clip = write_video(tmp_path / "long.mp4", frames)  # 4x longer, with its audio
    # A fixed mmap threshold and two malloc arenas keep the peak resident size free of allocator noise
    # (measured: < 0.5 MB between runs); one child translates the short clip, then the long one.
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1",
           "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_ARENA_MAX": "2"}  # fmt: skip
    child = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(short_clip), str(long_clip)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-2000:]
    (short_frames, short_peak), (long_frames, long_peak) = json.loads(child.stdout.strip().splitlines()[-1])
    assert (short_frames, long_frames) == (short, 4 * short)
    bound = 3 * 2**20
    extra_frames_bytes = 3 * short * width * height * 3  # the 48 extra frames as uint8 RGB: 7 MB
    assert bound < extra_frames_bytes / 2  # frames piling up would break the bound
    assert long_peak - short_peak < bound, (short_peak / 2**20, long_peak / 2**20)


@needs_av
@pytest.mark.slow
def test_a_truncated_video_keeps_the_frames_before_the_cut_in_a_valid_file(tmp_path, export_path, capsys):
    clip = write_video(tmp_path / "clip.mkv", moving_shapes(30, 48, 32), audio="pcm_s16le")
    data = clip.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    code = main(["--checkpoint", str(export_path), "--device", "cpu", "--quiet", "--input", str(cut),
                 "--output", str(out)])  # fmt: skip
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 1
    assert len(errors) == 1 and str(cut) in errors[0] and "truncated" in errors[0]
    kept = read_video(out / "cut.mkv")  # a valid file: it opens and decodes to the end
    assert 5 <= len(kept["frames"]) < 30
    assert f"the {len(kept['frames'])} frames before it" in errors[0]
    assert sorted(p.name for p in out.iterdir()) == ["cut.mkv"]  # no temporary file left


@needs_av
@pytest.mark.slow
def test_an_unreadable_video_ends_with_one_line_and_leaves_no_output(tmp_path, export_path, capsys):
    clip = write_video(tmp_path / "clip.mp4", moving_shapes(10, 48, 32))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip.read_bytes()[: len(clip.read_bytes()) // 2])  # moov atom (the index) cut off
    out = tmp_path / "out"
    code = main(["--checkpoint", str(export_path), "--device", "cpu", "--quiet", "--input", str(broken),
                 "--output", str(out)])  # fmt: skip
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(lines) == 2 and lines[0].startswith("error: ") and str(broken) in lines[0]  # + the summary
    assert not out.exists() or not any(out.iterdir())


@needs_av
@pytest.mark.slow
def test_cli_translates_videos_beside_images_with_the_fast_style_network(tmp_path, capsys):
    torch.manual_seed(0)
    johnson = init_weights(build_generator("johnson", **TINY_G_KWARGS))
    export = save_generator(johnson, tmp_path / "fast.safetensors", arch="johnson", kwargs=TINY_G_KWARGS)
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_video(inputs / "walk.mov", moving_shapes(9, 40, 24), fps=8)
    write_video(inputs / "loop.gif", moving_shapes(5, 40, 24), codec="gif", pix_fmt="rgb8", audio=None)
    from PIL import Image

    Image.fromarray(moving_shapes(1, 40, 24)[0]).save(inputs / "still.png")
    code = main(["--checkpoint", str(export), "--device", "cpu", "--input", str(inputs), "--output",
                 str(tmp_path / "out"), "--side-by-side", "--batch-size", "3"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [
        "loop.gif", "loop_side_by_side.gif", "still.png", "still_side_by_side.png",
        "walk.mov", "walk_side_by_side.mov",
    ]  # fmt: skip
    walk = read_video(tmp_path / "out" / "walk.mov")
    assert len(walk["frames"]) == 9 and walk["fps"] == 8 and walk["audio"] == ["aac"]
    assert read_video(tmp_path / "out" / "walk_side_by_side.mov")["size"] == (80, 24)
    assert len(read_video(tmp_path / "out" / "loop.gif")["frames"]) == 5
    assert "3 written, 0 skipped" in err and "flicker ratio" in err


@needs_av
@pytest.mark.slow
def test_tiled_frames_with_held_statistics_match_untiled_frames(tmp_path, generator):
    clip = write_video(tmp_path / "clip.mkv", moving_shapes(6, 64, 48), audio=None)
    whole = translate_video(generator, clip, tmp_path / "whole.mkv", device="cpu", crf=0)
    tiled = translate_video(generator, clip, tmp_path / "tiled.mkv", device="cpu", crf=0, tile=32)
    assert whole.frames == tiled.frames == 6
    reference = np.stack(read_video(tmp_path / "whole.mkv")["frames"]).astype(int)
    tiled_error = np.abs(np.stack(read_video(tmp_path / "tiled.mkv")["frames"]) - reference).mean()
    assert tiled_error < 2.0  # the clip's statistics hold in every tile


@needs_av
def test_frames_too_large_for_memory_are_tiled_by_the_rule_images_use(tmp_path, generator, monkeypatch):
    """Issue 25 item 4: `tile=None` means automatic for videos too (as for images); 0 never tiles; frames
    above `max_pixels` are refused before anything is written."""
    from stylegan_transfer.inference import tiling

    clip = write_video(tmp_path / "clip.mkv", moving_shapes(3, 640, 32), audio=None)
    untiled = translate_video(generator, clip, tmp_path / "untiled.mkv", device="cpu", crf=0)
    assert untiled.tiles == 0 and "tiles" not in untiled.summary()
    monkeypatch.setattr(tiling, "CPU_UNTILED_BUDGET", 1)  # every batch of frames now counts as too large
    auto = translate_video(generator, clip, tmp_path / "auto.mkv", device="cpu", crf=0)
    assert auto.tiles == 512 and "in 512-pixel tiles" in auto.summary()
    never = translate_video(generator, clip, tmp_path / "never.mkv", device="cpu", crf=0, tile=0)
    assert never.tiles == 0
    reference = np.stack(read_video(tmp_path / "untiled.mkv")["frames"]).astype(int)
    assert np.abs(np.stack(read_video(tmp_path / "never.mkv")["frames"]) - reference).max() == 0
    assert np.abs(np.stack(read_video(tmp_path / "auto.mkv")["frames"]) - reference).mean() < 2.0
    with pytest.raises(VideoError, match=r"frames of 640x32 are more than 4,000 pixels"):
        translate_video(generator, clip, tmp_path / "big.mkv", device="cpu", max_pixels=4000)
    assert not (tmp_path / "big.mkv").exists()


@needs_av
def test_unavailable_codec_or_container_is_one_clear_line(tmp_path, export_path, capsys):
    clip = write_video(tmp_path / "clip.mp4", moving_shapes(3, 32, 32), audio=None)
    base = ["--checkpoint", str(export_path), "--device", "cpu", "--quiet", "--input", str(clip), "--output",
            str(tmp_path / "out")]  # fmt: skip
    assert main([*base, "--codec", "no-such-codec"]) == 2
    err = capsys.readouterr().err
    assert "'no-such-codec' is not available" in err and len(err.strip().splitlines()) == 1
    assert main([*base, "--video-format", "webm", "--codec", "libx264"]) == 2
    assert "cannot hold libx264" in capsys.readouterr().err
    assert main([*base, "--video-format", "gif", "--crf", "3"]) == 2
    assert "--crf applies to" in capsys.readouterr().err
    with pytest.raises(VideoError, match=r"out\.avi: unknown video container"):
        translate_video(torch.nn.Identity(), clip, tmp_path / "out.avi", device="cpu")
    assert not (tmp_path / "out").exists()


@needs_av
@pytest.mark.slow
@pytest.mark.parametrize("color_range", [1, 2], ids=["limited", "full"])
def test_colours_survive_with_the_inputs_colour_description(tmp_path, color_range):
    """A BT.709 clip through an identity generator comes back with the same colours and the same colour
    description (untagged output would be guessed as BT.601 or BT.709 depending on the player)."""
    bars = np.zeros((32, 96, 3), np.uint8)
    bars[:, :32], bars[:, 32:64], bars[:, 64:] = (220, 30, 40), (30, 200, 60), (40, 60, 230)
    source = tmp_path / "bt709.mp4"
    with av.open(str(source), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 32, "yuv420p"
        context = stream.codec_context
        context.colorspace = context.color_primaries = context.color_trc = 1  # BT.709
        context.color_range = color_range
        for i in range(4):
            frame = av.VideoFrame.from_ndarray(bars, format="rgb24")
            frame.colorspace = 1
            frame = frame.reformat(format="yuv420p", dst_color_range=color_range)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    translate_video(torch.nn.Identity(), source, tmp_path / "out.mp4", device="cpu", crf=0)
    with av.open(str(tmp_path / "out.mp4")) as container:
        frames = list(container.decode(video=0))
    first = frames[0]
    assert (first.colorspace, first.color_range, first.color_primaries, first.color_trc) == (
        1,
        color_range,
        1,
        1,
    )
    original = read_video(source)["frames"]
    difference = np.mean(
        [
            np.abs(f.to_ndarray(format="rgb24").astype(int) - o).mean()
            for f, o in zip(frames, original, strict=True)
        ]
    )
    assert difference < 2.5  # YUV rounding only


@needs_av
@pytest.mark.slow
def test_cli_video_options_reach_the_translation(tmp_path, export_path, capsys):
    clip = write_video(tmp_path / "clip.mp4", moving_shapes(6, 48, 32))
    code = main(["--checkpoint", str(export_path), "--device", "cpu", "--input", str(clip), "--output",
                 str(tmp_path / "out"), "--no-audio", "--video-stats", "per-frame", "--size", "32",
                 "--video-format", "mkv", "--crf", "30", "--preset", "ultrafast"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    result = read_video(tmp_path / "out" / "clip.mkv")
    assert result["size"] == (32, 20) and result["audio"] == [] and len(result["frames"]) == 6
    assert "statistics per frame" in err and "aac left out" in err

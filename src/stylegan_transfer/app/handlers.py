"""The handlers behind the page (`StyleganApp`): each event's work on the uploads, with its state (generator
cache, VGG, result folders); refusals become Gradio errors with our one-sentence message.

`app.ui` lays out the page and wires these handlers to it.
"""

from __future__ import annotations

import html
import os
import threading
import time
import uuid
from pathlib import Path

from stylegan_transfer.app.core import (
    AppInputError,
    GeneratorCache,
    check_video,
    find_generators,
    output_names,
    preview,
    read_upload,
    sweep_old,
    translate_image,
    translate_video_file,
    video_available,
    zip_files,
)
from stylegan_transfer.app.limits import DEFAULT_MAX_PIXELS, MIN_SIDE, TILE, TILE_ABOVE
from stylegan_transfer.app.stylise import LazyVGG, StyleKnobs, VGGLoader, parse_weights, stylise_steps
from stylegan_transfer.devices import pick_device
from stylegan_transfer.images import save_image
from stylegan_transfer.inference.pretrained import MODELS
from stylegan_transfer.inference.video import INSTALL_HINT as VIDEO_INSTALL_HINT

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
import gradio as gr  # after the analytics switch

RESULT_AGE_S = 3600.0  # finished jobs' files are removed after an hour


def _error(err: Exception) -> gr.Error:
    """Our one-sentence message, escaped (Gradio renders error text as HTML; file names are user data)."""
    return gr.Error(html.escape(str(err)), duration=30, print_exception=False)


def _path(item) -> Path:
    """A Gradio file value (a path string or an object with .name / .path) as a Path."""
    if isinstance(item, str | Path):
        return Path(item)
    return Path(getattr(item, "path", None) or item.name)


class StyleganApp:
    """The handlers behind the page, with their state (generator cache, VGG, folders)."""

    def __init__(
        self,
        *,
        models_dir: Path | None,
        workdir: Path,
        device: str = "auto",
        precision: str | None = None,
        vgg_loader: VGGLoader,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        tile_above: int = TILE_ABOVE,
        tile: int = TILE,
    ) -> None:
        self.models_dir = models_dir
        self.results = workdir / "results"
        self.device = pick_device(device)
        self.precision = precision or {"cpu": "fp32", "mps": "fp16"}.get(self.device.type, "bf16")
        self.max_pixels, self.tile_above, self.tile = max_pixels, tile_above, tile
        self.generators = GeneratorCache(self.device)
        self.vgg = LazyVGG(vgg_loader)
        self.jobs: dict[str, threading.Event] = {}  # running stylisations by job id (one per page session)
        self.entries: dict[str, Path] = {}
        self.problems: list[str] = []
        self.rescan()

    # ------------------------------------------------------------------ shared
    def rescan(self) -> list[str]:
        entries, self.problems = find_generators(self.models_dir)
        self.entries = {e.label: e.path for e in entries}
        self.pretrained_count = sum(e.pretrained for e in entries)
        return list(self.entries)

    def job_folder(self) -> Path:
        sweep_old(self.results, max_age_s=RESULT_AGE_S)
        folder = self.results / uuid.uuid4().hex[:12]
        folder.mkdir(parents=True)
        return folder

    def generator_info(self) -> str:
        pretrained = self.pretrained_count
        if self.models_dir is None:
            text = "Start the app with --models FOLDER to offer your .safetensors generator exports here."
        else:
            text = f"Generator exports found in `{self.models_dir}`: {len(self.entries) - pretrained}."
        if self.problems:
            text += f" Skipped {len(self.problems)} unusable file(s) (see the terminal)."
        text += (
            f" Pretrained CycleGAN generators in the cache: {pretrained} of {len(MODELS)}"
            " (add one with `stylegan-download model NAME`, then press Refresh list)."
        )
        return text

    # ------------------------------------------------------------------ translate
    def show_inputs(self, files) -> list:
        """Upload preview; refuses unusable files at once."""
        if not files:
            return []
        shown = []
        for item in files:
            path = _path(item)
            try:
                shown.append((preview(read_upload(path, max_pixels=self.max_pixels), 512), path.name))
            except AppInputError as err:
                raise _error(err) from None
        return shown

    def _chosen_entry(self, label: str | None):
        """The generator entry the dropdown's `label` names; a gr.Error saying what to do when there is none."""
        if not self.entries:
            raise _error(AppInputError(self.generator_info()))
        if not label or label not in self.entries:
            raise _error(AppInputError("choose a generator first."))
        return self.entries[label]

    def translate(self, label: str | None, files, progress=None):
        """-> (input previews, results, download files, status)."""
        entry = self._chosen_entry(label)
        if not files:
            raise _error(AppInputError("upload one or more images first."))
        paths = [_path(item) for item in files]
        try:
            generator = self.generators.get(entry)
        except AppInputError as err:
            raise _error(err) from None
        folder = self.job_folder()
        names = output_names([p.name for p in paths], "_translated")
        shown, results, written, problems, tiled = [], [], [], [], []
        start = time.perf_counter()
        for index, (path, name) in enumerate(zip(paths, names, strict=True)):
            if progress is not None:
                progress((index, len(paths)), desc=f"translating {path.name}", unit="images")
            try:
                image = read_upload(path, max_pixels=self.max_pixels)
                result, was_tiled = translate_image(
                    generator,
                    image,
                    device=self.device,
                    precision=self.precision,
                    tile_above=self.tile_above,
                    tile=self.tile,
                )
            except AppInputError as err:
                problems.append(str(err))
                continue
            except (RuntimeError, ValueError) as err:  # out of memory, odd sizes ...
                problems.append(f"{path.name} could not be translated ({err}).")
                continue
            out = save_image(result, folder / name)
            # files of ours, written atomically under unique names: Gradio's own cache writes PIL images in
            # place under a content hash, so two requests with the same picture could read a half-written one
            shown.append((str(save_image(preview(image, 512), folder / f"input_{index}.png")), path.name))
            results.append((str(out), f"{name} ({result.width}×{result.height})"))
            written.append(out)
            if was_tiled:
                tiled.append(path.name)
        seconds = time.perf_counter() - start
        if not written:
            raise _error(AppInputError(" ".join(problems)))
        for problem in problems:
            gr.Warning(html.escape(problem), duration=30)
        downloads = [str(p) for p in written]
        if len(written) > 1:
            downloads.append(str(zip_files(written, folder / "translated.zip")))
        lines = [
            f"**Translated {len(written)} image{'s' * (len(written) != 1)} in {seconds:.2f} s** "
            f"on {self.device.type} with {html.escape(label)}."
        ]
        if tiled:
            lines.append(
                f"In {self.tile}-pixel tiles (long side above {self.tile_above}): "
                f"{html.escape(', '.join(tiled))}."
            )
        if problems:
            lines.append("Skipped: " + " ".join(html.escape(p) for p in problems))
        return shown, results, downloads, "\n\n".join(lines)

    # ------------------------------------------------------------------ video
    def show_video(self, file):
        """Upload check; the uploaded video is shown as it is."""
        if not file:
            return None
        if not video_available():
            raise _error(AppInputError(f"video needs PyAV, which is not installed: {VIDEO_INSTALL_HINT}"))
        try:
            check_video(_path(file), max_pixels=self.max_pixels)
        except AppInputError as err:
            raise _error(err) from None
        return str(_path(file))

    def translate_video(self, label: str | None, file, size: float | None, fmt: str, audio: bool):
        """-> (result video, download file, status)."""
        if not video_available():
            raise _error(AppInputError(f"video needs PyAV, which is not installed: {VIDEO_INSTALL_HINT}"))
        entry = self._chosen_entry(label)
        if not file:
            raise _error(AppInputError("upload a video first."))
        source = _path(file)
        try:
            check_video(source, max_pixels=self.max_pixels)
            generator = self.generators.get(entry)
            long_side = int(size or 0)
            if 0 < long_side < MIN_SIDE:
                raise AppInputError(f"the long side must be 0 (keep) or at least {MIN_SIDE} pixels.")
            output = self.job_folder() / output_names([source.name], "_translated")[0]
            output = output.with_suffix(f".{fmt if fmt in ('mp4', 'webm') else 'mp4'}")
            start = time.perf_counter()
            report = translate_video_file(
                generator,
                source,
                output,
                size=long_side or None,
                audio=bool(audio),
                device=self.device,
                precision=self.precision,
                tile_above=self.tile_above,
                tile=self.tile,
                progress=True,  # a tqdm bar, which the page's progress bar follows
            )
        except AppInputError as err:
            raise _error(err) from None
        except RuntimeError as err:  # out of memory ...
            raise _error(AppInputError(f"{source.name} could not be translated ({err}).")) from None
        seconds = time.perf_counter() - start
        width, height = report.size
        status = (
            f"**Translated the video in {seconds:.1f} s** on {self.device.type}: {report.frames} frames, "
            f"{width}×{height}, {'sound: ' + ', '.join(report.audio) if report.audio else 'no sound'}"
        )
        if report.flicker is not None:
            status += f", flicker ratio {report.flicker:.2f} (1.0 = no flicker added)"
        status += "."
        if report.damaged:
            warning = f"{source.name} is damaged part-way ({report.damaged}); the result holds the frames before it."
            gr.Warning(html.escape(warning), duration=30)
            status += " " + html.escape(warning)
        return str(output), str(output), status

    # ------------------------------------------------------------------ stylise
    def show_content(self, file):
        if not file:
            return None
        try:
            return preview(read_upload(_path(file), max_pixels=self.max_pixels))
        except AppInputError as err:
            raise _error(err) from None

    def show_styles(self, files) -> list:
        return self.show_inputs(files)

    def stylise(
        self,
        content_file,
        style_files,
        weights_text: str,
        size: float,
        iterations: float,
        style_weight: float,
        preserve_color: str,
        style_loss: str,
        seed: float,
        progress=None,
        job: str | None = None,
    ):
        """A generator of (result, download, status): intermediate pictures, then the final one.
        `stop(job)` ends it at the next iteration."""
        from stylegan_transfer.perceptual import VGGWeightsError

        if not content_file:
            raise _error(AppInputError("upload a content photo first."))
        if not style_files:
            raise _error(AppInputError("upload at least one style image."))
        try:
            content = read_upload(_path(content_file), max_pixels=self.max_pixels)
            styles = [read_upload(_path(f), max_pixels=self.max_pixels) for f in style_files]
            weights = parse_weights(weights_text, len(styles))
            knobs = StyleKnobs(
                size=int(size),
                iterations=int(iterations),
                style_weight=float(style_weight if style_weight is not None else 5.0),
                preserve_color=preserve_color or "none",
                style_loss=style_loss or "gram",
                seed=int(seed or 0),
            )
            features = self.vgg()
        except AppInputError as err:
            raise _error(err) from None
        except VGGWeightsError as err:
            raise _error(AppInputError(f"{err} (start the app with --vgg-weights FILE)")) from None
        cancel = threading.Event()
        job = job or uuid.uuid4().hex
        self.jobs[job] = cancel
        start = time.perf_counter()
        steps = stylise_steps(
            content,
            styles,
            features,
            knobs,
            style_weights=weights,
            device=self.device,
            cancel=cancel,
        )
        finished = False
        folder = self.job_folder()
        try:
            for step in steps:
                if progress is not None:
                    progress((step.done, step.total), desc="stylising", unit="iterations")
                loss = f"loss {step.losses['total']:.4g}" if step.losses else ""
                if step.final:
                    assert step.image is not None
                    name = output_names([_path(content_file).name], "_stylised")[0]
                    out = save_image(step.image, folder / name)
                    seconds = time.perf_counter() - start
                    status = (
                        f"**Done: {step.image.width}×{step.image.height} in {seconds:.1f} s** on "
                        f"{self.device.type}, {step.total} iterations, {loss}."
                    )
                    finished = True
                    yield str(out), str(out), status
                elif step.image is not None:  # a file, like the results (see `translate`)
                    picture = save_image(step.image, folder / f"iteration_{step.done:06d}.png")
                    yield str(picture), None, f"Iteration {step.done} of {step.total}, {loss}"
        except AppInputError as err:
            raise _error(err) from None
        finally:
            steps.close()  # stops and joins the worker
            self.jobs.pop(job, None)
        if not finished:
            yield gr.skip(), None, "Stopped; the picture above is where it got to."

    def stop(self, job: str | None) -> None:
        """Stop the stylisation `job` (the page session's own, never another person's)."""
        event = self.jobs.get(job or "")
        if event is not None:
            event.set()

"""The Gradio page: Translate (trained generators on images), Video, and Stylise (the Gatys optimisation).

Only this module imports Gradio. `build_app` returns the Blocks; `stylegan_transfer.app.cli` serves it.
Gradio keeps its uploads and outputs in `<workdir>/gradio` (GRADIO_TEMP_DIR, set here before any component
exists); our results go to `<workdir>/results/<job>`. The caller owns `workdir` and removes it.
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
    LazyVGG,
    StyleKnobs,
    VGGLoader,
    check_video,
    find_generators,
    output_names,
    parse_weights,
    preview,
    read_upload,
    stylise_steps,
    sweep_old,
    translate_image,
    translate_video_file,
    video_available,
    zip_files,
)
from stylegan_transfer.app.limits import DEFAULT_MAX_PIXELS, MIN_SIDE, TILE, TILE_ABOVE
from stylegan_transfer.devices import pick_device
from stylegan_transfer.images import IMAGE_EXTENSIONS, save_image
from stylegan_transfer.inference.pretrained import MODELS
from stylegan_transfer.inference.video import INSTALL_HINT as VIDEO_INSTALL_HINT
from stylegan_transfer.inference.video import VIDEO_EXTENSIONS

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
import gradio as gr  # after the analytics switch
from starlette.middleware import Middleware

MODEL = "model"  # the one concurrency group of everything that runs a network: one job at a time
RESULT_AGE_S = 3600.0  # finished jobs' files are removed after an hour
FILE_TYPES = sorted(IMAGE_EXTENSIONS)
# System fonts only: the page loads nothing from the internet.
THEME = gr.themes.Soft(
    font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "sans-serif"],
    font_mono=["ui-monospace", "Menlo", "Consolas", "monospace"],
)
CSS = ".result-status p { margin: 0.2em 0; }"


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

    def translate(self, label: str | None, files, progress=None):
        """-> (input previews, results, download files, status)."""
        if not self.entries:
            raise _error(AppInputError(self.generator_info()))
        if not label or label not in self.entries:
            raise _error(AppInputError("choose a generator first."))
        if not files:
            raise _error(AppInputError("upload one or more images first."))
        paths = [_path(item) for item in files]
        try:
            generator = self.generators.get(self.entries[label])
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
        if not self.entries:
            raise _error(AppInputError(self.generator_info()))
        if not label or label not in self.entries:
            raise _error(AppInputError("choose a generator first."))
        if not file:
            raise _error(AppInputError("upload a video first."))
        source = _path(file)
        try:
            check_video(source, max_pixels=self.max_pixels)
            generator = self.generators.get(self.entries[label])
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


def build_app(
    *,
    models_dir: str | Path | None,
    workdir: str | Path,
    device: str = "auto",
    precision: str | None = None,
    vgg_loader: VGGLoader | None = None,
    vgg_weights: str | Path | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    tile_above: int = TILE_ABOVE,
    tile: int = TILE,
    queue_size: int = 16,
) -> gr.Blocks:
    """The page. `vgg_loader` (no arguments -> a VGG19 `features` trunk) defaults to the pretrained VGG19
    from `vgg_weights`, else as `perceptual.load_vgg_features` resolves them; tests pass a tiny random one."""
    workdir = Path(workdir)
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "gradio")  # read by every component and the server
    if vgg_loader is None:
        from stylegan_transfer.perceptual import load_vgg_features

        def vgg_loader():
            return load_vgg_features("vgg19", weights_path=vgg_weights)

    state = StyleganApp(
        models_dir=Path(models_dir).expanduser() if models_dir is not None else None,
        workdir=workdir,
        device=device,
        precision=precision,
        vgg_loader=vgg_loader,
        max_pixels=max_pixels,
        tile_above=tile_above,
        tile=tile,
    )

    def translate(label, files, progress=gr.Progress()):  # noqa: B008  (Gradio's injection idiom)
        return state.translate(label, files, progress)

    def stylise(
        content,
        styles,
        weights,
        size,
        iterations,
        style_weight,
        colour,
        loss,
        seed,
        progress=gr.Progress(),  # noqa: B008
    ):
        job = uuid.uuid4().hex  # kept in this page's session, so that its Stop button stops this job only
        yield gr.skip(), gr.skip(), "Starting…", job
        for outputs in state.stylise(
            content, styles, weights, size, iterations, style_weight, colour, loss, seed, progress, job
        ):
            yield (*outputs, job)

    def translate_video(label, file, size, fmt, audio, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        return state.translate_video(label, file, size, fmt, audio)

    def refresh():
        labels = state.rescan()
        value = labels[0] if labels else None
        return (
            gr.Dropdown(choices=labels, value=value),
            state.generator_info(),
            gr.Dropdown(choices=labels, value=value),
        )

    labels = list(state.entries)
    limit = f"Up to {max_pixels / 1e6:.3g} megapixels per image; larger than {tile_above} px is tiled."
    with gr.Blocks(title="stylegan-transfer", analytics_enabled=False, delete_cache=(900, 3600)) as demo:
        gr.Markdown(
            "# stylegan-transfer\n"
            "Translate photos and videos with a trained generator, or stylise a photo with the classic Gatys "
            "method. "
            f"Everything runs on this computer ({state.device.type})."
        )
        with gr.Tab("Translate", id="translate"):
            with gr.Row(equal_height=True):
                generator = gr.Dropdown(
                    choices=labels,
                    value=labels[0] if labels else None,
                    label="Generator",
                    scale=5,
                    elem_id="translate-generator",
                )
                refresh_button = gr.Button("Refresh list", scale=1, elem_id="translate-refresh")
            info = gr.Markdown(state.generator_info())
            uploads = gr.File(
                label=f"Images (one or many). {limit}",
                file_count="multiple",
                file_types=FILE_TYPES,
                elem_id="translate-upload",
            )
            translate_button = gr.Button("Translate", variant="primary", elem_id="translate-button")
            translate_status = gr.Markdown(elem_id="translate-status", elem_classes="result-status")
            with gr.Row():
                inputs_gallery = gr.Gallery(label="Input", columns=2, height=420, elem_id="translate-input")
                results_gallery = gr.Gallery(
                    label="Result", columns=2, height=420, format="png", elem_id="translate-result"
                )
            downloads = gr.File(label="Download (one by one, or all as a zip)", interactive=False)

        with gr.Tab("Video", id="video"):
            if not video_available():
                gr.Markdown(f"Video needs PyAV, which is not installed: `{VIDEO_INSTALL_HINT}`.")
            video_generator = gr.Dropdown(
                choices=labels, value=labels[0] if labels else None, label="Generator"
            )
            gr.Markdown(
                "The sound is kept, and colours stay steady from frame to frame: the normalisation statistics "
                "are measured once over the clip and held for every frame."
            )
            video_file = gr.File(
                label="Video (MP4, MOV, MKV, WebM or GIF)",
                file_types=sorted(VIDEO_EXTENSIONS),
                elem_id="video-upload",
            )
            with gr.Row():
                video_size = gr.Number(0, label="Long side of the result in pixels (0: keep)", precision=0)
                video_format = gr.Radio(["mp4", "webm"], value="mp4", label="Result format")
                video_audio = gr.Checkbox(True, label="Keep the sound")
            video_button = gr.Button("Translate video", variant="primary", elem_id="video-button")
            video_status = gr.Markdown(elem_id="video-status", elem_classes="result-status")
            with gr.Row():
                video_input = gr.Video(label="Input", interactive=False, height=360)
                video_result = gr.Video(label="Result", interactive=False, height=360, elem_id="video-result")
            video_download = gr.File(label="Download", interactive=False, elem_id="video-download")

        with gr.Tab("Stylise", id="stylise"):
            with gr.Row():
                content_file = gr.File(
                    label="Content photo", file_types=FILE_TYPES, elem_id="stylise-content", height=120
                )
                style_files = gr.File(
                    label="Style images (one or more)",
                    file_count="multiple",
                    file_types=FILE_TYPES,
                    elem_id="stylise-styles",
                    height=120,
                )
            with gr.Row():
                size = gr.Slider(64, 2048, value=512, step=16, label="Size (long side of the result, px)")
                iterations = gr.Slider(
                    1, 1000, value=300, step=1, label="Iterations", elem_id="stylise-iterations"
                )
                style_weight = gr.Number(5.0, label="Style weight", minimum=0)
            with gr.Row():
                weights = gr.Textbox(
                    label="Style blend weights",
                    placeholder="empty: equal; or one number per style image, e.g. 2, 1",
                )
                colour = gr.Radio(["none", "luminance", "histogram"], value="none", label="Preserve colour")
                loss = gr.Radio([("Gram", "gram"), ("MMD", "mmd")], value="gram", label="Style loss")
                seed = gr.Number(0, label="Seed", precision=0)
            with gr.Row():
                stylise_button = gr.Button("Stylise", variant="primary", elem_id="stylise-button")
                stop_button = gr.Button("Stop", variant="stop")
            stylise_status = gr.Markdown(elem_id="stylise-status", elem_classes="result-status")
            with gr.Row():
                content_shown = gr.Image(
                    label="Content", interactive=False, height=420, elem_id="stylise-content-preview"
                )
                styles_shown = gr.Gallery(
                    label="Styles", columns=2, height=420, elem_id="stylise-styles-preview"
                )
                result = gr.Image(
                    label="Result", interactive=False, height=420, format="png", elem_id="stylise-result"
                )
            stylised_download = gr.File(label="Download", interactive=False)
            stylise_job = gr.State(None)

        refresh_button.click(refresh, None, [generator, info, video_generator], api_visibility="private")
        uploads.change(state.show_inputs, uploads, inputs_gallery, api_visibility="private")
        translate_button.click(
            translate,
            [generator, uploads],
            [inputs_gallery, results_gallery, downloads, translate_status],
            api_name="translate",
            concurrency_id=MODEL,
            concurrency_limit=1,
        )
        video_file.change(state.show_video, video_file, video_input, api_visibility="private")
        video_button.click(
            translate_video,
            [video_generator, video_file, video_size, video_format, video_audio],
            [video_result, video_download, video_status],
            api_name="translate_video",
            concurrency_id=MODEL,
            concurrency_limit=1,
        )
        content_file.change(state.show_content, content_file, content_shown, api_visibility="private")
        style_files.change(state.show_styles, style_files, styles_shown, api_visibility="private")
        stylise_button.click(
            stylise,
            [content_file, style_files, weights, size, iterations, style_weight, colour, loss, seed],
            [result, stylised_download, stylise_status, stylise_job],
            api_name="stylise",
            concurrency_id=MODEL,
            concurrency_limit=1,
        )
        stop_button.click(state.stop, stylise_job, None, api_visibility="private", queue=False)
    demo.queue(default_concurrency_limit=1, max_size=queue_size)
    demo.stylegan_state = state  # for the CLI's start-up message and for tests
    return demo


# What a browser may show inline from the app's file route; anything else (an uploaded .html or .svg, say) is
# served as a download, so an upload can never run script in the app's origin.
INLINE_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "video/mp4", "video/webm", "video/quicktime"}
    | {"audio/mpeg", "audio/mp4", "audio/aac", "audio/ogg", "audio/wav", "audio/webm"}
)


class FilesAsDownloads:
    """ASGI middleware for Gradio's `/file=` route: a response whose type is not in `INLINE_TYPES` becomes
    `application/octet-stream` with `Content-Disposition: attachment`; every one gets `nosniff`."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or "/file=" not in scope.get("path", ""):
            await self.app(scope, receive, send)
            return

        async def send_safely(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                kind = next((v for k, v in headers if k.lower() == b"content-type"), b"").decode("latin-1")
                if kind.split(";")[0].strip().lower() not in INLINE_TYPES:
                    drop = (b"content-type", b"content-disposition")
                    headers = [(k, v) for k, v in headers if k.lower() not in drop]
                    headers += [
                        (b"content-type", b"application/octet-stream"),
                        (b"content-disposition", b"attachment"),
                    ]
                headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_safely)


def launch(
    demo: gr.Blocks,
    *,
    host: str,
    port: int,
    workdir: Path,
    max_file_size: str | int,
    block: bool = True,
    quiet: bool = False,
) -> None:
    """Serve on `host:port` with no share link, no SSR server and nothing fetched from the internet."""
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        max_file_size=max_file_size,
        allowed_paths=[str(workdir)],
        prevent_thread_lock=not block,
        quiet=quiet,
        show_error=False,
        inbrowser=False,
        footer_links=["api", "settings"],
        app_kwargs={"middleware": [Middleware(FilesAsDownloads)]},
        theme=THEME,
        css=CSS,
    )

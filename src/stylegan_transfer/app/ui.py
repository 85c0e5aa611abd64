"""The Gradio page: Translate (trained generators on images), Video, and Stylise (the Gatys optimisation).

`build_app` lays out the page and wires it to the handlers of `app.handlers`; `stylegan_transfer.app.cli`
serves it (`launch`). Gradio keeps its uploads and outputs in `<workdir>/gradio` (GRADIO_TEMP_DIR, set here
before any component exists); our results go to `<workdir>/results/<job>`. The caller owns `workdir` and
removes it.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from stylegan_transfer.app.core import video_available
from stylegan_transfer.app.handlers import StyleganApp
from stylegan_transfer.app.limits import DEFAULT_MAX_PIXELS, TILE, TILE_ABOVE
from stylegan_transfer.app.stylise import VGGLoader
from stylegan_transfer.images import IMAGE_EXTENSIONS
from stylegan_transfer.inference.video import INSTALL_HINT as VIDEO_INSTALL_HINT
from stylegan_transfer.inference.video import VIDEO_EXTENSIONS

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
import gradio as gr  # after the analytics switch
from starlette.middleware import Middleware

MODEL = "model"  # the one concurrency group of everything that runs a network: one job at a time
FILE_TYPES = sorted(IMAGE_EXTENSIONS)
# System fonts only: the page loads nothing from the internet.
THEME = gr.themes.Soft(
    font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "sans-serif"],
    font_mono=["ui-monospace", "Menlo", "Consolas", "monospace"],
)
CSS = ".result-status p { margin: 0.2em 0; }"


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

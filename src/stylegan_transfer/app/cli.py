"""`stylegan-app`: the web app on this computer (Gradio, from the optional `[app]` extra).

    stylegan-app --models outputs/demo/<run>/export        # then open http://127.0.0.1:7860
    stylegan-app --models exports/ --vgg-weights vgg19.pth --port 8000
    stylegan-app --host 0.0.0.0                            # reachable from the network: say so explicitly

Listens on 127.0.0.1 unless --host names another address (a GRADIO_SERVER_NAME pointing elsewhere is
refused, not followed). Every upload and result lives in one temporary folder the app makes at start and
removes at exit. This module imports Gradio only when the app starts, so `--help` works without it.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from stylegan_transfer.app.limits import DEFAULT_MAX_PIXELS, MIN_SIDE, TILE, TILE_ABOVE
from stylegan_transfer.atomic import sweep_dead

LOOPBACK = "127.0.0.1"
WORKDIR_PREFIX = "stylegan-app-"
_WORKDIR = re.compile(rf"^{WORKDIR_PREFIX}(\d+)-")  # stylegan-app-<pid>-<random>: the owner's process id


def make_workdir() -> Path:
    """The app's temporary folder, named after this process so that a later start can tell it was left behind."""
    return Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-"))


def sweep_dead_workdirs(folder: str | os.PathLike) -> list[Path]:
    """Remove the app folders in `folder` whose process no longer runs (an app killed with `kill -9` cannot
    remove its own); folders of running apps and anything not named by `make_workdir` stay. Returns them."""
    return sweep_dead(folder, _WORKDIR, folders_only=True)


class HostError(ValueError):
    pass


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # another host name: may resolve to anything


def resolve_host(given: str | None, env: Mapping[str, str]) -> tuple[str, str | None]:
    """(address to listen on, a warning to print or None). Beyond loopback only by an explicit --host."""
    if given is None:
        inherited = env.get("GRADIO_SERVER_NAME", "").strip()
        if inherited and not is_loopback(inherited):
            raise HostError(
                f"GRADIO_SERVER_NAME={inherited} asks to listen beyond this computer; stylegan-app does that "
                f"only when --host says so (--host {inherited}). Unset GRADIO_SERVER_NAME or pass --host."
            )
        return LOOPBACK, None
    if is_loopback(given):
        return given, None
    return given, (
        f"listening on {given}: anyone who can reach this machine can use the app, its uploads and its "
        "processor; there is no login. Use the default (127.0.0.1) unless you mean it."
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stylegan-app",
        description="A web page for translating photos with trained generators and for Gatys style transfer.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--models", type=Path, help="folder whose .safetensors generator exports are offered")
    p.add_argument(
        "--host", default=None, help=f"address to listen on (default {LOOPBACK}: this computer only)"
    )
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:1, mps")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        help="default: bf16 on CUDA, fp16 on MPS, fp32 on CPU",
    )
    p.add_argument(
        "--vgg-weights",
        type=Path,
        help="local VGG19 weights for stylising (else the torch hub cache or the packaged VGG19)",
    )
    p.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="largest image accepted, in pixels"
    )
    p.add_argument("--max-upload-mb", type=float, default=100.0, help="largest upload accepted, in megabytes")
    p.add_argument(
        "--tile-above", type=int, default=TILE_ABOVE, help="tile images with a longer side than this"
    )
    p.add_argument("--tile", type=int, default=TILE, help="tile size for large images")
    p.add_argument("--queue-size", type=int, default=16, help="jobs that may wait for the one running")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def fail(message: str) -> int:
        print(f"stylegan-app: error: {message}", file=sys.stderr)
        return 2

    try:
        host, warning = resolve_host(args.host, os.environ)
    except HostError as err:
        return fail(str(err))
    if not 0 < args.port < 65536:
        return fail(f"--port {args.port} is not a port number (1-65535)")
    if args.max_pixels < MIN_SIDE * MIN_SIDE or args.max_upload_mb <= 0:
        return fail("--max-pixels and --max-upload-mb must be positive (and allow a 16×16 image)")
    if args.tile < 64 or args.tile_above < args.tile:
        return fail("--tile must be at least 64 and --tile-above at least --tile")
    if args.models is not None and not args.models.expanduser().is_dir():
        return fail(
            f"--models {args.models} is not a folder; give the folder holding your .safetensors exports"
        )
    if args.vgg_weights is not None and not args.vgg_weights.expanduser().is_file():
        return fail(f"--vgg-weights {args.vgg_weights} does not exist; give a VGG19 weights file")

    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        return fail(
            "the web app needs Gradio, which the base install leaves out: pip install 'stylegan-transfer[app]'"
        )
    if warning:
        print(f"stylegan-app: warning: {warning}", file=sys.stderr)

    for stale in sweep_dead_workdirs(tempfile.gettempdir()):
        print(f"stylegan-app: removed {stale}, left by an app that was killed", file=sys.stderr)
    workdir = make_workdir()
    # before Gradio is imported: some of its modules read these once
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "gradio")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Gradio imports matplotlib around every request; its font cache would otherwise go to ~/.cache
    os.environ.setdefault("MPLCONFIGDIR", str(workdir / "matplotlib"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` cleans up like Ctrl+C
    demo = None
    try:
        from stylegan_transfer.app.ui import build_app, launch

        demo = build_app(
            models_dir=args.models,
            workdir=workdir,
            device=args.device,
            precision=args.precision,
            vgg_weights=args.vgg_weights,
            max_pixels=args.max_pixels,
            tile_above=args.tile_above,
            tile=args.tile,
            queue_size=args.queue_size,
        )
        for problem in demo.stylegan_state.problems:
            print(f"stylegan-app: skipping {problem}", file=sys.stderr)
        try:
            launch(
                demo,
                host=host,
                port=args.port,
                workdir=workdir,
                max_file_size=int(args.max_upload_mb * 1024 * 1024),
                block=False,
            )
        except OSError as err:
            return fail(
                f"cannot listen on {host}:{args.port}: the port is busy or not ours ({err}); choose another --port"
            )
        # only now that it listens
        print(
            f"stylegan-app: open http://{'[' + host + ']' if ':' in host else host}:{args.port} "
            f"(temporary files in {workdir}, removed at exit; Ctrl+C stops)",
            file=sys.stderr,
            flush=True,
        )
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        return 0
    finally:
        if demo is not None:
            demo.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())

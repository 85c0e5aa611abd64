"""Stylisation for the page: the knobs checked, the Gatys optimisation run in a worker thread that reports
pictures on the way and stops when asked, and the VGG trunk loaded once, on first use.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn

from stylegan_transfer.app.core import AppInputError
from stylegan_transfer.app.limits import MIN_SIDE
from stylegan_transfer.images import to_image, to_tensor
from stylegan_transfer.nst.stylize import StyleSettings, StylizeError, stylize


class Cancelled(RuntimeError):
    """The person left or pressed stop while a job was running."""


def parse_weights(text: str | None, count: int) -> list[float] | None:
    """'2, 1' -> [2.0, 1.0]; empty -> None (equal weights). One non-negative number per style image."""
    if text is None or not text.strip():
        return None
    try:
        weights = [float(part) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError as err:
        raise AppInputError(f"style weights {text!r} are not numbers; write them like 2, 1.") from err
    if len(weights) != count:
        raise AppInputError(
            f"{len(weights)} style weights for {count} style image{'s' * (count != 1)}; "
            "give one number per style image, or leave the field empty for equal weights."
        )
    if any(w < 0 or w != w for w in weights) or sum(weights) <= 0:
        raise AppInputError("style weights must be zero or more, and not all zero.")
    return weights


@dataclass(frozen=True)
class StyleKnobs:
    size: int = 512  # long side of the result (never above the content's own)
    iterations: int = 300
    style_weight: float = 5.0
    preserve_color: str = "none"  # none | luminance | histogram
    style_loss: str = "gram"  # gram | mmd
    seed: int = 0


def style_settings(knobs: StyleKnobs, content_size: tuple[int, int]) -> StyleSettings:
    if knobs.iterations < 1:
        raise AppInputError("iterations must be at least 1.")
    if knobs.size < MIN_SIDE:
        raise AppInputError(f"the size must be at least {MIN_SIDE} pixels.")
    if not knobs.style_weight >= 0:
        raise AppInputError("the style weight must be zero or more.")
    long_side = min(int(knobs.size), max(content_size))
    return StyleSettings(
        style_weight=float(knobs.style_weight),
        iterations=int(knobs.iterations),
        scales=(long_side,),
        preserve_color=knobs.preserve_color,  # type: ignore[arg-type]
        style_loss=knobs.style_loss,  # type: ignore[arg-type]
        seed=int(knobs.seed),
    )


def result_size(content_size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(W, H) of a stylisation: the content's aspect with the given long side (exactly, not rounded to 4)."""
    width, height = content_size
    scale = long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass
class Step:
    """A progress report from a running stylisation; `image` is set for intermediate and final results."""

    done: int
    total: int
    image: Image.Image | None = None
    losses: dict[str, float] | None = None
    final: bool = False


def stylise_steps(
    content: Image.Image,
    styles: Sequence[Image.Image],
    features: nn.Sequential,
    knobs: StyleKnobs,
    *,
    style_weights: Sequence[float] | None = None,
    device: torch.device | str = "cpu",
    preview_every_s: float = 1.0,
    cancel: threading.Event | None = None,
) -> Iterator[Step]:
    """Run `nst.stylize` in a worker thread and yield its progress: a `Step` per iteration (with an
    intermediate picture at most every `preview_every_s` seconds), then the final `Step`. Closing the
    iterator early stops the optimisation at its next iteration."""
    if not styles:
        raise AppInputError("add at least one style image.")
    settings = style_settings(knobs, content.size)
    total = settings.iterations * len(settings.scales)
    target = result_size(content.size, settings.scales[-1])
    cancel = cancel or threading.Event()
    events: queue.Queue = queue.Queue()
    last_preview = [0.0]
    done = [0]

    def on_step(_scale: int, _iteration: int, image: torch.Tensor, losses: dict[str, float]) -> None:
        if cancel.is_set():
            raise Cancelled("stopped")
        done[0] += 1
        picture = None
        now = time.monotonic()
        if now - last_preview[0] >= preview_every_s and done[0] < total:
            last_preview[0] = now
            picture = to_image(image)
        events.put(Step(done[0], total, picture, dict(losses)))

    def work() -> None:
        try:
            x = to_tensor(content)[None]  # (1, 3, H, W)
            ys = [to_tensor(s)[None] for s in styles]
            result, history = stylize(
                x,
                ys,
                features,
                settings=settings,
                style_weights=style_weights,
                device=device,
                callback=on_step,
                progress=False,
            )
            picture = to_image(result)
            if picture.size != target:  # the optimisation works on multiples of 4 pixels
                picture = picture.resize(target, Image.Resampling.BICUBIC)
            events.put(Step(total, total, picture, dict(history[-1]) if history else None, True))
        except BaseException as err:  # handed to the consumer, which raises it in its own thread
            events.put(err)

    worker = threading.Thread(target=work, name="stylise", daemon=True)
    worker.start()
    try:
        while True:
            item = events.get()
            if isinstance(item, Cancelled):
                return
            if isinstance(item, StylizeError):
                raise AppInputError(str(item)) from item
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.final:
                return
    finally:
        cancel.set()  # a consumer that stops early (page closed, stop pressed) ends the worker too
        worker.join()


VGGLoader = Callable[[], nn.Sequential]


class LazyVGG:
    """Loads the VGG trunk on the first stylisation (the app starts without it) and keeps it."""

    def __init__(self, loader: VGGLoader) -> None:
        self._loader = loader
        self._features: nn.Sequential | None = None
        self._lock = threading.Lock()

    def __call__(self) -> nn.Sequential:
        with self._lock:
            if self._features is None:
                self._features = self._loader()
            return self._features

"""The official CycleGAN pretrained generators: download once, convert, cache, load by name.

    stylegan-download model --list           # every model, what it turns into what, training size
    stylegan-download model style_vangogh    # → <cache>/pretrained/style_vangogh.safetensors
    stylegan-translate --model style_vangogh --input photo.jpg --output out/

The CycleGAN authors publish their generators as plain PyTorch state dicts at
`<base>/<name>.pth`, base `http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models` (another host with
`--base-url` or STYLEGAN_PRETRAINED_URL). The download resumes after an interruption (HTTP Range on
`<name>.pth.part`) and checks the announced size; it is bounded per model (`PretrainedModel.max_mib`, a
little above the published file's size), read with `weights_only=True`, checked against the sha256 recorded
when that model was first converted (`digests`), bounded again by `official` (shapes and parameter count,
before anything is built), converted into our generator format with full metadata, written atomically to
`<cache>/pretrained/<name>.safetensors`, and the `.pth` removed. A refused download is deleted: nothing is
left in the cache. Every error is one line naming the file or URL and what to do. The cache folder is
`$STYLEGAN_TRANSFER_CACHE`, else `$XDG_CACHE_HOME/stylegan_transfer`, else `~/.cache/stylegan_transfer`.
STYLEGAN_TRANSFER_OFFLINE=1 never touches the network (the cache or a `.pth` placed by hand only).

`main` is the `stylegan-download` command: `data` (datasets, `datasets.main`) or `model` (these generators,
`model_main`); the older spellings without a subcommand still work, with one deprecation line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from stylegan_transfer import datasets
from stylegan_transfer.cache import CACHE_ENV, cache_dir
from stylegan_transfer.download import OFFLINE_ENV, DownloadError, download_file, offline
from stylegan_transfer.inference import digests
from stylegan_transfer.inference.generator_file import ExportError, load_generator, read_metadata
from stylegan_transfer.inference.official import OfficialFormatError, convert_official

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models"
BASE_URL_ENV = "STYLEGAN_PRETRAINED_URL"

CREDIT = "CycleGAN, Zhu, Park, Isola and Efros 2017 (github.com/junyanz/pytorch-CycleGAN-and-pix2pix)"


@dataclass(frozen=True)
class PretrainedModel:
    name: str  # file name on the host: <base>/<name>.pth
    source: str  # what the generator takes
    target: str  # what it makes
    dataset: str  # the official dataset it was trained on
    style: str  # our style name (configs/style) where one exists, else the model name
    train_size: int = 256  # crop size it was trained at (ResNet-9, 64 channels, instance norm)
    max_mib: int = (
        64  # bound on the download: the published ResNet-9 files hold 11.4 M float32 values (~44 MiB)
    )

    @property
    def direction(self) -> str:
        return f"{self.source} -> {self.target}"

    @property
    def max_bytes(self) -> int:
        return self.max_mib * 2**20


MODELS: dict[str, PretrainedModel] = {
    model.name: model
    for model in (
        PretrainedModel("style_vangogh", "photo", "Van Gogh painting", "vangogh2photo", "vangogh"),
        PretrainedModel("style_monet", "photo", "Monet painting", "monet2photo", "monet"),
        PretrainedModel("style_cezanne", "photo", "Cézanne painting", "cezanne2photo", "cezanne"),
        PretrainedModel("style_ukiyoe", "photo", "Ukiyo-e print", "ukiyoe2photo", "ukiyoe"),
        PretrainedModel("monet2photo", "Monet painting", "photo", "monet2photo", "monet"),
        PretrainedModel("horse2zebra", "horse", "zebra", "horse2zebra", "horse2zebra"),
        PretrainedModel("zebra2horse", "zebra", "horse", "horse2zebra", "horse2zebra"),
        PretrainedModel("apple2orange", "apple", "orange", "apple2orange", "apple2orange"),
        PretrainedModel("orange2apple", "orange", "apple", "apple2orange", "apple2orange"),
        PretrainedModel(
            "summer2winter_yosemite",
            "Yosemite in summer",
            "Yosemite in winter",
            "summer2winter_yosemite",
            "summer2winter",
        ),
        PretrainedModel(
            "winter2summer_yosemite",
            "Yosemite in winter",
            "Yosemite in summer",
            "summer2winter_yosemite",
            "summer2winter",
        ),
        PretrainedModel("sat2map", "aerial photo", "map", "maps", "maps"),
        PretrainedModel("map2sat", "map", "aerial photo", "maps", "maps"),
        PretrainedModel("facades_photo2label", "facade photo", "facade label map", "facades", "facades"),
        PretrainedModel("facades_label2photo", "facade label map", "facade photo", "facades", "facades"),
        PretrainedModel(
            "cityscapes_photo2label", "street photo", "Cityscapes label map", "cityscapes", "cityscapes"
        ),
        PretrainedModel(
            "cityscapes_label2photo", "Cityscapes label map", "street photo", "cityscapes", "cityscapes"
        ),
        PretrainedModel(
            "iphone2dslr_flower",
            "iPhone flower photo",
            "DSLR flower photo (shallow depth of field)",
            "iphone2dslr_flower",
            "iphone2dslr",
        ),
    )
}


class PretrainedError(ExportError):
    """A pretrained generator could not be found, downloaded or converted; the message says what to do."""


def base_url(override: str | None = None) -> str:
    return (override or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")


def is_pretrained_name(name: object) -> bool:
    return isinstance(name, str) and name in MODELS


def model_path(name: str, cache: str | Path | None = None) -> Path:
    """Where the converted generator `name` lives: `<cache>/pretrained/<name>.safetensors`."""
    root = Path(cache).expanduser() if cache is not None else cache_dir()
    return root / "pretrained" / f"{name}.safetensors"


def _model(name: str) -> PretrainedModel:
    if name not in MODELS:
        raise PretrainedError(
            f"unknown pretrained model {name!r}; choose one of: {', '.join(MODELS)} "
            "(`stylegan-download model --list`)"
        )
    return MODELS[name]


def _manual_hint(original: Path) -> str:
    """The short form of the manual route (the whole one is in `--help` and the README)."""
    return f"to install it by hand, put that file at {original} (see `stylegan-download model --help`)."


MANUAL_ROUTE = (
    "Without internet access on this machine: download <base>/<name>.pth on another machine and put it at "
    "<cache>/pretrained/<name>.pth here (it is checked and converted on first use); or run `stylegan-download "
    "model NAME` on a machine with internet access and copy the <name>.safetensors it writes to "
    "<cache>/pretrained/ here."
)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def _usable(path: Path) -> bool:
    try:
        read_metadata(path)
    except ExportError:
        return False
    return True


def download_pretrained(
    name: str,
    *,
    cache: str | Path | None = None,
    url: str | None = None,
    timeout: float = 10.0,
    progress: bool = True,
    keep_original: bool = False,
) -> Path:
    """Make `<cache>/pretrained/<name>.safetensors` exist (download + convert once); returns its path."""
    model = _model(name)
    target = model_path(name, cache)
    if target.is_file() and _usable(target):
        return target
    url = url or f"{base_url()}/{name}.pth"
    original = target.with_suffix(".pth")
    hint = _manual_hint(original)
    placed_by_hand = original.exists()
    if not placed_by_hand:
        if offline():
            raise PretrainedError(
                f"{name} is not in the cache and {OFFLINE_ENV} is set: {url} is needed; {hint}"
            )
        try:
            download_file(url, original, timeout=timeout, progress=progress, max_bytes=model.max_bytes)
        except DownloadError as err:
            raise PretrainedError(f"{_one_line(err)} Without network, {hint}") from None
    try:
        _check_original(name, model, original, root=target.parent.parent)
        convert_official(
            original,
            target,
            name=name,
            style=model.style,
            domain_a=model.source,
            domain_b=model.target,
            role="g_ab",
            train_size=model.train_size,
            source_url=url,
            extra={
                "dataset": model.dataset,
                "credit": CREDIT,
                "source_sha256": digests.sha256_file(original),
            },
        )
    except (OfficialFormatError, MemoryError, RuntimeError, OSError) as err:
        reason = _one_line(err) if isinstance(err, OfficialFormatError) else f"{original}: {_one_line(err)}"
        if placed_by_hand:
            raise PretrainedError(f"{reason} It was placed by hand and is kept; replace it.") from None
        original.unlink(missing_ok=True)  # a refused download would otherwise be reused on every run
        raise PretrainedError(f"{reason} Deleted it; rerun to download again.") from None
    digests.record(target.parent.parent, name, digests.sha256_file(original))
    if not keep_original:
        original.unlink(missing_ok=True)
    log.info("%s ready in %s", name, target)
    return target


def _check_original(name: str, model: PretrainedModel, original: Path, *, root: Path) -> None:
    """Refuse a `.pth` larger than the model's bound or unlike the one first converted (OfficialFormatError)."""
    size = original.stat().st_size
    if size > model.max_bytes:
        raise OfficialFormatError(
            f"{original} was refused: {size:,} bytes, more than the {model.max_mib} MiB {name} can be."
        )
    expected = digests.recorded(root, name)
    if expected is not None and digests.sha256_file(original) != expected:
        raise OfficialFormatError(
            f"{original} was refused: its sha256 differs from the {expected[:16]}… recorded when {name} was "
            f"first converted (see {root / digests.FILE_NAME})."
        )


def resolve(name_or_path: str | Path, **kwargs) -> Path:
    """The generator file `name_or_path` stands for: an existing file is itself (it wins over a model of the same
    name); a pretrained model's name is its converted file, downloaded and converted on first use (`kwargs` go to
    `download_pretrained`); anything else is returned as a path, for its reader to name."""
    if Path(name_or_path).exists() or not is_pretrained_name(str(name_or_path)):
        return Path(name_or_path)
    return download_pretrained(str(name_or_path), **kwargs)


def load_pretrained(name: str, *, device: str = "cpu", **kwargs) -> nn.Module:
    """The pretrained generator `name` (downloaded and converted on first use), in eval mode."""
    return load_generator(download_pretrained(name, **kwargs), device=device)


def listing() -> str:
    rows = [f"{'name':24s} {'size':>5s}  direction"]
    rows += [f"{m.name:24s} {m.train_size:5d}  {m.direction}" for m in MODELS.values()]
    return "\n".join(rows)


def model_main(argv: Sequence[str] | None = None) -> int:
    """`stylegan-download model`: download and convert pretrained generators by name."""
    parser = argparse.ArgumentParser(
        prog="stylegan-download model",
        description="Download the official CycleGAN generators and convert them into the cache "
        "(<cache>/pretrained/<name>.safetensors).",
        epilog=f"{MANUAL_ROUTE} <base> is {DEFAULT_BASE_URL}; <cache> is ${CACHE_ENV}, else "
        "$XDG_CACHE_HOME/stylegan_transfer, else ~/.cache/stylegan_transfer.",
    )
    parser.add_argument(
        "--pretrained", action="store_true", help=argparse.SUPPRESS
    )  # the old spelling's flag
    parser.add_argument("names", nargs="*", help="model names, e.g. style_vangogh horse2zebra")
    parser.add_argument("--all", action="store_true", help="every model")
    parser.add_argument("--list", action="store_true", help="list the models and exit")
    parser.add_argument("--cache-dir", type=Path, default=None, help=f"cache root (default ${CACHE_ENV})")
    parser.add_argument(
        "--base-url", default=None, help=f"model host (default ${BASE_URL_ENV} or the official one)"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="network timeout in seconds (default 10)")
    parser.add_argument("--keep-original", action="store_true", help="keep <name>.pth beside the conversion")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.list:
        print(listing())
        print(f"(trained with the official CycleGAN code: ResNet-9, 64 channels; credit: {CREDIT})")
        return 0
    names = list(MODELS) if args.all else args.names
    if not names:
        parser.error("name at least one model (or --all, --list)")
    try:
        for name in names:
            _model(name)
    except PretrainedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        try:
            path = download_pretrained(
                name,
                cache=args.cache_dir,
                url=f"{base_url(args.base_url)}/{name}.pth",
                timeout=args.timeout,
                keep_original=args.keep_original,
            )
            print(f"{name}: {path}")
        except PretrainedError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


COMMANDS = {
    "data": "CycleGAN datasets into <data-dir>/<name>/{trainA,trainB,testA,testB}",
    "model": "the official CycleGAN generators, converted into the cache",
}


def _command_parser() -> argparse.ArgumentParser:
    """The `stylegan-download` parser, for its help and usage only: the subcommands parse their own options."""
    parser = argparse.ArgumentParser(
        prog="stylegan-download",
        description="Download CycleGAN datasets (`data`) or the official pretrained generators (`model`).",
        epilog="`stylegan-download data --help` and `stylegan-download model --help` show each command's "
        "options. The older spellings `stylegan-download NAME ...` and `stylegan-download --pretrained NAME "
        "...` still work and print a deprecation note.",
    )
    commands = parser.add_subparsers(title="commands", metavar="{data,model}")
    for name, text in COMMANDS.items():
        commands.add_parser(name, help=text, add_help=False)
    return parser


def _deprecated(command: str, argv: list[str]) -> None:
    """The one stderr line an old spelling prints: the same request in the new spelling."""
    print(
        f"stylegan-download: note: this spelling is deprecated; use `{shlex.join(['stylegan-download', command, *argv])}`",
        file=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`stylegan-download data ...` (datasets) or `stylegan-download model ...` (pretrained generators).

    Old spellings keep working, each with one deprecation line on stderr: `--pretrained` anywhere means
    `model` (the flag dropped), any other arguments mean `data`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["data"]:
        return datasets.main(argv[1:])
    if argv[:1] == ["model"]:
        return model_main(argv[1:])
    if not argv or argv[0] in ("-h", "--help"):
        parser = _command_parser()
        if not argv:
            parser.error("choose a command: data (datasets) or model (pretrained generators)")
        parser.print_help()
        return 0
    if "--pretrained" in argv:
        rest = [arg for arg in argv if arg != "--pretrained"]
        _deprecated("model", rest)
        return model_main(rest)
    _deprecated("data", argv)
    return datasets.main(argv)


if __name__ == "__main__":
    sys.exit(main())

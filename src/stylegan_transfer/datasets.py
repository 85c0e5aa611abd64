"""Download the standard CycleGAN datasets into `data/<name>/{trainA,trainB,testA,testB}`.

stylegan-download vangogh2photo                  # or a style name: stylegan-download vangogh
stylegan-download --all --data-dir /big/disk/data
stylegan-download --list
stylegan-download --pretrained --list            # pretrained generators: inference/pretrained.py

The archives are the ones the official CycleGAN download script fetches
(`<base>/<name>.zip`, base `http://efrosgans.eecs.berkeley.edu/cyclegan/datasets`; override it with
`--base-url` or the STYLEGAN_DATASETS_URL environment variable, e.g. for a mirror).

Steps, each safe to interrupt and re-run: download to `<data_dir>/<name>.zip.part` (an interrupted
transfer resumes with an HTTP Range request) → rename to `<name>.zip` once complete → integrity check
(size announced by the server, sha256 where known, zip CRC test, CycleGAN layout) → extract into a
temporary folder → rename it to `<data_dir>/<name>`. A dataset already in place is left alone.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import logging
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets"
BASE_URL_ENV = "STYLEGAN_DATASETS_URL"
DATA_DIR_ENV = "STYLEGAN_DATA_DIR"
CHUNK = 1 << 20
SPLITS = ("trainA", "trainB", "testA", "testB")


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # archive name: <base>/<name>.zip
    style: str  # configs/style/<style>.yaml
    domain_a: str  # what trainA holds
    domain_b: str  # what trainB holds
    sha256: str | None = None  # verified when known; the official host publishes no checksums


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("vangogh2photo", "vangogh", "Van Gogh paintings", "photos"),
        DatasetInfo("monet2photo", "monet", "Monet paintings", "photos"),
        DatasetInfo("cezanne2photo", "cezanne", "Cézanne paintings", "photos"),
        DatasetInfo("ukiyoe2photo", "ukiyoe", "Ukiyo-e prints", "photos"),
        DatasetInfo("horse2zebra", "horse2zebra", "horses", "zebras"),
        DatasetInfo("summer2winter_yosemite", "summer2winter", "Yosemite in summer", "Yosemite in winter"),
        DatasetInfo("apple2orange", "apple2orange", "apples", "oranges"),
        DatasetInfo("iphone2dslr_flower", "iphone2dslr", "iPhone flower photos", "DSLR flower photos"),
        DatasetInfo("maps", "maps", "aerial photos", "maps"),
        DatasetInfo("facades", "facades", "facade label maps", "facade photos"),
    )
}
STYLE_TO_DATASET = {info.style: info.name for info in DATASETS.values()}


# ----------------------------------------------------------------------------- folder layout
DEMO_ROOT = Path(__file__).resolve().parent / "assets" / "demo"  # the embedded demo set (CycleGAN layout)


class DataError(RuntimeError):
    """A dataset folder is missing, empty or unusable; the message says which and what to do."""


def domain_folders(
    *,
    root: str | Path | None,
    dir_a: str | Path | None = None,
    dir_b: str | Path | None = None,
    split: str = "train",
    swap_domains: bool = False,
) -> tuple[Path, Path]:
    """The folders of our domains A and B for `split` ("train" or "test").

    Explicit `dir_a`/`dir_b` win; else `root/{split}A` and `root/{split}B`. `swap_domains` exchanges the two,
    for archives that keep our domain A in their B folders (vangogh2photo holds the paintings in trainA).
    """
    if dir_a is not None or dir_b is not None:
        if dir_a is None or dir_b is None:
            raise DataError("give both data.dir_a and data.dir_b (or neither, and data.root)")
        folder_a, folder_b = Path(dir_a).expanduser(), Path(dir_b).expanduser()
    elif root is None:
        raise DataError(
            "no data given: set data.root to a CycleGAN-layout folder or data.dir_a and data.dir_b"
        )
    else:
        root = Path(root).expanduser()
        folder_a, folder_b = root / f"{split}A", root / f"{split}B"
    return (folder_b, folder_a) if swap_domains else (folder_a, folder_b)


class DownloadError(RuntimeError):
    """A download or archive failed; the message names the URL and how to place the data by hand."""


def resolve_name(name: str) -> str:
    """A dataset name (`vangogh2photo`) or a style name (`vangogh`) → the dataset name."""
    if name in DATASETS:
        return name
    if name in STYLE_TO_DATASET:
        return STYLE_TO_DATASET[name]
    raise DownloadError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")


def base_url(override: str | None = None) -> str:
    return (override or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV, "data"))


def is_complete(folder: Path) -> bool:
    """A usable CycleGAN layout: trainA/ and trainB/ exist and are not empty."""
    return all((folder / split).is_dir() and any((folder / split).iterdir()) for split in SPLITS[:2])


def _manual_hint(url: str, archive: Path, target: Path) -> str:
    return (
        f"To install it by hand: download {url} on a machine with internet access and put it at "
        f"{archive} (then run this command again to check and extract it), or unzip it yourself so that "
        f"{target}/trainA and {target}/trainB exist."
    )


def _fetch(url: str, part: Path, *, timeout: float, progress: bool) -> int | None:
    """Download `url` into `part`, resuming from its current size. Returns the total size if announced."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "stylegan-transfer"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left to fetch: the .part file is already whole
            total = err.headers.get("Content-Range", "").rpartition("/")[2]
            return int(total) if total.isdigit() else offset
        raise
    with response:
        length = response.headers.get("Content-Length")
        if offset and response.status == 206:
            total_text = response.headers.get("Content-Range", "").rpartition("/")[2]
            total = int(total_text) if total_text.isdigit() else None
            mode = "ab"
            log.info("resuming %s at %d bytes", url, offset)
        else:  # a fresh transfer (or a server that ignores Range): start over
            offset, mode = 0, "wb"
            total = int(length) if length and length.isdigit() else None
        with (
            open(part, mode) as out,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
                disable=not progress,
            ) as bar,
        ):
            while chunk := response.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
    return total


def download_file(
    url: str, target: Path, *, timeout: float = 10.0, progress: bool = True, hint: str = ""
) -> Path:
    """Download `url` to `target` through `<target>.part` (an interrupted transfer resumes with HTTP Range),
    check the size the server announced, then rename. A `target` already in place is left alone.

    Raises DownloadError naming the URL, what was kept, and `hint` (how to place the file by hand).
    """
    target = Path(target)
    if target.exists():
        return target
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s → %s", url, target)
    try:
        total = _fetch(url, part, timeout=timeout, progress=progress)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", None) or err
        kept = f" ({part.stat().st_size} bytes kept in {part}; rerun to resume)" if part.exists() else ""
        raise DownloadError(f"could not download {url}: {reason}{kept}.\n{hint}") from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"download of {url} stopped at {size} of {total} bytes; rerun to resume.\n{hint}")
    os.replace(part, target)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def check_archive(archive: Path, *, sha256: str | None = None) -> str:
    """Raise DownloadError unless `archive` is an intact zip holding trainA/ and trainB/.

    Returns the folder prefix inside the archive under which trainA/ ... live ('' or 'name/').
    """
    if sha256 is not None and _sha256(archive) != sha256.lower():
        raise DownloadError(f"{archive}: sha256 does not match the expected {sha256}")
    try:
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise DownloadError(f"{archive} is not a valid zip archive ({err})") from None
    if bad is not None:
        raise DownloadError(f"{archive} is corrupt: member {bad} fails its CRC check")
    for name in names:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts:
            raise DownloadError(f"{archive} holds an unsafe path {name!r}; refusing to extract it")
    for prefix in {"", *(PurePosixPath(n).parts[0] + "/" for n in names if "/" in n)}:
        if all(any(n.startswith(f"{prefix}{split}/") for n in names) for split in SPLITS[:2]):
            return prefix
    raise DownloadError(f"{archive} does not contain trainA/ and trainB/ folders (not a CycleGAN dataset)")


def _extract(archive: Path, prefix: str, target: Path) -> None:
    """Extract `archive` (its `prefix` folder) into a temp folder beside `target`, then rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if m.filename.startswith(prefix)]
            for member in tqdm(
                members, desc=f"extract {target.name}", unit="file", disable=len(members) < 50
            ):
                zf.extract(member, tmp)
        source = tmp / prefix if prefix else tmp
        if target.exists():  # an earlier incomplete copy (no trainA/trainB): replace it
            shutil.rmtree(target)
        os.replace(source, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    target: str | Path | None = None,
    url: str | None = None,
    timeout: float = 10.0,
    keep_archive: bool = False,
    progress: bool = True,
) -> Path:
    """Make `<data_dir>/<name>` (or `target`) hold the dataset; returns that folder. Idempotent."""
    info = DATASETS[resolve_name(name)]
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    target = Path(target).expanduser() if target is not None else data_dir / info.name
    if is_complete(target):
        log.info("%s already in %s", info.name, target)
        return target
    url = url or f"{base_url()}/{info.name}.zip"
    archive = target.parent / f"{info.name}.zip"

    if not archive.exists():
        download_file(
            url, archive, timeout=timeout, progress=progress, hint=_manual_hint(url, archive, target)
        )
    try:
        prefix = check_archive(archive, sha256=info.sha256)
    except DownloadError as err:
        archive.unlink(missing_ok=True)  # a corrupt archive would otherwise be reused on every run
        raise DownloadError(
            f"{err}; deleted it, rerun to download again.\n{_manual_hint(url, archive, target)}"
        ) from None
    _extract(archive, prefix, target)
    if not keep_archive:
        archive.unlink(missing_ok=True)
    log.info("%s ready in %s", info.name, target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stylegan-download",
        description="Download CycleGAN datasets into <data-dir>/<name>/{trainA,trainB,testA,testB}.",
    )
    parser.add_argument("names", nargs="*", help="dataset or style names, e.g. vangogh2photo or vangogh")
    parser.add_argument("--all", action="store_true", help="all datasets of the collection")
    parser.add_argument("--list", action="store_true", help="list the datasets and exit")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help=f"where datasets go (default ${DATA_DIR_ENV} or ./data)"
    )
    parser.add_argument(
        "--base-url", default=None, help=f"archive host (default ${BASE_URL_ENV} or the official one)"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="network timeout in seconds (default 10)")
    parser.add_argument("--keep-archive", action="store_true", help="keep <name>.zip after extracting")
    parser.add_argument(
        "--pretrained",
        action="store_true",
        help="pretrained generators instead of datasets: `stylegan-download --pretrained --list` shows them",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.pretrained:  # the stylegan-download entry point (inference.pretrained:main) handles this flag
        print(
            "error: run `stylegan-download --pretrained ...` or `python -m stylegan_transfer.inference.pretrained "
            "...` for pretrained generators",
            file=sys.stderr,
        )
        return 2

    if args.list:
        for info in DATASETS.values():
            print(f"{info.name:24s} style={info.style:14s} A: {info.domain_a}  B: {info.domain_b}")
        return 0
    names = list(DATASETS) if args.all else args.names
    if not names:
        parser.error("name at least one dataset (or --all, --list)")
    try:
        resolved = [resolve_name(n) for n in names]
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = 0
    for name in resolved:
        try:
            path = download_dataset(
                name,
                args.data_dir,
                url=f"{base_url(args.base_url)}/{name}.zip",
                timeout=args.timeout,
                keep_archive=args.keep_archive,
            )
            print(f"{name}: {path}")
        except DownloadError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

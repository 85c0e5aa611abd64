"""Download the standard CycleGAN datasets into `data/<name>/{trainA,trainB,testA,testB}`.

stylegan-download data vangogh2photo             # or a style name: stylegan-download data vangogh
stylegan-download data --all --data-dir /big/disk/data
stylegan-download data --list
stylegan-download model --list                   # pretrained generators: inference/pretrained.py

The archives are the ones the official CycleGAN download script fetches
(`<base>/<name>.zip`, base `http://efrosgans.eecs.berkeley.edu/cyclegan/datasets`; override it with
`--base-url` or the STYLEGAN_DATASETS_URL environment variable, e.g. for a mirror).

Steps, each safe to interrupt and re-run: download to `<data_dir>/<name>.zip.part` (`download.download_file`:
an interrupted transfer resumes with an HTTP Range request) → rename to `<name>.zip` once complete →
integrity check (size announced by the server, sha256 where known, size bounds, compression ratio, zip CRC
test, CycleGAN layout) → free disk space check → extract into a temporary folder → rename it to
`<data_dir>/<name>`.

Safety: a dataset already in place is left alone; a target folder that exists and is not empty is never
written into or deleted (the download is refused before it starts, naming the folder); only files this
tool created (the .part file, a downloaded archive, its temporary folders) are ever removed. The archive
host serves plain HTTP without checksums, so every archive is bounded: at most `DatasetInfo.max_mib` to
download and to extract, at most `MAX_RATIO` times larger extracted than compressed (zip bombs).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from stylegan_transfer.atomic import sweep_stale
from stylegan_transfer.download import (
    MIB,
    DownloadError,
    SizeLimitError,  # noqa: F401  (re-exported: the names datasets has always offered)
    check_free_space,
    download_file,
    sha256_file,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets"
BASE_URL_ENV = "STYLEGAN_DATASETS_URL"
DATA_DIR_ENV = "STYLEGAN_DATA_DIR"
SPLITS = ("trainA", "trainB", "testA", "testB")
# Zip bombs: refuse an archive whose content is more than this many times its compressed size (overall, or
# for any member above 1 MiB). The datasets are JPEGs, which do not compress: their ratio is about 1.
MAX_RATIO = 20


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # archive name: <base>/<name>.zip
    style: str  # configs/style/<style>.yaml
    domain_a: str  # what trainA holds
    domain_b: str  # what trainB holds
    sha256: str | None = None  # verified when known; the official host publishes no checksums
    max_mib: int = (
        1024  # upper bound (MiB) on the archive and on its extracted content (the real ones: < 0.5 GiB)
    )

    @property
    def max_bytes(self) -> int:
        return self.max_mib * MIB


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        # max_mib: about twice the archive sizes the host lists (≈ 300 MB for the painting sets)
        DatasetInfo("vangogh2photo", "vangogh", "Van Gogh paintings", "photos", max_mib=640),
        DatasetInfo("monet2photo", "monet", "Monet paintings", "photos", max_mib=640),
        DatasetInfo("cezanne2photo", "cezanne", "Cézanne paintings", "photos", max_mib=640),
        DatasetInfo("ukiyoe2photo", "ukiyoe", "Ukiyo-e prints", "photos", max_mib=640),
        DatasetInfo("horse2zebra", "horse2zebra", "horses", "zebras", max_mib=320),
        DatasetInfo(
            "summer2winter_yosemite", "summer2winter", "Yosemite in summer", "Yosemite in winter", max_mib=320
        ),
        DatasetInfo("apple2orange", "apple2orange", "apples", "oranges", max_mib=256),
        DatasetInfo(
            "iphone2dslr_flower", "iphone2dslr", "iPhone flower photos", "DSLR flower photos", max_mib=768
        ),
        DatasetInfo("maps", "maps", "aerial photos", "maps", max_mib=1024),
        DatasetInfo("facades", "facades", "facade label maps", "facade photos", max_mib=128),
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


def check_target(target: Path, name: str) -> None:
    """Refuse (DownloadError, one line) unless `target` is missing or an empty folder: never write into,
    or delete, a folder holding files this tool did not put there."""
    if not target.exists() and not target.is_symlink():
        return
    if not target.is_dir():
        raise DownloadError(
            f"{target} exists and is not a folder; move it away or choose another data folder for {name}."
        )
    try:
        entries = sorted(p.name for p in target.iterdir())
    except OSError as err:
        raise DownloadError(f"cannot read the target folder {target} ({err.strerror or err}).") from None
    if entries:
        shown = ", ".join(entries[:4]) + (f" and {len(entries) - 4} more" if len(entries) > 4 else "")
        raise DownloadError(
            f"{target} exists and holds files that are not a complete {name} dataset ({shown}); nothing was "
            f"changed. Move them away, or download into a new or empty folder (e.g. {target / name})."
        )


def _check_sizes(archive: Path, members: list[zipfile.ZipInfo], max_bytes: int | None) -> int:
    """Bound the extracted size (total and ratio, from the headers zipfile enforces while reading)."""
    total = sum(m.file_size for m in members)
    if max_bytes is not None and total > max_bytes:
        raise DownloadError(
            f"{archive} would extract to {total / MIB:.1f} MiB, more than the {max_bytes // MIB} MiB this "
            "dataset can be; refusing to extract it."
        )
    packed = max(1, archive.stat().st_size)
    if total > MAX_RATIO * packed:
        raise DownloadError(
            f"{archive} would extract to {total / packed:.0f} times its size (limit {MAX_RATIO}); "
            "refusing to extract a likely zip bomb."
        )
    for member in members:
        if member.file_size > MIB and member.file_size > MAX_RATIO * max(1, member.compress_size):
            raise DownloadError(
                f"{archive}: member {member.filename} expands {member.file_size / max(1, member.compress_size):.0f}"
                f" times (limit {MAX_RATIO}); refusing to extract a likely zip bomb."
            )
    return total


def check_archive(archive: Path, *, sha256: str | None = None, max_bytes: int | None = None) -> str:
    """Raise DownloadError unless `archive` is an intact zip holding trainA/ and trainB/, extracting to at
    most `max_bytes` and at most MAX_RATIO times its size.

    Returns the folder prefix inside the archive under which trainA/ ... live ('' or 'name/').
    """
    if sha256 is not None and sha256_file(archive) != sha256.lower():
        raise DownloadError(f"{archive}: sha256 does not match the expected {sha256}")
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            _check_sizes(archive, members, max_bytes)  # before testzip decompresses anything
            bad = zf.testzip()
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as err:
        raise DownloadError(f"{archive} is not a valid zip archive ({err})") from None
    if bad is not None:
        raise DownloadError(f"{archive} is corrupt: member {bad} fails its CRC check")
    for name in names:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or "\\" in name:
            raise DownloadError(f"{archive} holds an unsafe path {name!r}; refusing to extract it")
    for prefix in {"", *(PurePosixPath(n).parts[0] + "/" for n in names if "/" in n)}:
        if all(any(n.startswith(f"{prefix}{split}/") for n in names) for split in SPLITS[:2]):
            return prefix
    raise DownloadError(f"{archive} does not contain trainA/ and trainB/ folders (not a CycleGAN dataset)")


def _extract(archive: Path, prefix: str, target: Path) -> None:
    """Extract `archive` (its `prefix` folder) into a new temporary folder beside `target`, then rename it
    to `target` (which must be missing or an empty folder: the rename fails on anything else)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target.parent)  # temporary folders of extractions that were killed
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.infolist() if m.filename.startswith(prefix)]
        check_free_space(target.parent, sum(m.file_size for m in members), what=f"extracting {archive.name}")
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
        try:
            for member in tqdm(
                members, desc=f"extract {target.name}", unit="file", disable=len(members) < 50
            ):
                zf.extract(member, tmp)
            source = tmp / prefix if prefix else tmp
            try:
                os.replace(source, target)  # atomic; refuses a target that is not an empty folder
            except OSError as err:
                raise DownloadError(
                    f"could not move the extracted dataset to {target} ({err.strerror or err}); "
                    "it must be missing or an empty folder."
                ) from None
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
    """Make `<data_dir>/<name>` (or `target`) hold the dataset; returns that folder. Idempotent.

    Refuses (DownloadError) a target folder that exists and is not empty, before downloading anything.
    """
    info = DATASETS[resolve_name(name)]
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    target = Path(target).expanduser() if target is not None else data_dir / info.name
    if is_complete(target):
        log.info("%s already in %s", info.name, target)
        return target
    check_target(target, info.name)
    url = url or f"{base_url()}/{info.name}.zip"
    archive = target.parent / f"{info.name}.zip"

    downloaded = not archive.exists()  # an archive placed by hand is the user's: never deleted
    if downloaded:
        download_file(
            url,
            archive,
            timeout=timeout,
            progress=progress,
            hint=_manual_hint(url, archive, target),
            max_bytes=info.max_bytes,
        )
    try:
        prefix = check_archive(archive, sha256=info.sha256, max_bytes=info.max_bytes)
    except DownloadError as err:
        if downloaded:  # a corrupt archive would otherwise be reused on every run
            archive.unlink(missing_ok=True)
            raise DownloadError(
                f"{err}; deleted it, rerun to download again. {_manual_hint(url, archive, target)}"
            ) from None
        raise DownloadError(f"{err}; it was placed there by hand: replace or remove it.") from None
    _extract(archive, prefix, target)
    if downloaded and not keep_archive:
        archive.unlink(missing_ok=True)
    log.info("%s ready in %s", info.name, target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """`stylegan-download data` (the arguments after `data`)."""
    parser = argparse.ArgumentParser(
        prog="stylegan-download data",
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
    parser.add_argument("--pretrained", action="store_true", help=argparse.SUPPRESS)  # see below
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.pretrained:  # the stylegan-download entry point (inference.pretrained:main) sends it to `model`
        print("error: pretrained generators are `stylegan-download model ...`", file=sys.stderr)
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

"""The one download loop: HTTP to a file, resumable, bounded, with progress; and the checksums of files.

Used by dataset archives (`datasets`) and pretrained generators (`inference.pretrained`). Invariants: a
transfer goes to `<target>.part` and is renamed to `<target>` only once its size equals the size the server
announced; an interrupted transfer resumes with an HTTP Range request; a transfer over its size bound is
stopped and its `.part` deleted; the disk keeps `DISK_MARGIN` free; every failure is a `DownloadError`
naming the URL. `STYLEGAN_TRANSFER_OFFLINE` tells callers never to touch the network (`offline()`).
Plain standard library and tqdm: no training stack.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MIB = 1 << 20
DISK_MARGIN = 256 * MIB  # free space to leave on the disk after a download or an extraction
OFFLINE_ENV = "STYLEGAN_TRANSFER_OFFLINE"


class DownloadError(RuntimeError):
    """A download or archive failed; the message names the URL and how to place the data by hand."""


class SizeLimitError(DownloadError):
    """A download is larger than the file it stands for can be."""


def offline() -> bool:
    """True when `STYLEGAN_TRANSFER_OFFLINE` is set to 1, true, yes or on: use local files only."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def sha256_file(path: Path) -> str:
    """The hex sha256 of the file at `path`, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def check_free_space(folder: Path, needed: int, *, what: str) -> None:
    """Refuse when the disk holding `folder` would keep less than DISK_MARGIN free after `needed` bytes."""
    free = shutil.disk_usage(folder).free
    if needed + DISK_MARGIN > free:
        raise DownloadError(
            f"not enough free disk space in {folder} for {what}: needs {needed // MIB + 1} MiB plus a margin "
            f"of {DISK_MARGIN // MIB} MiB, {free // MIB} MiB free. Free some space or choose another folder."
        )


def _fetch(
    url: str, part: Path, *, timeout: float, progress: bool, max_bytes: int | None = None
) -> int | None:
    """Download `url` into `part`, resuming from its current size. Returns the total size if announced.

    Stops with SizeLimitError when the announced or received size exceeds `max_bytes`."""
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
        if max_bytes is not None and total is not None and total > max_bytes:
            raise SizeLimitError(
                f"{url} announces {total} bytes, more than the {max_bytes // MIB} MiB allowed for this download; "
                "refusing to download it (check the URL or mirror)."
            )
        check_free_space(part.parent, (total or 0) - offset, what=f"downloading {url}")
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
            received = offset
            while chunk := response.read(CHUNK):
                received += len(chunk)
                if max_bytes is not None and received > max_bytes:
                    raise SizeLimitError(
                        f"{url} sent more than the {max_bytes // MIB} MiB allowed for this download; stopped "
                        "and deleted the partial download (check the URL or mirror)."
                    )
                out.write(chunk)
                bar.update(len(chunk))
    return total


def download_file(
    url: str,
    target: Path,
    *,
    timeout: float = 10.0,
    progress: bool = True,
    hint: str = "",
    max_bytes: int | None = None,
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
        total = _fetch(url, part, timeout=timeout, progress=progress, max_bytes=max_bytes)
    except SizeLimitError:
        part.unlink(missing_ok=True)  # over the size bound: nothing worth resuming
        raise
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", None) or err
        kept = f" ({part.stat().st_size} bytes kept in {part}; rerun to resume)" if part.exists() else ""
        raise DownloadError(f"could not download {url}: {reason}{kept}.\n{hint}") from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"download of {url} stopped at {size} of {total} bytes; rerun to resume.\n{hint}")
    os.replace(part, target)
    return target

"""The one way this package replaces a file: write a temporary file beside it, fsync, rename.

A kill at any moment leaves either the old file or the new one, never a partial file; the temporary file is
removed when writing fails. Temporary names are `.<stem>.tmp-<pid><suffix>` in the target's folder (same filesystem,
so the rename is atomic).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def temporary_name(path: str | os.PathLike) -> Path:
    """`.<stem>.tmp-<pid><suffix>` beside `path`: hidden, unique per process, same suffix (image writers
    pick the format from it)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yields a temporary path to write to; on success it replaces `path` (parents are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))

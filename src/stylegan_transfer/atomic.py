"""The one way this package replaces a file: write a temporary file beside it, fsync, rename.

A kill at any moment leaves either the old file or the new one, never a partial file; the temporary file is
removed when writing fails. Temporary names are `.<stem>.tmp-<pid><suffix>` in the target's folder (same filesystem,
so the rename is atomic).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

_TMP_PID = re.compile(r"^\..*\.tmp-(\d+)")  # `.<stem>.tmp-<pid>...`: our temporary names, see temporary_name


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


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this machine (a process we may not signal counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files (and folders) this package left in `folder` when a process was killed:
    names `.<stem>.tmp-<pid>...` whose process no longer runs. Nothing else is touched. Returns them."""
    return sweep_dead(folder, _TMP_PID)


def sweep_dead(
    folder: str | os.PathLike, owner: re.Pattern[str], *, folders_only: bool = False
) -> list[Path]:
    """Remove the entries of `folder` whose name `owner` matches with the id (its group 1) of a process that no
    longer runs (never this one's); with `folders_only`, only real folders, no files or links. Returns them."""
    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = owner.match(entry.name)
        if match is None or int(match.group(1)) == os.getpid() or pid_alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        elif folders_only:
            continue
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed

"""The sha256 of each pretrained file, recorded when it is first converted (trust on first use).

The official host serves plain HTTP and publishes no checksums, so the first download of a model is trusted
and its digest kept in `<cache>/pretrained_sha256.json`; every later download or hand-placed copy of that
model must have the same digest, else it is refused. The file is written atomically; a damaged one is
treated as empty (the next conversion records the digests again).
"""

from __future__ import annotations

import json
from pathlib import Path

from stylegan_transfer.atomic import write_text
from stylegan_transfer.download import sha256_file

__all__ = ["FILE_NAME", "record", "recorded", "sha256_file"]

FILE_NAME = "pretrained_sha256.json"


def _read(root: Path) -> dict[str, str]:
    try:
        data = json.loads((root / FILE_NAME).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def recorded(root: Path, name: str) -> str | None:
    """The digest recorded for model `name` under the cache `root`, or None."""
    return _read(root).get(name)


def record(root: Path, name: str, digest: str) -> None:
    digests = _read(root)
    if digests.get(name) != digest:
        write_text(root / FILE_NAME, json.dumps({**digests, name: digest}, indent=1, sort_keys=True) + "\n")

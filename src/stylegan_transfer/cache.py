"""Where downloaded and converted files live: `$STYLEGAN_TRANSFER_CACHE`, else `$XDG_CACHE_HOME/stylegan_transfer`
(`~/.cache/stylegan_transfer`). Metric weights and converted pretrained generators share it."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "STYLEGAN_TRANSFER_CACHE"


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stylegan_transfer"

"""The app's default bounds, importable without torch (the CLI parses its arguments before loading anything)."""

MIN_SIDE = 16  # smaller images are refused (a 1×1 photo has nothing to translate)
DEFAULT_MAX_PIXELS = 50_000_000  # 50 megapixels: an 8K photo fits, a decompression bomb does not
TILE_ABOVE = 2048  # images with a longer side than this are translated in tiles ...
TILE = 1024  # ... of this size

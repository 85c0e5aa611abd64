"""Unpaired image samples: deterministic augmentation, robust loading, and stateless sampling.

Randomness is stateless: every training sample is addressed by a key `epoch * length + position`, and the
A index, the random B index, crops and flips all derive from `(seed, epoch, position)`. The same run
therefore sees the same samples whatever the number of workers, and a resumed run continues exactly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from stylegan_transfer.datasets import DataError
from stylegan_transfer.images import (
    load_rgb,
    to_tensor,
)
from stylegan_transfer.networks import pad_to_multiple

log = logging.getLogger(__name__)

Preprocess = Literal["resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none"]
PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")


# Modes whose variable output sizes cannot be stacked into batches larger than one.
VARIABLE_SIZE_MODES = ("scale_width", "none")


@dataclass(frozen=True)
class Augment:
    """Training preprocessing, as the CycleGAN reference names it.

    resize_and_crop: resize to load_size², random crop_size² crop.  crop: random crop at full size.
    scale_width: width -> load_size (height in proportion, at least crop_size).  scale_width_and_crop:
    that, then a random crop.  none: keep the size, pad to a multiple of 4 (`networks.pad_to_multiple`, the
    one border mode of the package).  Images smaller than a crop are first enlarged to fit it.  `flip`:
    random horizontal flip.  Returns (3, H, W) in [-1, 1].
    """

    preprocess: Preprocess = "resize_and_crop"
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True

    def __post_init__(self) -> None:
        if self.preprocess not in PREPROCESS_MODES:
            raise ValueError(f"unknown preprocess {self.preprocess!r}; choose one of {PREPROCESS_MODES}")
        if self.crop_size < 4 or self.load_size < 4:
            raise ValueError("load_size and crop_size must be at least 4")
        if self.preprocess in ("resize_and_crop", "scale_width_and_crop") and self.load_size < self.crop_size:
            raise ValueError(f"load_size ({self.load_size}) must be >= crop_size ({self.crop_size})")

    @property
    def draft_size(self) -> int | None:
        """The smallest side JPEG decoding may shrink to without changing the result's resolution."""
        if self.preprocess in ("resize_and_crop", "scale_width", "scale_width_and_crop"):
            return self.load_size
        return None  # crop / none work at the original resolution

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        w, h = image.size
        if self.preprocess == "resize_and_crop":
            new_w, new_h = self.load_size, self.load_size
        elif self.preprocess.startswith("scale_width"):
            new_w, new_h = self.load_size, max(self.crop_size, round(h * self.load_size / w))
        else:  # crop / none: original resolution
            new_w, new_h = w, h
        if self.preprocess in ("resize_and_crop", "crop", "scale_width_and_crop"):
            if new_w < self.crop_size or new_h < self.crop_size:  # small images: enlarge so the crop fits
                scale = self.crop_size / min(new_w, new_h)
                new_w, new_h = math.ceil(new_w * scale), math.ceil(new_h * scale)
            x = int(rng.integers(0, new_w - self.crop_size + 1))
            y = int(rng.integers(0, new_h - self.crop_size + 1))
            if (new_w, new_h) == (w, h):
                image = image.crop((x, y, x + self.crop_size, y + self.crop_size))
            else:  # resize only the cropped region: same pixels as resize-then-crop, ~30% less work
                sx, sy = w / new_w, h / new_h
                box = (x * sx, y * sy, (x + self.crop_size) * sx, (y + self.crop_size) * sy)
                image = image.resize((self.crop_size, self.crop_size), Image.BICUBIC, box=box)
        elif (new_w, new_h) != (w, h):  # scale_width / none
            image = image.resize((new_w, new_h), Image.BICUBIC)
        x = to_tensor(image)  # (3, H, W)
        if self.preprocess in VARIABLE_SIZE_MODES:  # the generator's two downsamplings need multiples of 4
            x = pad_to_multiple(x, 4)
        if self.flip and rng.random() < 0.5:
            x = x.flip(-1)
        return x


class BadFiles:
    """Which files failed to decode, shared by every DataLoader worker and the validation set: each bad
    file is named once per run (one warning), and skipped by all at once. The flags live in a shared-memory
    tensor, so workers see each other's findings."""

    def __init__(self, files: Sequence[Path]) -> None:
        self.index = {path: i for i, path in enumerate(dict.fromkeys(files))}
        self.flags = torch.zeros(max(1, len(self.index)), dtype=torch.uint8).share_memory_()

    def __contains__(self, path: Path) -> bool:
        i = self.index.get(path)
        return i is not None and bool(self.flags[i])

    def report(self, path: Path, err: BaseException) -> None:
        """Mark `path` bad; warn unless another worker already did."""
        i = self.index.get(path)
        if i is not None:
            if self.flags[i]:
                return
            self.flags[i] = 1
        log.warning("skipping %s: %s: %s (using the next image instead)", path, type(err).__name__, err)


def load_first_good(
    files: Sequence[Path], index: int, bad: BadFiles, *, draft_size: int | None
) -> tuple[Path, Image.Image]:
    """Image `index`, or (if it fails to decode) the next good one: one bad file never stops training.
    Raises DataError (one line) when no file of the folder decodes."""
    for attempt in range(len(files)):
        path = files[(index + attempt) % len(files)]
        if path in bad:
            continue
        try:
            return path, load_rgb(path, draft_size=draft_size)
        except Exception as err:  # damaged data raises OSError, SyntaxError, zlib/struct errors ...
            bad.report(path, err)
    raise DataError(
        f"no image of {files[0].parent} could be decoded ({len(files)} files, each named in a warning above); "
        "replace the damaged files or point the data settings at another folder."
    )


class UnpairedDataset(Dataset):
    """Training samples {"a", "b"} addressed by key = epoch * len(self) + position."""

    def __init__(
        self,
        files_a: Sequence[Path],
        files_b: Sequence[Path],
        *,
        augment: Augment,
        seed: int = 0,
        max_dataset_size: int | None = None,
        bad_files: BadFiles | None = None,
    ) -> None:
        if not files_a or not files_b:
            raise DataError("both domains need at least one image")
        # max_dataset_size: the first files of each domain, as in the CycleGAN reference (a subset of the
        # data, not a number of samples per epoch); an epoch visits every file of the larger domain once
        limit = max_dataset_size if max_dataset_size is not None else None
        self.files_a, self.files_b = list(files_a)[:limit], list(files_b)[:limit]
        self.augment, self.seed = augment, seed
        self.length = max(len(self.files_a), len(self.files_b))
        self._perm_epoch, self._perm = -1, np.arange(0)
        self._bad = bad_files if bad_files is not None else BadFiles([*self.files_a, *self.files_b])

    def __len__(self) -> int:
        return self.length

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.files_a))
            self._perm_epoch = epoch
        return self._perm

    def _load(self, files: list[Path], index: int, rng: np.random.Generator) -> torch.Tensor:
        _, image = load_first_good(files, index, self._bad, draft_size=self.augment.draft_size)
        return self.augment(image, rng)

    def __getitem__(self, key: int) -> dict[str, torch.Tensor]:
        epoch, position = divmod(int(key), self.length)
        index_a = int(self._permutation(epoch)[position % len(self.files_a)])
        rng = np.random.default_rng([self.seed, epoch, position])
        index_b = int(rng.integers(len(self.files_b)))
        rng_a, rng_b = rng.spawn(2)
        return {"a": self._load(self.files_a, index_a, rng_a), "b": self._load(self.files_b, index_b, rng_b)}


class UnpairedSampler(Sampler[int]):
    """Yields keys `epoch * length + position`; shards positions over `world_size` ranks (DDP)."""

    def __init__(self, length: int, *, rank: int = 0, world_size: int = 1) -> None:
        self.length, self.rank, self.world_size = length, rank, world_size
        self.epoch = 0
        self.skip_once = 0  # positions of this rank already trained in the epoch being resumed

    def set_epoch(self, epoch: int) -> None:  # called by Lightning before every epoch
        self.epoch = epoch

    def __len__(self) -> int:  # the whole epoch, also when resuming in its middle (Lightning counts on it)
        return math.ceil(self.length / self.world_size)

    def __iter__(self) -> Iterator[int]:
        base = self.epoch * self.length
        start, self.skip_once = self.skip_once, 0
        for j in range(start, len(self)):
            yield base + (self.rank + j * self.world_size) % self.length


class ResumableLoader(DataLoader):
    """The training DataLoader with Lightning's `state_dict` / `load_state_dict` interface, so that resuming
    from a checkpoint written in the middle of an epoch (interrupted.ckpt) skips exactly the batches that
    epoch already trained instead of starting its data over. `progress()` gives {"epoch", "completed"}."""

    def __init__(self, *args, progress: Callable[[], dict[str, int]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._progress = progress

    def state_dict(self) -> dict[str, int]:
        return dict(self._progress())

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Called by Lightning only when resuming inside an epoch, before the epoch's iterator is made."""
        sampler = self.sampler
        if isinstance(sampler, UnpairedSampler) and self.batch_size:
            completed = int(state.get("completed", 0))
            if 0 < completed < len(self):
                sampler.set_epoch(int(state.get("epoch", sampler.epoch)))
                sampler.skip_once = completed * self.batch_size


class PairedEvalDataset(Dataset):
    """Fixed validation pairs (a_i, b_i): deterministic square resize, no augmentation.

    A file that fails to decode is replaced by the next good one of its domain (warned once).
    """

    def __init__(
        self,
        files_a: Sequence[Path],
        files_b: Sequence[Path],
        *,
        size: int,
        count: int,
        bad_files: BadFiles | None = None,
    ) -> None:
        self.all_a, self.all_b = list(files_a), list(files_b)
        self.files_a, self.files_b = self.all_a[:count], self.all_b[:count]
        self.size = size
        self._bad = bad_files if bad_files is not None else BadFiles([*self.all_a, *self.all_b])

    def __len__(self) -> int:
        return max(len(self.files_a), len(self.files_b))

    def _load(self, files: list[Path], index: int) -> torch.Tensor:
        _, image = load_first_good(files, index, self._bad, draft_size=self.size)
        return to_tensor(image.resize((self.size, self.size), Image.BICUBIC))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "a": self._load(self.all_a, index % len(self.files_a)),
            "b": self._load(self.all_b, index % len(self.files_b)),
        }

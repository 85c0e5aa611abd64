"""History buffer of generated images (Shrivastava et al. 2017), as used by CycleGAN.

The pool owns its random generator so that its choices do not depend on (or disturb) the global RNG,
and `state_dict()` captures both the stored images and the generator state for exact resume.
"""

from __future__ import annotations

import torch


class ImagePool:
    def __init__(self, size: int = 50, *, seed: int = 0) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []  # each (C, H, W), detached
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H, W)
        """Return a batch drawn half from the history and half from `images` once the pool is full."""
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.generator).item() < 0.5:
                index = int(torch.randint(self.size, (), generator=self.generator))
                out.append(self.images[index].to(image.device, image.dtype))
                self.images[index] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict:
        stored = torch.stack([i.cpu() for i in self.images]) if self.images else torch.empty(0)
        return {"size": self.size, "images": stored, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        self.size = int(state["size"])
        self.images = [image.to(device) for image in state["images"]]
        self.generator.set_state(state["generator"])

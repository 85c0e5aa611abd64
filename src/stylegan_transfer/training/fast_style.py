"""Fast feed-forward style transfer (Johnson et al. 2016) as a LightningModule.

One transformation network `g_ab` learns to paint content photos (domain A) in the style of ONE image:
perceptual content loss against its own input, Gram style loss against the fixed style image, total
variation. No discriminators, no cycle. Its generator exports and translates exactly like a CycleGAN `g_ab`
(`inference.export.write_generators`, the same safetensors format and CLI).

Like `stylize` and CycleGAN's perceptual terms, each term is divided by a constant of its target
(`perceptual.PerceptualLoss`), so the weights do not depend on which VGG weights are in use. All `lambda_*` weights are applied in `_losses` and nowhere else. VGG and the style image are
loaded in `setup()` (tests may assign `module.perceptual.vgg` and `module.style_image_tensor` before fitting).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import nn

from stylegan_transfer import losses
from stylegan_transfer.images import load_rgb, resize_long_side, to_tensor
from stylegan_transfer.networks import build_generator, init_weights
from stylegan_transfer.perceptual import STYLE_LAYERS, PerceptualLoss
from stylegan_transfer.training.optim import linear_decay_factor
from stylegan_transfer.training.settings import check_training_settings


class FastStyleModule(L.LightningModule):
    """A `contract.TranslationModel`: one generator (g_ab: photo → painting), trained without a moving average."""

    generator_roles = ("g_ab",)
    fallback_metric = "val/loss"  # model selection's metric when KID cannot be computed (training/run.py)
    uses_ema = False

    def __init__(
        self,
        *,
        style_image: str | None = None,
        style_size: int | None = 256,
        generator: dict[str, Any] | None = None,
        init_type: str = "normal",
        init_gain: float = 0.02,
        lambda_content: float = 1.0,
        lambda_style: float = 5.0,
        lambda_tv: float = 0.01,
        content_layers: Sequence[str] = ("relu2_2",),
        style_layers: Sequence[str] = STYLE_LAYERS,
        style_layer_weights: Sequence[float] | None = None,
        vgg_weights: str | None = None,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epochs_constant: int = 2,
        epochs_decay: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        generator = dict(generator or {"arch": "johnson"})
        check_training_settings(
            generator=generator,
            lr=lr,
            betas=(beta1, beta2),
            lambdas={"lambda_content": lambda_content, "lambda_style": lambda_style, "lambda_tv": lambda_tv},
            epochs=(epochs_constant, epochs_decay),
            init_gain=init_gain,
        )
        self.save_hyperparameters()
        gen_kwargs = dict(generator)
        self.generator_arch = gen_kwargs.pop("arch")
        self.generator_kwargs = dict(gen_kwargs)
        self.g_ab = build_generator(self.generator_arch, **gen_kwargs)
        init_weights(self.g_ab, init_type=init_type, gain=init_gain)
        self.perceptual = PerceptualLoss(
            content_layers=content_layers,
            style_layers=style_layers,
            style_layer_weights=style_layer_weights,
            weights_path=vgg_weights,
        )
        self.style_image_tensor: torch.Tensor | None = None  # (1, 3, H, W) in [-1, 1]
        self._grams: list[torch.Tensor] | None = None

    # ----------------------------------------------------------------------------- VGG and style target
    def setup(self, stage: str) -> None:
        hp = self.hparams
        self.perceptual.load().to(self.device)
        if self.style_image_tensor is None:
            if hp.style_image is None:
                raise ValueError("no style image: set model.style_image=/path/to/painting.jpg")
            image = to_tensor(load_rgb(hp.style_image)).unsqueeze(0)  # (1, 3, H, W)
            self.style_image_tensor = resize_long_side(image, hp.style_size) if hp.style_size else image

    def _target_grams(self) -> list[torch.Tensor]:
        if self._grams is None or self._grams[0].device != self.device:
            assert self.style_image_tensor is not None
            with torch.no_grad():
                _, style_feats = self.perceptual.features(self.style_image_tensor.to(self.device))
            self._grams = self.perceptual.grams(style_feats)
        return self._grams

    # ----------------------------------------------------------------------------- losses
    def _losses(self, real_a: torch.Tensor) -> dict[str, torch.Tensor]:
        hp, p = self.hparams, self.perceptual
        fake_b = self.g_ab(real_a)  # (B, 3, H, W)
        content_fb, style_fb = p.features(fake_b)
        with torch.no_grad():
            content_ra, _ = p.features(real_a)
        content = p.content(content_fb, content_ra)
        style = p.style(style_fb, self._target_grams())
        tv = losses.total_variation(fake_b)
        loss = hp.lambda_content * content + hp.lambda_style * style + hp.lambda_tv * tv
        return {"loss": loss, "content": content, "style": style, "tv": tv}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        terms = self._losses(batch["a"])  # only the photos; batch["b"] (the style folder) is unused
        self.log_dict(
            {f"train/{k}": v for k, v in terms.items()}, on_step=True, batch_size=batch["a"].shape[0]
        )
        self.log(
            "train/lr", self.optimizers().param_groups[0]["lr"], on_step=False, on_epoch=True, sync_dist=True
        )
        return terms["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        terms = self._losses(batch["a"])
        self.log_dict(
            {f"val/{k}": v for k, v in terms.items()},
            batch_size=batch["a"].shape[0],
            sync_dist=True,
            prog_bar=True,
        )

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.Adam(self.g_ab.parameters(), lr=hp.lr, betas=(hp.beta1, hp.beta2))
        rule = functools.partial(
            linear_decay_factor, epochs_constant=hp.epochs_constant, epochs_decay=hp.epochs_decay
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ----------------------------------------------------------------------------- evaluation
    def evaluated_generator(self, role: str) -> nn.Module:
        """g_ab, the only generator (no moving average)."""
        if role not in self.generator_roles:
            raise KeyError(f"FastStyleModule has no generator {role!r}; it has {self.generator_roles}")
        return self.g_ab

    @torch.no_grad()
    def translate_batch(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """The sample grid's six columns: photo | styled | styled twice | style-folder image | styled | twice."""
        fake_b = self.g_ab(real_a)
        fake_a = self.g_ab(real_b)
        return {
            "real_a": real_a,
            "fake_b": fake_b,
            "rec_a": self.g_ab(fake_b),
            "real_b": real_b,
            "fake_a": fake_a,
            "rec_b": self.g_ab(fake_a),
        }

    # ----------------------------------------------------------------------------- checkpoint state
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = self.perceptual.strip_state(checkpoint["state_dict"], "perceptual.")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.perceptual.restore_state(checkpoint["state_dict"], "perceptual.")

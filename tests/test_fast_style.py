"""Fast feed-forward style (Johnson et al.): network, module, Hydra experiment, export."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

import stylegan_transfer.perceptual as perceptual
from helpers import (
    TINY_J,
    quiet_trainer,
    reference_content,
    reference_style,
    reference_tv,
    tiny_datamodule,
    tiny_vgg,
    write_images,
)
from stylegan_transfer.inference.generator_file import load_generator, read_metadata
from stylegan_transfer.layers import ResizeConv2d
from stylegan_transfer.networks import GENERATORS, JohnsonGenerator, build_generator
from stylegan_transfer.training.fast_style import FastStyleModule
from stylegan_transfer.training.run import train


def reference_terms(module: FastStyleModule, generator: torch.nn.Module, photos: torch.Tensor) -> dict:
    """Content, style, TV and their λ-weighted sum, from the definitions (helpers), for `generator(photos)`."""
    hp, vgg = module.hparams, module.perceptual.vgg  # returns [relu2_2 (content), *style layers]
    n_style = len(hp.style_layers)
    with torch.no_grad():
        styled = generator(photos)
        f_styled, f_photos, f_style = (vgg(x) for x in (styled, photos, module.style_image_tensor))
    terms = {
        "content": reference_content(f_styled[:1], f_photos[:1]),
        "style": reference_style(f_styled[1:], f_style[1:], [1 / n_style] * n_style),
        "tv": reference_tv(styled),
    }
    terms["loss"] = (
        hp.lambda_content * terms["content"] + hp.lambda_style * terms["style"] + hp.lambda_tv * terms["tv"]
    )
    return {key: value.item() for key, value in terms.items()}


def test_johnson_network_layout_and_range():
    assert GENERATORS["johnson"] is JohnsonGenerator
    net = build_generator("johnson")  # paper widths 32/64/128, 5 residual blocks: about 1.7 M parameters
    assert 1.5e6 < sum(p.numel() for p in net.parameters()) < 1.8e6
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].kernel_size == (9, 9) and convs[-1].kernel_size == (9, 9)
    assert [c.stride for c in convs[1:3]] == [(2, 2), (2, 2)]
    assert sum(isinstance(m, ResizeConv2d) for m in net.modules()) == 2  # nearest x2 + conv, in one layer
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules())
    out = build_generator("johnson", **{k: v for k, v in TINY_J.items() if k != "arch"})(
        torch.randn(2, 3, 36, 44) * 3
    )
    assert out.shape == (2, 3, 36, 44) and out.abs().max() <= 1


def test_training_steps_lower_the_perceptual_loss(tmp_path):
    photos = write_images(tmp_path / "photos", 2, size=(32, 32), seed=1)
    style = write_images(tmp_path / "style", 1, size=(32, 32), seed=2, tint=(200, 0, 0))[0]
    module = FastStyleModule(style_image=str(style), style_size=32, generator=TINY_J, lr=0.02)
    module.perceptual.vgg = perceptual.VGGFeatures(tiny_vgg(), ["relu2_2", *module.hparams.style_layers])
    module.setup("fit")
    batch = torch.stack([perceptual_input(p) for p in photos])  # (2, 3, 32, 32)
    terms = {key: value.item() for key, value in module._losses(batch).items()}
    assert terms == pytest.approx(reference_terms(module, module.g_ab, batch), rel=1e-4)
    before = terms["loss"]
    optimizer = module.configure_optimizers()["optimizer"]
    for _ in range(15):
        optimizer.zero_grad()
        module._losses(batch)["loss"].backward()
        optimizer.step()
    after = module._losses(batch)["loss"].item()
    assert after < 0.8 * before
    assert not hasattr(module, "g_ba") and not hasattr(module, "d_a")


def perceptual_input(path) -> torch.Tensor:
    from stylegan_transfer.images import load_rgb, to_tensor

    return to_tensor(load_rgb(path))


def test_fast_style_experiment_composes_and_instantiates_without_weights(compose_cfg, tmp_path):
    style = write_images(tmp_path / "paintings", 1, seed=2)[0]
    cfg = compose_cfg("experiment=fast_style", f"model.style_image={style}")
    assert cfg.model._target_ == "stylegan_transfer.training.fast_style.FastStyleModule"
    assert cfg.data.dir_b == str(tmp_path / "paintings")  # the style image's own folder
    module = instantiate(cfg.model)
    assert (
        isinstance(module, FastStyleModule) and module.perceptual.vgg is None
    )  # nothing loaded before setup()
    assert module.generator_arch == "johnson" and module.generator_kwargs["channels"] == 4


@pytest.mark.slow
def test_train_py_fast_style_exports_a_generator_like_cyclegans(compose_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(perceptual, "load_vgg_features", tiny_vgg)
    photos = tmp_path / "photos"
    write_images(photos, 3, size=(40, 36), seed=1)
    style = write_images(tmp_path / "paintings", 1, seed=2, tint=(0, 0, 200))[0]
    cfg = compose_cfg(
        "experiment=fast_style",
        f"data.dir_a={photos}",
        f"model.style_image={style}",
        "model.style_size=32",
        "trainer.max_epochs=1",
    )
    metrics = train(cfg)
    assert "val/loss" in metrics and metrics["optimized_metric"] == metrics["val/loss"]
    export = tmp_path / "run" / "export"
    assert sorted(p.name for p in export.iterdir()) == ["g_ab.safetensors"]
    meta = read_metadata(export / "g_ab.safetensors")
    assert meta["arch"] == "johnson" and meta["role"] == "g_ab"
    generator = load_generator(export / "g_ab.safetensors")
    out = generator(torch.zeros(1, 3, 32, 32))
    assert out.shape == (1, 3, 32, 32)
    assert (tmp_path / "run" / "samples" / "latest.png").is_file()


def test_missing_style_image_is_a_clear_error():
    module = FastStyleModule(generator=TINY_J)
    module.perceptual.vgg = torch.nn.Identity()
    with pytest.raises(ValueError, match=r"model\.style_image"):
        module.setup("fit")


def test_trainer_fit_with_injected_vgg(tmp_path):
    """Two steps through Lightning; each step's logged terms equal the definitions computed here from that
    step's batch and the generator as it was before the step (non-default λ, so a misweighted term shows)."""
    write_images(tmp_path / "a", 2, size=(32, 32), seed=1)
    style = write_images(tmp_path / "b", 1, size=(32, 32), seed=2)[0]
    module = FastStyleModule(
        style_image=str(style),
        style_size=32,
        generator=TINY_J,
        lambda_content=1.5,
        lambda_style=4.0,
        lambda_tv=0.2,
    )
    module.perceptual.vgg = perceptual.VGGFeatures(tiny_vgg(), ["relu2_2", *module.hparams.style_layers])
    before = {k: v.clone() for k, v in module.g_ab.state_dict().items()}
    seen: list[tuple[torch.nn.Module, torch.Tensor]] = []  # (generator before the step, photos)
    logged: list[dict[str, float]] = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((copy.deepcopy(pl_module.g_ab), batch["a"].clone()))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            names = ("loss", "content", "style", "tv")
            logged.append({k: float(trainer.callback_metrics[f"train/{k}"]) for k in names})

    data = tiny_datamodule(dir_a=str(tmp_path / "a"), dir_b=str(tmp_path / "b"))
    trainer = quiet_trainer(default_root_dir=tmp_path, max_steps=2, limit_val_batches=0, callbacks=[Record()])
    trainer.fit(module, datamodule=data)
    assert any(not torch.equal(before[k], v) for k, v in module.g_ab.state_dict().items())
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert len(seen) == len(logged) == 2
    for step, ((generator, photos), got) in enumerate(zip(seen, logged, strict=True)):
        assert got == pytest.approx(reference_terms(module, generator, photos), rel=1e-4), f"step {step}"

"""The model contract (training/contract.py): every model satisfies it, the plumbing relies on nothing else,
and a new model that implements only the contract trains, samples, selects and exports through `train()`."""

from __future__ import annotations

import typing
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from torch.utils.data import DataLoader

from helpers import TINY_G, batch_list, quiet_trainer, tiny_vgg
from helpers.training import data_overrides
from stylegan_transfer.inference.generator_file import load_generator, read_metadata
from stylegan_transfer.networks import build_generator
from stylegan_transfer.perceptual import VGGFeatures
from stylegan_transfer.training import contract
from stylegan_transfer.training.contract import (
    GRID_COLUMNS,
    ModelContractError,
    TranslationModel,
    check_model,
)
from stylegan_transfer.training.errors import ConfigError
from stylegan_transfer.training.run import train

# Every model a config file offers: (overrides, generator roles, fallback metric).
MODELS = {
    "cyclegan": ((), ("g_ab", "g_ba"), "val/cycle_l1"),
    "cut": (("model=cut",), ("g_ab",), "val/nce"),
    "fastcut": (("model=fastcut",), ("g_ab",), "val/nce"),
    "fast_style": (("experiment=fast_style",), ("g_ab",), "val/loss"),
}


def _model(compose_cfg, overrides: tuple[str, ...]) -> L.LightningModule:
    """The model a composed debug=tiny config builds, with a tiny VGG (when it has perceptual terms) and a tiny
    style image (fast style), so that validation runs without downloaded weights."""
    module = instantiate(compose_cfg(*overrides).model)
    perceptual = getattr(module, "perceptual", None)  # test set-up only: which models have VGG terms
    if perceptual is not None:
        perceptual.vgg = VGGFeatures(tiny_vgg(), [*perceptual.content_layers, *perceptual.style_layers])
    if hasattr(module, "style_image_tensor"):
        module.style_image_tensor = torch.rand(1, 3, 32, 32) * 2 - 1
    return module


def test_the_member_list_is_the_protocol():
    hints = typing.get_type_hints(TranslationModel)
    methods = {n for n, v in vars(TranslationModel).items() if not n.startswith("_") and callable(v)}
    properties = {n for n, v in vars(TranslationModel).items() if isinstance(v, property)}
    assert set(contract.MEMBERS) == set(hints) | methods | properties
    assert len(contract.MEMBERS) == len(set(contract.MEMBERS))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_satisfies_the_contract(name, compose_cfg):
    overrides, roles, fallback = MODELS[name]
    module = _model(compose_cfg, overrides)
    assert isinstance(module, TranslationModel) and check_model(module) is module
    assert module.generator_roles == roles and module.fallback_metric == fallback
    for role in roles:
        generator = module.evaluated_generator(role)
        assert generator is getattr(module, role)  # no EMA in the recipes: the trained network
        assert type(generator) is type(build_generator(module.generator_arch, **module.generator_kwargs))
    assert module.uses_ema is False
    with pytest.raises(KeyError):
        module.evaluated_generator("g_xy")
    assert module.hparams.generator == {"arch": module.generator_arch, **module.generator_kwargs}

    (batch,) = batch_list(1, batch=2)
    module.eval()
    grid = module.translate_batch(batch["a"], batch["b"])
    assert list(grid) == list(GRID_COLUMNS)
    assert all(image.shape == batch["a"].shape and not image.requires_grad for image in grid.values())
    logged = quiet_trainer(limit_val_batches=1).validate(
        module, DataLoader([batch], batch_size=None), verbose=False
    )[0]
    assert fallback in logged  # what model selection falls back to is a metric the model logs


def test_the_ema_is_what_the_plumbing_sees(compose_cfg):
    for overrides in ((), ("model=cut",)):
        module = _model(compose_cfg, (*overrides, "model.ema_decay=0.9"))
        assert check_model(module).uses_ema is True
        for role in module.generator_roles:
            assert module.evaluated_generator(role) is getattr(module, role + "_ema")


class _Incomplete(L.LightningModule):
    generator_roles = ("g_ab",)
    fallback_metric = "val/l1"


def test_a_module_without_the_contract_is_refused_naming_what_it_lacks():
    with pytest.raises(ModelContractError, match="lacks generator_arch, generator_kwargs, uses_ema"):
        check_model(_Incomplete())
    with pytest.raises(ModelContractError, match="not a LightningModule"):
        check_model(torch.nn.Identity())


def test_a_model_with_wrong_contract_values_is_refused():
    for roles in ((), ("g_ba",), ("g_ba", "g_ab"), ("g_ab", "g_xy")):
        module = OneWayModel(generator=TINY_G)
        module.generator_roles = roles
        with pytest.raises(ModelContractError, match="generator_roles"):
            check_model(module)
    module = OneWayModel(generator=TINY_G)
    module.fallback_metric = "train/l1"
    with pytest.raises(ModelContractError, match="fallback_metric"):
        check_model(module)
    module = OneWayModel(generator=OmegaConf.create(TINY_G))  # a config node, not plain values
    with pytest.raises(ModelContractError, match="plain dict"):
        check_model(module)
    module = OneWayModel(generator=TINY_G)
    module.generator_kwargs = {**module.generator_kwargs, "channels": 8}  # not what checkpoints record
    with pytest.raises(ModelContractError, match="plain dict"):
        check_model(module)


# ----------------------------------------------------------------------------- a new model: the contract only
class OneWayModel(L.LightningModule):
    """The smallest model: one generator learning to copy its input (L1), nothing from the built-in modules'
    bases; it implements `contract.TranslationModel` and the rest of what the contract's docstring asks."""

    generator_roles = ("g_ab",)
    fallback_metric = "val/l1"
    uses_ema = False

    def __init__(self, *, generator: dict, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        kwargs = dict(generator)
        self.generator_arch = kwargs.pop("arch")
        self.generator_kwargs = kwargs
        self.g_ab = build_generator(self.generator_arch, **kwargs)

    def evaluated_generator(self, role: str) -> torch.nn.Module:
        if role != "g_ab":
            raise KeyError(role)
        return self.g_ab

    @torch.no_grad()
    def translate_batch(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        fake_b, idt_b = self.g_ab(real_a), self.g_ab(real_b)
        images = (real_a, fake_b, self.g_ab(fake_b), real_b, idt_b, self.g_ab(idt_b))
        return dict(zip(GRID_COLUMNS, images, strict=True))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return (self.g_ab(batch["a"]) - batch["a"]).abs().mean()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        l1 = (self.g_ab(batch["a"]) - batch["a"]).abs().mean()
        self.log("val/l1", l1, batch_size=batch["a"].shape[0], sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.g_ab.parameters(), lr=self.hparams.lr)


def _one_way_run(compose_cfg, cyclegan_dir: Path, target: str, *overrides: str):
    cfg = compose_cfg(
        *data_overrides(cyclegan_dir), "callbacks.kid.offline=true", "trainer.max_epochs=2", *overrides
    )
    with open_dict(cfg):
        cfg.model = {"_target_": target, "_convert_": "all", "generator": dict(TINY_G)}
    return cfg


def test_a_new_model_trains_through_the_contract_alone(compose_cfg, cyclegan_dir, tmp_path, monkeypatch):
    """KID cannot be computed (no Inception weights): selection falls back to the model's own metric; the
    sample grid, the best-model export and the final export all go through the contract."""
    monkeypatch.setenv("STYLEGAN_TRANSFER_CACHE", str(tmp_path / "empty_cache"))
    cfg = _one_way_run(compose_cfg, cyclegan_dir, f"{__name__}.OneWayModel")
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    assert metrics["optimized_metric"] == metrics["val/l1"]
    assert (out / "samples" / "latest.png").is_file()
    assert sorted(p.name for p in (out / "export").glob("*.safetensors")) == ["g_ab.safetensors"]
    assert read_metadata(out / "export" / "g_ab.safetensors")["ema"] is False
    best = out / "export" / "best" / "g_ab.safetensors"
    assert read_metadata(best)["selected_by"] == "val/l1" and load_generator(best) is not None
    assert not (out / "export" / "best" / "g_ba.safetensors").exists()


def test_train_refuses_a_model_without_the_contract(compose_cfg, cyclegan_dir):
    cfg = _one_way_run(compose_cfg, cyclegan_dir, f"{__name__}._Incomplete")
    with open_dict(cfg):
        cfg.model = {"_target_": f"{__name__}._Incomplete"}
    with pytest.raises(ConfigError, match=r"model\._target_=.*_Incomplete: .*lacks generator_arch"):
        train(cfg)

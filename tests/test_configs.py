"""Every style and experiment file composes with the real train.yaml and instantiates."""

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from stylegan_transfer.training.cyclegan import CycleGANModule
from stylegan_transfer.training.data import UnpairedDataModule

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STYLES = sorted(p.stem for p in (CONFIGS / "style").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))


def instantiate_all(cfg):
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    logger = instantiate(cfg.logger) if cfg.get("logger") else None
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger or False)
    return datamodule, model, trainer


@pytest.mark.parametrize("style", STYLES)
def test_style_composes_and_instantiates(compose_cfg, style):
    cfg = compose_cfg(f"style={style}", "logger=csv")
    OmegaConf.resolve(cfg)
    assert cfg.style.name == style
    assert cfg.style.swap_domains in (True, False)
    datamodule, model, trainer = instantiate_all(cfg)
    assert isinstance(datamodule, UnpairedDataModule) and isinstance(model, CycleGANModule)
    assert trainer.max_epochs == cfg.model.epochs_constant + cfg.model.epochs_decay


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_instantiates(compose_cfg, experiment):
    first_line = (CONFIGS / "experiment" / f"{experiment}.yaml").read_text().splitlines()[:2]
    assert any(f"experiment={experiment}" in line for line in first_line), "command on the first lines"
    cfg = compose_cfg(f"experiment={experiment}", tiny=False)
    OmegaConf.resolve(cfg)
    instantiate_all(cfg)


@pytest.mark.parametrize("trainer", ["cpu", "gpu", "ddp"])
def test_trainer_presets(compose_cfg, trainer):
    cfg = compose_cfg(f"trainer={trainer}")
    assert cfg.trainer.use_distributed_sampler is False
    if trainer == "gpu":
        assert cfg.trainer.precision == "bf16-mixed"
    if trainer == "ddp":
        assert cfg.trainer.strategy == "ddp_find_unused_parameters_true"


def test_default_is_the_embedded_demo(compose_cfg):
    cfg = compose_cfg(tiny=False)
    OmegaConf.resolve(cfg)
    assert cfg.style.name == "demo" and Path(cfg.data.root, "trainA").is_dir()
    assert cfg.logger._target_.endswith("WandbLogger")
    model = instantiate(cfg.model)
    assert isinstance(model, CycleGANModule)
    assert model.hparams.lambda_cycle == 10.0 and model.hparams.pool_size == 50  # paper values


def test_paper_defaults_without_the_demo(compose_cfg):
    cfg = compose_cfg("style=vangogh", tiny=False)
    OmegaConf.resolve(cfg)
    assert cfg.data.crop_size == 256 and cfg.data.load_size == 286 and cfg.data.batch_size == 1
    assert cfg.model.generator.n_blocks == 9 and cfg.model.generator.channels == 64
    assert cfg.model.lr == 2e-4 and cfg.model.beta1 == 0.5
    assert cfg.trainer.max_epochs == 200


def test_demo_data_ships_with_its_attribution():
    from stylegan_transfer.training.run import ASSETS

    demo = ASSETS / "demo"
    attribution = (demo / "ATTRIBUTION.md").read_text()
    for split in ("trainA", "trainB", "testA", "testB"):
        files = sorted((demo / split).glob("*.jpg"))
        assert files, split
        if split.endswith("B"):  # every painting crop is listed by name
            assert all(f"{split}/{f.name}" in attribution for f in files)
    assert "public domain" in attribution
    total = sum(f.stat().st_size for f in demo.rglob("*") if f.is_file())
    assert total < 3_000_000  # a few MB at most

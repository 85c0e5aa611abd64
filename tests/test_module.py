import copy
import itertools

import pytest
import torch

from conftest import quiet_trainer
from stylegan_transfer.perceptual import VGGFeatures, vgg_features_module
from stylegan_transfer.training.cyclegan import CycleGANModule
from stylegan_transfer.training.data import UnpairedDataModule
from stylegan_transfer.training.optim import linear_decay_factor

TINY_G = {"arch": "resnet", "channels": 4, "n_blocks": 1}
TINY_D = {"arch": "patch", "channels": 4, "n_layers": 2}


def tiny_module(**kwargs) -> CycleGANModule:
    return CycleGANModule(generator=TINY_G, discriminator=TINY_D, pool_size=2, **kwargs)


def tiny_datamodule(root) -> UnpairedDataModule:
    return UnpairedDataModule(root=str(root), load_size=36, crop_size=32, num_workers=0, val_size=2)


def fit(module, datamodule, tmp_path, **trainer_kwargs):
    trainer = quiet_trainer(default_root_dir=tmp_path, **trainer_kwargs)
    trainer.fit(module, datamodule=datamodule)
    return trainer


@pytest.mark.parametrize("gan_mode", ["lsgan", "vanilla", "hinge", "wgangp"])
def test_one_step_changes_all_four_networks_and_restores_requires_grad(cyclegan_dir, tmp_path, gan_mode):
    module = tiny_module(gan_mode=gan_mode)
    before = {
        name: copy.deepcopy(getattr(module, name).state_dict()) for name in ("g_ab", "g_ba", "d_a", "d_b")
    }
    fit(module, tiny_datamodule(cyclegan_dir), tmp_path, max_steps=1, limit_val_batches=0)
    for name, state in before.items():
        net = getattr(module, name)
        changed = any(not torch.equal(state[k], v) for k, v in net.state_dict().items())
        assert changed, f"{name} was not updated by one training step"
        assert all(p.requires_grad for p in net.parameters()), f"{name} left frozen"


def test_logs_train_losses_lr_and_val_metrics(cyclegan_dir, tmp_path):
    module = tiny_module()
    trainer = fit(module, tiny_datamodule(cyclegan_dir), tmp_path, max_epochs=1)
    metrics = trainer.callback_metrics
    for key in ("train/loss_g", "train/loss_d", "train/cycle", "train/identity", "train/lr", "val/cycle_l1"):
        assert key in metrics and torch.isfinite(metrics[key]), key
    assert metrics["train/lr"].item() == pytest.approx(2e-4)


def test_lr_schedule_matches_paper_curve():
    # 100 epochs at 2e-4, then linear decay over 100 epochs (reference: 1 - max(0, e + 1 - 100) / 101)
    factors = [linear_decay_factor(e, epochs_constant=100, epochs_decay=100) for e in range(200)]
    assert factors[:100] == [1.0] * 100
    assert factors[100] == pytest.approx(100 / 101)
    assert factors[149] == pytest.approx(1 - 50 / 101)
    assert factors[199] == pytest.approx(1 / 101)
    steps = [a - b for a, b in itertools.pairwise(factors[99:])]
    assert all(s == pytest.approx(1 / 101) for s in steps)  # linear


def test_lr_is_stepped_by_hand_each_epoch(cyclegan_dir, tmp_path):
    module = tiny_module(epochs_constant=1, epochs_decay=2)
    fit(module, tiny_datamodule(cyclegan_dir), tmp_path, max_epochs=2, limit_val_batches=0)
    opt_g, opt_d = module.optimizers()
    # two hand-stepped epochs: factor(2) = 1 - (2 + 1 - 1) / (2 + 1)
    expected = 2e-4 * (1 - 2 / 3)
    assert opt_g.param_groups[0]["lr"] == pytest.approx(expected)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(expected)


def test_bf16_mixed_trains_on_cpu(cyclegan_dir, tmp_path):
    module = tiny_module()
    before = copy.deepcopy(module.g_ab.state_dict())
    trainer = fit(module, tiny_datamodule(cyclegan_dir), tmp_path, max_steps=2, precision="bf16-mixed")
    assert torch.isfinite(trainer.callback_metrics["train/loss_g"])
    assert any(not torch.equal(before[k], v) for k, v in module.g_ab.state_dict().items())


def test_perceptual_terms_train_with_injected_vgg(cyclegan_dir, tmp_path):
    module = tiny_module(
        lambda_content=1.0,
        lambda_style=1.0,
        lambda_tv=0.1,
        content_layers=["relu2_1"],
        style_layers=["relu1_1", "relu2_1"],
    )
    module.perceptual.vgg = VGGFeatures(
        vgg_features_module(width_divisor=16), ["relu2_1", "relu1_1", "relu2_1"]
    )
    vgg_before = copy.deepcopy(module.perceptual.vgg.state_dict())
    trainer = fit(module, tiny_datamodule(cyclegan_dir), tmp_path, max_steps=1, limit_val_batches=0)
    for key in ("train/content", "train/style", "train/tv"):
        assert torch.isfinite(trainer.callback_metrics[key]) and trainer.callback_metrics[key] > 0
    assert all(torch.equal(vgg_before[k], v) for k, v in module.perceptual.vgg.state_dict().items()), (
        "VGG must stay frozen"
    )


def test_hparams_are_plain_values():
    module = tiny_module()

    def plain(x):
        if isinstance(x, dict):
            return all(isinstance(k, str) and plain(v) for k, v in x.items())
        if isinstance(x, list | tuple):
            return all(plain(v) for v in x)
        return x is None or isinstance(x, bool | int | float | str)

    assert plain(dict(module.hparams))
    assert module.hparams.generator == TINY_G  # not mutated by the constructor


def test_rejects_unknown_gan_mode():
    with pytest.raises(ValueError, match="gan_mode"):
        tiny_module(gan_mode="nsgan")

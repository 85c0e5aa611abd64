"""Issue 23: the style term's target as a running mean of each domain's Gram matrices (`style_target`), against
its update rule computed by hand, through the training step, in checkpoints and on resume; "batch" unchanged."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from helpers import quiet_trainer
from helpers import tiny_cyclegan as tiny
from stylegan_transfer.losses import gram_matrix
from stylegan_transfer.perceptual import RunningGrams, VGGFeatures, vgg_features_module
from stylegan_transfer.training.resume import check_resume

LAYERS = ["relu1_1", "relu2_1"]


def _with_tiny_vgg(module):
    torch.manual_seed(5)
    module.perceptual.vgg = VGGFeatures(vgg_features_module(width_divisor=16), ["relu2_1", *LAYERS])
    return module


def _module(**kwargs):
    return _with_tiny_vgg(tiny(lambda_style=1.0, content_layers=["relu2_1"], style_layers=LAYERS, **kwargs))


def _batches(count: int, batch: int = 2, size: int = 32) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(2)
    return [
        {k: torch.rand(batch, 3, size, size, generator=g) * 2 - 1 for k in ("a", "b")} for _ in range(count)
    ]


# ----------------------------------------------------------------------------- the update rule
def test_running_grams_are_the_exact_mean_then_an_exponential_one():
    """decay 0.5: weights max(1/n, 0.5) = 1, 1/2, then 1/2, 1/2 (hand-computed on 1x1 'Gram matrices')."""
    grams = RunningGrams(domains=("a", "b"), layers=1, decay=0.5)
    assert grams.targets("a")[0].numel() == 0  # sized by the first update
    seen = []
    for value in (4.0, 8.0, 2.0, 10.0):
        seen.append(float(grams.update("a", [torch.tensor([[value]])])[0]))
    # 4; (4 + 8) / 2 = 6; 6 + (2 - 6) / 2 = 4; 4 + (10 - 4) / 2 = 7
    assert seen == [4.0, 6.0, 4.0, 7.0]
    assert int(grams.updates_a) == 4 and int(grams.updates_b) == 0 and grams.targets("b")[0].numel() == 0


def test_running_grams_average_every_gram_within_the_window_and_decay_zero_is_the_last():
    torch.manual_seed(0)
    history = [[torch.rand(3, 3), torch.rand(2, 2)] for _ in range(5)]  # two layers, five updates
    window = RunningGrams(domains=("b",), layers=2, decay=0.8)  # 1 / (1 - 0.8) = 5 updates: the exact mean
    last = RunningGrams(domains=("b",), layers=2, decay=0.0)
    for grams in history:
        means = window.update("b", grams)
        latest = last.update("b", grams)
    for layer in range(2):
        torch.testing.assert_close(means[layer], torch.stack([h[layer] for h in history]).mean(dim=0))
        torch.testing.assert_close(latest[layer], history[-1][layer])
    assert not any(t.requires_grad for t in window.buffers())
    with pytest.raises(ValueError, match="Gram"):
        window.update("b", [torch.rand(4, 4), torch.rand(2, 2)])  # a layer cannot change its size


# ----------------------------------------------------------------------------- hyper-parameters
@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"style_target": "mean"}, "style_target"),
        ({"style_target_decay": 1.0}, "style_target_decay"),
        ({"style_target": "running_mean", "style_target_decay": -0.1}, "style_target_decay"),
    ],
)
def test_bad_style_target_settings_name_their_key(kwargs, key):
    with pytest.raises(ValueError, match=rf"\b{key}\b"):
        tiny(**kwargs)


# ----------------------------------------------------------------------------- in the training step
def test_running_mean_is_the_target_of_each_fakes_style_term():
    """Three steps' worth of `_perceptual_terms`: the buffers hold the mean of the reals' batch Grams seen (decay
    0.999: the exact mean), and the style term is each fake against its target domain's mean."""
    module = _module(style_target="running_mean")
    p = module.perceptual
    seen = {"a": [], "b": []}
    for batch in _batches(3):
        real_a, real_b = batch["a"], batch["b"]
        with torch.no_grad():
            fake_b, fake_a = module.g_ab(real_a), module.g_ba(real_b)
            _, style = module._perceptual_terms(fake_b, fake_a, real_a, real_b)
            for domain, real in (("a", real_a), ("b", real_b)):
                seen[domain].append([gram_matrix(f).mean(dim=0) for f in p.features(real)[1]])
            means = {d: [torch.stack([s[i] for s in seen[d]]).mean(dim=0) for i in range(2)] for d in seen}
            want = p.style(p.features(fake_b)[1], means["b"]) + p.style(p.features(fake_a)[1], means["a"])
            batch_target = p.style(p.features(fake_b)[1], seen["b"][-1]) + p.style(
                p.features(fake_a)[1], seen["a"][-1]
            )
        torch.testing.assert_close(style, want)
    assert not torch.allclose(style, batch_target)  # by the third step the two targets differ
    for domain in ("a", "b"):
        for got, mean in zip(module.style_grams.targets(domain), means[domain], strict=True):
            torch.testing.assert_close(got, mean)
        assert int(getattr(module.style_grams, f"updates_{domain}")) == 3


def test_batch_target_is_unchanged_and_keeps_no_buffers():
    module = _module()
    assert module.hparams.style_target == "batch" and not hasattr(module, "style_grams")
    assert not any(k.startswith("style_grams.") for k in module.state_dict())
    p = module.perceptual
    batch = _batches(1)[0]
    with torch.no_grad():
        fake_b, fake_a = module.g_ab(batch["a"]), module.g_ba(batch["b"])
        _, style = module._perceptual_terms(fake_b, fake_a, batch["a"], batch["b"])
        target_b = [gram_matrix(f).mean(dim=0) for f in p.features(batch["b"])[1]]
        target_a = [gram_matrix(f).mean(dim=0) for f in p.features(batch["a"])[1]]
        want = p.style(p.features(fake_b)[1], target_b) + p.style(p.features(fake_a)[1], target_a)
    torch.testing.assert_close(style, want)


# ----------------------------------------------------------------------------- checkpoints
def _fit(module, batches, *, epochs: int, ckpt_path=None):
    trainer = quiet_trainer(max_epochs=epochs, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None), ckpt_path=ckpt_path)
    return trainer


def test_running_grams_are_saved_and_resume_exactly(tmp_path):
    """Two epochs in one go, or one epoch, a checkpoint and a resume into a fresh module: the same means and
    counters, equal to the mean of the four batch Grams seen (two batches, twice)."""
    batches = _batches(2)
    full = _module(style_target="running_mean")
    _fit(full, batches, epochs=2)

    first = _module(style_target="running_mean")
    trainer = _fit(first, batches, epochs=1)
    ckpt = tmp_path / "epoch1.ckpt"
    trainer.save_checkpoint(ckpt)
    stored = torch.load(ckpt, weights_only=True)["state_dict"]
    assert int(stored["style_grams.updates_b"]) == 2 and stored["style_grams.b1"].shape == (8, 8)
    assert not any(k.startswith("perceptual.") for k in stored)  # the VGG stays out, the means do not

    resumed = _module(style_target="running_mean")
    assert resumed.style_grams.b0.numel() == 0
    check_resume(ckpt, resumed)  # train.py's check before a resume: the unfilled buffers fit any stored size
    _fit(resumed, batches, epochs=2, ckpt_path=ckpt)

    p = full.perceptual
    for domain in ("a", "b"):
        with torch.no_grad():
            grams = [p.grams(p.features(batch[domain])[1]) for batch in batches]
        for i, (got, want) in enumerate(
            zip(resumed.style_grams.targets(domain), full.style_grams.targets(domain), strict=True)
        ):
            assert torch.equal(got, want), f"{domain}{i}"
            torch.testing.assert_close(want, torch.stack([g[i] for g in grams]).mean(dim=0))
        assert int(getattr(resumed.style_grams, f"updates_{domain}")) == 4

    plain = _module(style_target="running_mean")
    plain.load_state_dict(full.state_dict())  # outside Lightning too: unfilled buffers take the stored sizes
    assert torch.equal(plain.style_grams.a0, full.style_grams.a0)

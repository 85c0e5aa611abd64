"""Issue 14: every case of the bad-input corpus (tests/bad_inputs.py) against every entry point.

For each case: the exit code, exactly one error line naming the file, no traceback on stderr, nothing
outside the output folder touched, and no payload executed. The entry points run in-process through
their `main` (train through `run_job`, exactly what train.py calls); the subprocess tests elsewhere
(test_safety_resume, test_safety_config) check the same on the real command line.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import bad_inputs
from helpers import tiny_vgg, write_images
from helpers.training import data_overrides
from stylegan_transfer import datasets
from stylegan_transfer.inference import export
from stylegan_transfer.inference.generator_file import save_generator
from stylegan_transfer.metrics import evaluate
from stylegan_transfer.networks import build_generator
from stylegan_transfer.nst import cli as stylize_cli
from stylegan_transfer.training.run import run_job

translate = importlib.import_module("stylegan_transfer.inference.translate")  # the package exports a function

IMAGE_CASES = [
    "empty_file",
    "text_as_png",
    "truncated_jpeg",
    "damaged_header",
    "decompression_bomb",
    "pickle_as_jpeg",
]
GENERATOR_CASES = [
    "empty_file",
    "truncated",
    "header_only",
    "garbage",
    "pickle",
    "no_metadata",
    "foreign_format",
    "newer_version",
    "unknown_arch",
    "channels_negative",
    "channels_1e9",
    "n_blocks_1e8",
    "kwargs_object",
    "size_multiple_text",
    "size_multiple_zero",
    "nested_json",
    "metadata_not_json",
    "shape_mismatch",
    "nan_weights",
]
CHECKPOINT_CASES = [
    "empty_file",
    "text",
    "garbage",
    "truncated",
    "plain_pickle_exec",
    "torch_save_exec",
    "a_list",
    "no_state_dict",
    "state_dict_not_dict",
    "no_hyper_parameters",
    "unknown_arch",
    "bad_arguments",
    "huge_arguments",
    "shape_mismatch",
    "no_generators",
    "nan_weights",
]
ARCHIVE_CASES = sorted(bad_inputs.archives())


def snapshot(root: Path, *, skip: Path) -> dict[str, str]:
    """Every file under `root` outside `skip`, with a digest of its content."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and skip not in path.parents:
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@dataclass
class Sandbox:
    """tmp_path as the working folder (`root`), the entry point's output folder `out`, two good images."""

    root: Path
    out: Path
    good: list[Path]
    capsys: pytest.CaptureFixture[str]

    def check(self, run: Callable[[], int], *, expected: int, name: Path, prefix: str = "error") -> str:
        """Run one case and check the contract; returns the error line."""
        root, out, capsys = self.root, self.out, self.capsys
        capsys.readouterr()
        before = snapshot(root, skip=out)
        code = run()
        err = capsys.readouterr().err
        assert code == expected, err
        assert "Traceback" not in err
        errors = [line for line in err.splitlines() if f"{prefix}:" in line]
        assert len(errors) == 1, err
        assert str(name) in errors[0], errors[0]
        assert snapshot(root, skip=out) == before  # inputs and everything beside the output folder untouched
        assert not (root / bad_inputs.MARKER).exists()  # no payload ran
        return errors[0]


@pytest.fixture
def sandbox(tmp_path, monkeypatch, capsys) -> Sandbox:
    """The environment asks torch to unpickle (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1): no entry point may obey;
    a payload would drop its marker in the working folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    good = write_images(tmp_path / "photos", 2)
    return Sandbox(tmp_path, tmp_path / "out", good, capsys)


# ----------------------------------------------------------------------------- translate
@pytest.mark.parametrize("case", GENERATOR_CASES)
def test_translate_generator_files(sandbox, case):
    root, out, good = sandbox.root, sandbox.out, sandbox.good
    path = bad_inputs.generator_files(root / "corpus")[case]
    argv = ["--checkpoint", str(path), "--input", str(good[0].parent), "--output", str(out), "--quiet"]
    sandbox.check(lambda: translate.main([*argv, "--device", "cpu"]), expected=2, name=path)
    assert not out.exists()


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_translate_checkpoints(sandbox, case):
    root, out, good = sandbox.root, sandbox.out, sandbox.good
    path = bad_inputs.checkpoints(root / "corpus")[case]
    argv = ["--checkpoint", str(path), "--input", str(good[0]), "--output", str(out), "--quiet"]
    argv += ["--device", "cpu"]
    sandbox.check(lambda: translate.main(argv), expected=2, name=path)


@pytest.mark.parametrize("case", IMAGE_CASES)
def test_translate_images(sandbox, case):
    root, out, good = sandbox.root, sandbox.out, sandbox.good
    path = bad_inputs.images(root / "corpus")[case]
    generator = save_generator(
        build_generator("resnet", **bad_inputs.TINY),
        root / "g.safetensors",
        arch="resnet",
        kwargs=bad_inputs.TINY,
    )
    argv = [
        "--checkpoint",
        str(generator),
        "--input",
        str(path),
        str(good[0]),
        "--output",
        str(out),
        "--quiet",
    ]
    sandbox.check(lambda: translate.main([*argv, "--device", "cpu"]), expected=1, name=path)
    assert sorted(p.name for p in out.iterdir()) == [f"{good[0].stem}.png"]  # the good one was still written


# ----------------------------------------------------------------------------- export
@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_export_checkpoints(sandbox, case):
    root, out = sandbox.root, sandbox.out
    path = bad_inputs.checkpoints(root / "corpus")[case]
    sandbox.check(lambda: export.main([str(path), "-o", str(out)]), expected=2, name=path)
    assert not out.exists()


# ----------------------------------------------------------------------------- eval
@pytest.mark.parametrize("case", GENERATOR_CASES)
def test_eval_generator_files(sandbox, case):
    root, out, good = sandbox.root, sandbox.out, sandbox.good
    path = bad_inputs.generator_files(root / "corpus")[case]
    folder = str(good[0].parent)
    argv = ["model", "--generator", str(path), "--input-dir", folder, "--target-dir", folder, "--offline"]
    argv += ["--device", "cpu", "--json", str(out / "scores.json")]
    sandbox.check(lambda: evaluate.main(argv), expected=2, name=path)


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_eval_checkpoints(sandbox, case):
    root, good = sandbox.root, sandbox.good
    path = bad_inputs.checkpoints(root / "corpus")[case]
    folder = str(good[0].parent)
    argv = ["model", "--checkpoint", str(path), "--input-dir", folder, "--target-dir", folder, "--offline"]
    sandbox.check(lambda: evaluate.main([*argv, "--device", "cpu"]), expected=2, name=path)


# ----------------------------------------------------------------------------- stylize
@pytest.mark.parametrize("case", IMAGE_CASES)
def test_stylize_images(sandbox, monkeypatch, case):
    root, out, good = sandbox.root, sandbox.out, sandbox.good
    monkeypatch.setattr(stylize_cli, "load_vgg_features", lambda arch, weights_path=None: tiny_vgg())
    path = bad_inputs.images(root / "corpus")[case]
    for argv in (
        ["--content", str(path), "--style", str(good[0])],
        ["--content", str(good[0]), "--style", str(path)],
    ):
        argv += ["--output", str(out / "result.png"), "--iterations", "1", "--size", "32", "--no-progress"]
        sandbox.check(lambda a=argv: stylize_cli.main([*a, "--device", "cpu"]), expected=2, name=path)
    assert not out.exists()


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_stylize_vgg_weights(sandbox, case):
    root, out, good = sandbox.root, sandbox.out, sandbox.good
    path = bad_inputs.checkpoints(root / "corpus")[case]
    argv = [
        "--content",
        str(good[0]),
        "--style",
        str(good[1]),
        "--output",
        str(out / "r.png"),
        "--size",
        "32",
    ]
    argv += ["--iterations", "1", "--vgg-weights", str(path), "--no-progress", "--device", "cpu"]
    sandbox.check(lambda: stylize_cli.main(argv), expected=2, name=path)


# ----------------------------------------------------------------------------- download
@pytest.mark.parametrize("case", ARCHIVE_CASES)
def test_download_archives_placed_by_hand(sandbox, case):
    root, out = sandbox.root, sandbox.out
    archive = out / "facades.zip"
    out.mkdir()
    data = bad_inputs.archives()[case]  # (zip entries carry the time: build once)
    archive.write_bytes(data)
    argv = ["facades", "--data-dir", str(out), "--base-url", "http://127.0.0.1:9"]
    sandbox.check(lambda: datasets.main(argv), expected=2, name=archive)
    assert archive.read_bytes() == data  # the user's file is kept
    assert sorted(p.name for p in out.iterdir()) == ["facades.zip"]  # nothing extracted
    assert not (root / "escape.txt").exists()


@pytest.mark.parametrize("case", ARCHIVE_CASES)
def test_download_archives_over_http(sandbox, server, case):
    root, out = sandbox.root, sandbox.out
    server.files = {"/facades.zip": bad_inputs.archives()[case]}
    argv = ["facades", "--data-dir", str(out), "--base-url", server.url, "--timeout", "5"]
    line = sandbox.check(lambda: datasets.main(argv), expected=2, name=out / "facades.zip")
    assert "deleted it" in line  # the tool's own download: removed, so that a rerun fetches it again
    assert list(out.rglob("*")) == []  # nothing extracted, no partial file, no temporary folder
    assert not (root / "escape.txt").exists()


# ----------------------------------------------------------------------------- train
# KID needs two images per domain before training starts: off, so that the image itself is what fails
NO_KID = [
    "callbacks.kid=null",
    "callbacks.best.monitor=val/cycle_l1",
    "callbacks.export_best.monitor=val/cycle_l1",
]


def run_train(compose_cfg, out: Path, *overrides: str) -> int:
    cfg = compose_cfg(*overrides)
    cfg.paths.output_dir = str(out)
    try:
        run_job(cfg)
    except SystemExit as exit_:
        return int(exit_.code)
    return 0


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_train_resume_from_bad_checkpoints(sandbox, compose_cfg, cyclegan_dir, case):
    root, out = sandbox.root, sandbox.out
    path = bad_inputs.checkpoints(root / "corpus")[case]
    overrides = [*data_overrides(cyclegan_dir), f"ckpt_path={path}"]
    sandbox.check(lambda: run_train(compose_cfg, out, *overrides), expected=2, name=path)
    assert not (out / "export").exists()


@pytest.mark.parametrize("case", IMAGE_CASES)
def test_train_on_a_folder_of_one_bad_image(sandbox, compose_cfg, cyclegan_dir, caplog, case):
    root, out = sandbox.root, sandbox.out
    path = bad_inputs.images(root / "corpus" / case)[case]
    for other in path.parent.iterdir():
        if other != path:
            other.unlink()
    overrides = [
        "style=custom",
        f"data.dir_a={cyclegan_dir / 'trainA'}",
        f"data.dir_b={path.parent}",
        *NO_KID,
    ]
    sandbox.check(lambda: run_train(compose_cfg, out, *overrides), expected=2, name=path.parent)
    assert str(path) in caplog.text  # the file itself is named in the warning that skipped it

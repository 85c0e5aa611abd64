"""The paired quality benchmark's task builder: disjoint splits, truth aligned with the held-out inputs."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
from PIL import Image, ImageOps

from helpers import REPO, write_images


def _benchmark():
    spec = importlib.util.spec_from_file_location(
        "quality_benchmark", REPO / "scripts" / "quality_benchmark.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_task_has_disjoint_splits_and_truth_aligned_with_test_inputs(tmp_path):
    qb = _benchmark()
    photos = write_images(tmp_path / "photos", 14, size=(48, 24), seed=3)
    task = qb.build_task(
        photos, tmp_path / "task", ImageOps.invert, n_train_a=5, n_train_b=4, n_test=3, size=(32, 16)
    )
    manifest = json.loads((task.root / "task.json").read_text())
    splits = {name: set(files) for name, files in manifest["splits"].items()}
    assert [len(splits[k]) for k in ("trainA", "trainB", "test")] == [5, 4, 3]
    assert not (
        splits["trainA"] & splits["trainB"]
        or splits["trainA"] & splits["test"]
        or splits["trainB"] & splits["test"]
    )
    stems = {
        name: {p.stem for p in (task.root / name).iterdir()}
        for name in ("trainA", "trainB", "testA", "truth")
    }
    assert stems["testA"] == stems["truth"] == {n.rsplit(".", 1)[0] for n in splits["test"]}
    for test_input in task.test_inputs:  # the truth is the reference rendering of exactly this input
        truth = np.asarray(Image.open(task.truth_of(test_input)), dtype=int)
        expected = np.asarray(ImageOps.invert(Image.open(test_input).convert("RGB")), dtype=int)
        assert truth.shape == (16, 32, 3) and np.array_equal(truth, expected)
    for path in (task.root / "trainB").iterdir():  # domain B is rendered, domain A is not
        source = next(p for p in photos if p.stem == path.stem)
        photo = np.asarray(Image.open(source).convert("RGB").resize((32, 16), Image.BICUBIC), dtype=int)
        assert np.array_equal(np.asarray(Image.open(path), dtype=int), 255 - photo)


def test_the_same_seed_builds_the_same_splits_and_too_few_photos_are_refused(tmp_path):
    qb = _benchmark()
    photos = [tmp_path / f"p{i}.jpg" for i in range(10)]
    one = qb.split_photos(photos, n_train_a=3, n_train_b=3, n_test=2, seed=0)
    assert one == qb.split_photos(photos, n_train_a=3, n_train_b=3, n_test=2, seed=0)
    assert one != qb.split_photos(photos, n_train_a=3, n_train_b=3, n_test=2, seed=1)
    try:
        qb.split_photos(photos, n_train_a=5, n_train_b=5, n_test=2, seed=0)
    except SystemExit as err:
        assert "need 12 photos" in str(err)
    else:
        raise AssertionError("too few photos were accepted")


def test_table_reports_mean_and_std_over_seeds():
    qb = _benchmark()
    rows = {
        "a": [
            {"lpips": 0.2, "kid": 0.010, "fid": 50.0, "seconds": 60.0},
            {"lpips": 0.4, "kid": 0.030, "fid": 70.0, "seconds": 120.0},
        ]
    }
    table = qb.markdown_table(rows)
    assert "| a | 0.3000 ± 0.1414 | 20.0 ± 14.1 | 60.0 ± 14.1 | 1.5 ± 0.7 | 2 |" in table

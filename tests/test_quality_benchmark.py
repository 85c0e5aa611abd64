"""The paired quality benchmark's task builder: disjoint splits, truth aligned with the held-out inputs."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from helpers import REPO, TINY_G_KWARGS, write_images


def _benchmark():
    spec = importlib.util.spec_from_file_location(
        "quality_benchmark", REPO / "scripts" / "quality_benchmark.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _tiny_task(qb, tmp_path, *, seed: int):
    """A 48x24 task (3 + 3 training images, 2 test pairs; B is the inverted photo) under tmp_path/tasks/tone."""
    photos = write_images(tmp_path / "photos", 8, size=(48, 24), seed=seed)
    return qb.build_task(
        photos,
        tmp_path / "tasks" / "tone",
        ImageOps.invert,
        n_train_a=3,
        n_train_b=3,
        n_test=2,
        size=(48, 24),
    )


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
            {"lpips": 0.2, "kid": 0.010, "fid": 50.0, "s_per_image": 0.5, "revision": "abc"},
            {"lpips": 0.4, "kid": 0.030, "fid": 70.0, "s_per_image": 1.0, "revision": "def"},
        ],
        "empty": [],
    }
    table = qb.markdown_table(rows)
    assert "| a | 0.3000 ± 0.1414 | 20.0 ± 14.1 | 60.0 ± 14.1 | 0.750 ± 0.354 | 2 | abc, def |" in table
    assert "empty" not in table  # a row with no finished run is left out, not shown as NaN


def test_criteria_apply_the_issue_margins_to_means_over_seeds():
    qb = _benchmark()

    def runs(*pairs, seconds=1.0):
        return [{"lpips": lp, "kid": kid, "s_per_image": seconds} for lp, kid in pairs]

    a_to_b = {
        "identity": runs((0.50, 0.200)),
        "official": runs((0.60, 0.300), (0.62, 0.100)),  # KID mean 0.200
        "good": runs((0.55, 0.150), (0.57, 0.170), seconds=1.2),  # KID mean 0.160: exactly -20 %
        "close": runs((0.58, 0.170), (0.58, 0.171)),  # -15 %
    }
    b_to_a = {"paper": runs((0.50, 0.2)), "good": runs((0.49, 0.2)), "close": runs((0.49, 0.3))}
    results = {"t": {"AtoB": a_to_b, "BtoA": b_to_a}, "one-way": {"AtoB": a_to_b, "BtoA": {}}}
    good, good_one_way = qb.criteria(results, "good")
    assert good["seeds"] == 2 and good["kid_lead"] == pytest.approx(-0.20)
    assert good["kid_ok"] and good["lpips_ok"] and good["b_to_a_ok"]
    assert good["time_ratio"] == pytest.approx(1.2) and good["time_ok"]
    assert good["official_beats_identity"] is False  # its LPIPS 0.61 > identity 0.50: the budget is too short
    # no paper row and no B->A run: not measured, neither pass nor fail
    assert good_one_way["b_to_a_ok"] is None
    close = qb.criteria(results, "close")[0]
    assert close["kid_ok"] is False and close["b_to_a_ok"] is False  # B->A KID 0.3 > the paper's 0.2
    missing = qb.criteria(results, "absent")[0]
    assert missing["seeds"] == 0 and missing["kid_ok"] is None and missing["time_ok"] is None
    table = qb.criteria_table(results, "close")
    assert "| t | 2 | -15% ✗ | ✓ | ✗ | 1.00× ✓ | ✗ |" in table


def test_classic_and_tone_renderings_are_deterministic_local_and_change_the_photo(tmp_path):
    qb = _benchmark()
    photo = Image.open(write_images(tmp_path / "p", 1, size=(48, 24), seed=5)[0]).convert("RGB")
    for render in (qb.classic_render, qb.tone_render):
        out = render(photo)
        assert out.size == photo.size and out.mode == "RGB"
        assert np.array_equal(np.asarray(out), np.asarray(render(photo.copy())))  # deterministic
        assert np.abs(np.asarray(out, dtype=int) - np.asarray(photo, dtype=int)).mean() > 3  # a real change
    # tone is pixel by pixel: a pixel's output depends on that pixel alone
    a = np.asarray(photo).copy()
    b = a.copy()
    b[:, :24] = 0  # change the left half only
    left_changed = np.asarray(qb.tone_render(Image.fromarray(b)))[:, 24:]
    assert np.array_equal(left_changed, np.asarray(qb.tone_render(Image.fromarray(a)))[:, 24:])
    # classic is local: a change on the left leaves pixels 8+ columns away untouched
    far = np.asarray(qb.classic_render(Image.fromarray(b)))[:, 32:]
    assert np.array_equal(far, np.asarray(qb.classic_render(Image.fromarray(a)))[:, 32:])


def test_both_directions_swap_inputs_and_truths(tmp_path):
    qb = _benchmark()
    photos = write_images(tmp_path / "photos", 8, size=(48, 24), seed=3)
    task = qb.build_task(
        photos, tmp_path / "task", ImageOps.invert, n_train_a=3, n_train_b=3, n_test=2, size=(32, 16)
    )
    forward, backward = task.pairs("AtoB"), task.pairs("BtoA")
    assert [p.parent.name for p, _ in forward] == ["testA", "testA"]
    assert backward == [(truth, photo) for photo, truth in forward]


def test_a_cached_run_with_other_overrides_is_refused(tmp_path):
    qb = _benchmark()
    task = qb.Task(tmp_path / "tasks" / "tone")
    run = qb.Run(task, "mine", "model.lambda_cycle=5", 0, 3, tmp_path)
    assert not run.done()
    run.dir.mkdir(parents=True)
    run.record.write_text(json.dumps({"overrides": "model.lambda_cycle=5"}))
    assert run.done() and run.dir == tmp_path / "runs" / "tone" / "e3" / "mine" / "seed0"
    other = qb.Run(task, "mine", "model.lambda_cycle=10", 0, 3, tmp_path)
    try:
        other.done()
    except SystemExit as err:
        assert "another name" in str(err)
    else:
        raise AssertionError("a cached run with other settings was reused")


def test_the_official_code_gets_the_same_data_sizes_and_budget(tmp_path):
    qb = _benchmark()
    run = qb.Run(qb.Task(tmp_path / "tasks" / "classic"), qb.OFFICIAL, "", 1, 27, tmp_path)
    options = qb.official_options(run)
    value = {options[i]: options[i + 1] for i in range(len(options) - 1) if options[i].startswith("--")}
    ours = dict(item.split("=", 1) for item in qb.NETWORKS)
    assert value["--crop_size"] == ours["data.crop_size"] and value["--load_size"] == ours["data.load_size"]
    assert (
        value["--ngf"] == ours["model.generator.channels"]
        and value["--ndf"] == ours["model.discriminator.channels"]
    )
    assert value["--netG"] == f"resnet_{ours['model.generator.n_blocks']}blocks"
    assert int(value["--n_epochs"]) + int(value["--n_epochs_decay"]) == 27
    ours_command = qb.train_command(qb.Run(run.task, "x", "", 1, 27, tmp_path))
    assert "model.epochs_constant=13" in ours_command and "model.epochs_decay=14" in ours_command
    assert value["--n_epochs"] == "13" and value["--dataroot"] == str(run.task.root)


def test_a_partial_run_resumes_from_its_resume_point_and_an_untimed_one_starts_again(tmp_path, monkeypatch):
    qb = _benchmark()
    monkeypatch.setattr(qb, "BUSY_S", 0.0)
    task = qb.Task(tmp_path / "tasks" / "classic")
    official = qb.Run(task, qb.OFFICIAL, "", 0, 4, tmp_path)
    folder = official.dir / "official"
    folder.mkdir(parents=True)
    for epoch, nets in (
        (1, qb.OFFICIAL_NETS),
        (2, qb.OFFICIAL_NETS),
        (3, ("G_A", "G_B")),
    ):  # 3: cut while saving
        for net in nets:
            (folder / f"{epoch}_net_{net}.pth").write_bytes(b"")
    assert qb.official_last_epoch(folder) == 2
    assert official.resume_point() == ["--continue_train", "--epoch", "2", "--epoch_count", "3"]
    command = qb.official_commands(official, tmp_path / "cut", official.resume_point())[0]
    assert command[-5:] == ["--continue_train", "--epoch", "2", "--epoch_count", "3"]
    assert command[command.index("--save_epoch_freq") + 1] == "1"  # a resume point every epoch
    official.progress.write_text(json.dumps({"seconds": 12.5, "sittings": 1}))
    assert official.prior_sittings() == {"seconds": 12.5, "sittings": 1} and folder.is_dir()
    ours = qb.Run(task, "mine", "", 0, 4, tmp_path)
    (ours.dir / "checkpoints").mkdir(parents=True)
    (ours.dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert ours.resume_point() == [f"ckpt_path={ours.dir / 'checkpoints' / 'last.ckpt'}"]
    assert qb.train_command(ours, ours.resume_point())[-1].startswith("ckpt_path=")
    assert ours.prior_sittings() == {"seconds": 0.0, "sittings": 0}  # no time recorded: trained again
    assert not ours.dir.exists()
    monkeypatch.setattr(qb, "BUSY_S", 3600.0)
    try:
        official.prior_sittings()
    except SystemExit as err:
        assert "another process is training this run" in str(err)
    else:
        raise AssertionError("a run with fresh files was touched")


@pytest.mark.slow
def test_our_resumed_run_ends_with_the_generators_of_an_uninterrupted_one(tmp_path, monkeypatch):
    import subprocess

    from safetensors.torch import load_file

    qb = _benchmark()
    monkeypatch.setattr(qb, "BUSY_S", 0.0)
    task = _tiny_task(qb, tmp_path, seed=5)
    whole, cut = (qb.Run(task, name, "", 0, 2, tmp_path) for name in ("whole", "cut"))
    qb.train_all([whole], None, 1)
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    first = subprocess.run(
        [*qb.train_command(cut), "trainer.max_epochs=1", "export=false"],
        cwd=REPO,
        env=env,
        capture_output=True,
    )
    assert first.returncode == 0, first.stderr.decode()[-2000:]
    cut.progress.write_text(json.dumps({"seconds": 7.0, "sittings": 1}))  # as the heartbeat leaves it
    qb.train_all([cut], None, 1)
    record = json.loads(cut.record.read_text())
    assert record["sittings"] == 2 and record["seconds"] > 7.0 and not cut.progress.exists()
    assert "ckpt_path=" in record["commands"][0]
    for name in ("g_ab", "g_ba"):
        expected = load_file(whole.dir / "export" / f"{name}.safetensors")
        resumed = load_file(cut.dir / "export" / f"{name}.safetensors")
        assert all(torch.equal(expected[k], resumed[k]) for k in expected), name


def test_on_a_gpu_both_codes_train_there_and_translate_on_the_cpu(tmp_path):
    qb = _benchmark()
    task = qb.Task(tmp_path / "tasks" / "classic")
    ours = qb.train_command(qb.Run(task, "x", "model.lambda_style=0", 0, 4, tmp_path), device="cuda")
    assert "trainer=gpu" in ours and "perf=none" in ours  # fp32 there too: rows compare across machines
    assert ours.index("trainer=gpu") < ours.index("perf=none") < ours.index("model.lambda_style=0")
    assert "trainer=gpu" not in qb.train_command(qb.Run(task, "x", "", 0, 4, tmp_path))
    official = qb.Run(task, qb.OFFICIAL, "", 0, 4, tmp_path)
    train, *translate = qb.official_commands(official, tmp_path / "cut", device="cuda")
    assert train[train.index("--gpu_ids") + 1] == "0"
    assert len(translate) == 2 and all(c[c.index("--gpu_ids") + 1] == "-1" for c in translate)


def test_our_outputs_are_saved_per_run_and_scored_from_there_as_translated(tmp_path, monkeypatch):
    from stylegan_transfer.inference.generator_file import save_generator
    from stylegan_transfer.networks import build_generator

    qb = _benchmark()
    monkeypatch.setattr(qb, "TASK_SIZE", (48, 24))
    task = _tiny_task(qb, tmp_path, seed=3)
    run = qb.Run(task, "mine", "", 0, 1, tmp_path)
    kwargs = TINY_G_KWARGS
    torch.manual_seed(0)
    save_generator(
        build_generator("resnet", **kwargs),
        run.dir / "export" / "g_ab.safetensors",
        arch="resnet",
        kwargs=kwargs,
    )
    qb.write_outputs(run)  # no g_ba (a one-way model): only AtoB
    assert sorted(p.name for p in run.dir.iterdir()) == ["export", "outputs_AtoB"]
    pairs = task.pairs("AtoB")
    assert sorted(p.stem for p in (run.dir / "outputs_AtoB").iterdir()) == sorted(s.stem for s, _ in pairs)

    class Inputs:  # the scorer's view of the direction, without loading LPIPS or Inception
        def __init__(self, pairs):
            self.pairs = pairs
            self.inputs = qb.load_inputs(pairs)

    scorer = Inputs(pairs)
    from_folder = qb.run_outputs(run, "AtoB", scorer)
    assert torch.equal(
        from_folder, qb.translate_inputs(scorer.inputs, run.dir / "export" / "g_ab.safetensors")
    )
    assert qb.run_outputs(run, "BtoA", Inputs(task.pairs("BtoA"))) is None

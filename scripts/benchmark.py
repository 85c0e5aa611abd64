"""Training and inference throughput, FLOPs and MFU of CycleGAN, on whatever device is present.

    python scripts/benchmark.py                       # GPU: 256+512px, paper and default recipes; CPU: 128px
    python scripts/benchmark.py --profile --out bench/   # GPU: also a torch.profiler table of the fast step
    python scripts/benchmark.py --sizes 128 256 --steps 20 --warmup 5 --out bench/
    python scripts/benchmark.py --int8                # CPU: also ONNX Runtime int8 vs fp32 inference
    python scripts/benchmark.py --official-code /tmp/cut --sizes 64 --channels 32 --threads 1   # side by side

Training configurations run in the same process, each composed from configs/ (Hydra's compose API), for each
recipe (`--recipes`: paper = experiment=paper_cyclegan, default = the default recipe with its VGG terms):
  reference  perf=none with plain Adam, the official code's behaviour: fp32, eager, batch 1, default cuDNN;
  fast       this project's preset (configs/perf/gpu.yaml on a GPU: bf16 autocast, channels_last,
             torch.compile, fused Adam, cuDNN autotuning, larger batch; configs/perf/cpu.yaml on a CPU).
All are real Lightning `Trainer.fit` runs of `CycleGANModule` with all the recipe's losses. FLOPs are counted
with `torch.utils.flop_counter.FlopCounterMode` on one eager step; MFU = achieved FLOP/s / a matmul peak
measured in the same run (fp32 for fp32 runs; for bf16-mixed runs the better of the bf16 and fp32 peaks,
as CPUs without native bf16 emulate it far below fp32). "first steps s" is the time of the untimed warm-up
steps (compilation, cuDNN autotuning). Inference: eager fp32 (reference), compiled, bf16 and compiled bf16 on a
GPU, and `--tiled-sizes` through the user's tiled path. `--official-code CHECKOUT` also times the official code's
CycleGAN step (the CUT repository, fetched by the user; run by scripts/official_cyclegan.py, needs `dominate`) at
each size with the same widths and threads, and reports every row's time per image relative to it. Writes
benchmark.json and benchmark.md after every row.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from stylegan_transfer.devices import cpu_name
from stylegan_transfer.networks import build_generator, init_weights
from stylegan_transfer.training.cyclegan import CycleGANModule
from stylegan_transfer.training.launch import register_resolvers

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def conv_peak_tflops(device: torch.device, dtype: torch.dtype, channels: int = 256, reps: int = 5) -> float:
    """Best achieved TFLOP/s of a `channels`-channel 3x3 convolution at 64x64 (256: ResNet-9's residual-block
    shape; smaller for quick runs, as a dtype without native support is emulated and slow).

    On CPUs oneDNN's convolutions can beat the BLAS matmul, so the peak used for MFU is the better of the two.
    """
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(device, dtype)
    x = torch.randn(4, channels, 64, 64, device=device, dtype=dtype)  # (B, C, H, W)
    flops = 2 * 4 * channels * channels * 9 * 64 * 64
    with torch.no_grad():
        conv(x)  # warm up
        sync(device)
        best = float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            conv(x)
            sync(device)
            best = min(best, time.perf_counter() - start)
    return flops / best / 1e12


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, n: int, reps: int = 5) -> float:
    """Best achieved TFLOP/s of an n x n matmul (2 n^3 FLOPs): the roofline this run is judged against."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm up (library init, autotuning)
    sync(device)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


class StepTimer(L.Callback):
    """Counts FLOPs of batch 0 (eager runs only), times batches 0 .. warmup-1 (compilation, autotuning) and
    warmup .. warmup+steps-1; with `profile`, records the timed batches with torch.profiler and counts the
    host-device synchronisations they make (CUDA's sync debug mode)."""

    def __init__(self, warmup: int, steps: int, count_flops: bool, profile: bool = False) -> None:
        self.warmup, self.steps, self.count_flops, self.profile = warmup, steps, count_flops, profile
        self.flops: int | None = None
        self.seconds = float("nan")
        self.warmup_seconds = float("nan")
        self.profiler: torch.profiler.profile | None = None
        self.syncs: list[str] = []
        self._counter: FlopCounterMode | None = None
        self._start = self._first = 0.0
        self._warnings: Any = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self._first = time.perf_counter()
        if batch_idx == 0 and self.count_flops:
            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()
        if batch_idx == self.warmup:
            sync(pl_module.device)
            self._start = time.perf_counter()
            self.warmup_seconds = self._start - self._first
            if self.profile:
                self._start_profile(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 0 and self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops = int(self._counter.get_total_flops())
            self._counter = None
        if batch_idx == self.warmup + self.steps - 1:
            sync(pl_module.device)
            self.seconds = time.perf_counter() - self._start
            if self.profiler is not None:
                self._stop_profile(pl_module.device)

    def _start_profile(self, device: torch.device) -> None:
        import warnings

        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._warnings = warnings.catch_warnings(record=True)
            self.syncs = self._warnings.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        self.profiler = torch.profiler.profile(activities=activities)
        self.profiler.__enter__()

    def _stop_profile(self, device: torch.device) -> None:
        self.profiler.__exit__(None, None, None)
        if self._warnings is not None:
            torch.cuda.set_sync_debug_mode(0)
            self._warnings.__exit__(None, None, None)
            self.syncs = [
                str(w.message).splitlines()[0] for w in self.syncs if "synchroniz" in str(w.message)
            ]


def synthetic_batches(count: int, batch: int, size: int) -> DataLoader:
    gen = torch.Generator().manual_seed(0)
    batches = [
        {
            "a": torch.rand(batch, 3, size, size, generator=gen) * 2 - 1,  # (B, 3, H, W)
            "b": torch.rand(batch, 3, size, size, generator=gen) * 2 - 1,
        }
        for _ in range(count)
    ]
    return DataLoader(batches, batch_size=None)  # already batched; Lightning moves them to the device


RECIPES = {"paper": ("experiment=paper_cyclegan",), "default": ()}  # train.py overrides of each recipe
PERF_KEYS = ("channels_last", "compile", "fused_adam", "lr_scaling")


def perf_preset(trainer: str, perf: str, *overrides: str) -> dict[str, Any]:
    """The settings of `python train.py trainer=<trainer> perf=<perf> [overrides]`, composed from the real
    configs/ (train.yaml, configs/perf/*.yaml, the experiment files), so the benchmark measures what training runs:
    the speed switches and every keyword argument of the model (its losses included)."""
    from omegaconf import OmegaConf

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"trainer={trainer}", f"perf={perf}", *overrides])
    model = OmegaConf.to_container(cfg.model, resolve=True)
    model.pop("_target_", None)
    model.pop("_convert_", None)
    return {
        "batch": int(cfg.data.batch_size),
        "precision": str(cfg.trainer.precision),
        "cudnn_benchmark": bool(cfg.trainer.get("benchmark") or False),
        "module": model,
    }


def training_configs(
    device: torch.device, args: argparse.Namespace, recipe: str
) -> dict[str, dict[str, Any]]:
    """reference: perf=none with plain Adam (the official code's behaviour); fast: perf=gpu on a GPU,
    perf=cpu on a CPU (bf16 autocast where the CPU has it natively); on a CPU also that preset with channels_last in fp32 and in bf16. `recipe` picks the
    model's losses (RECIPES)."""
    trainer = "gpu" if device.type == "cuda" else "cpu"
    base = [*RECIPES[recipe], *args.overrides]
    tweaks = [f"data.batch_size={args.batch}"] if args.batch else []
    tweaks += ["model.compile=false"] if args.no_compile else []
    reference = perf_preset(trainer, "none", *base, "model.fused_adam=false")
    if device.type == "cuda":
        return {"reference": reference, "fast": perf_preset(trainer, "gpu", *base, *tweaks)}
    return {
        "reference": reference,
        "fast": perf_preset(trainer, "cpu", *base, *tweaks),
        "fp32_channels_last": perf_preset(
            trainer, "cpu", *base, *tweaks, "trainer.precision=32-true", "model.channels_last=true"
        ),
        "bf16_channels_last": perf_preset(trainer, "cpu", *base, *tweaks, "model.channels_last=true"),
    }


def run_training(
    name: str,
    spec: dict[str, Any],
    size: int,
    device: torch.device,
    args: argparse.Namespace,
    *,
    profile: bool = False,
) -> dict[str, Any]:
    torch.manual_seed(0)
    kwargs = dict(spec["module"])
    kwargs["generator"] = {**kwargs["generator"], "channels": args.channels, "n_blocks": args.n_blocks}
    kwargs["discriminator"] = {**kwargs["discriminator"], "channels": args.channels}
    kwargs["batch_size"] = spec["batch"]
    module = CycleGANModule(**kwargs)
    eager = not kwargs["compile"]
    timer = StepTimer(args.warmup, args.steps, count_flops=eager and not profile, profile=profile)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=spec["precision"],
        benchmark=spec["cudnn_benchmark"],
        max_steps=2 * (args.warmup + args.steps),  # two optimisers step per batch
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=50,
        callbacks=[timer],
        default_root_dir=tempfile.gettempdir(),
    )
    trainer.fit(module, train_dataloaders=synthetic_batches(args.warmup + args.steps, spec["batch"], size))
    if profile:
        return {
            "profiler": timer.profiler,
            "syncs": timer.syncs,
            "steps": args.steps,
            "seconds_per_step": timer.seconds / args.steps,
        }
    steps_per_s = args.steps / timer.seconds
    vgg = kwargs["lambda_content"] > 0 or kwargs["lambda_style"] > 0
    row = {
        "config": name,
        "recipe": "default (VGG terms)" if vgg else "paper",
        "size": size,
        "batch": spec["batch"],
        "precision": spec["precision"],
        **{key: kwargs[key] for key in PERF_KEYS},
        "cudnn_benchmark": spec["cudnn_benchmark"],
        "warmup_s": timer.warmup_seconds,
        "seconds_per_step": timer.seconds / args.steps,
        "steps_per_s": steps_per_s,
        "pairs_per_s": steps_per_s * spec["batch"],
        "flops_per_step": timer.flops,  # filled from the reference's count when this run is compiled
        "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
    }
    return row


# Where one training step's time goes, by what the profiled operators do. An operator is filed under the first of
# these whose test its own name or an enclosing record (the optimiser's step, the DataLoader's next) passes.
STEP_PARTS = (
    ("optimiser step", lambda name: name.startswith("Optimizer.step#")),
    ("data loading", lambda name: name.startswith("enumerate(DataLoader)#")),
    ("convolution", lambda name: "conv" in name),
    ("normalisation", lambda name: "_norm" in name),
    ("other tensor ops", lambda name: True),
)


def step_breakdown(events: Any, steps: int, seconds_per_step: float) -> dict[str, float]:
    """Seconds per step spent in each of STEP_PARTS, from a profiler's `events()` (host time of the thread that
    trains: on a CPU, the computation; on a GPU, the launches). Each event's self time counts once, under the
    part of its nearest enclosing optimiser/data record, or else of its own name; "outside any operator"
    (Python, Lightning, hooks) is what the profiled step took beyond all of them, so the parts sum to it."""
    parts = dict.fromkeys([name for name, _ in STEP_PARTS], 0.0)
    for event in events:
        part, node = None, event
        while node is not None and part is None:
            part = next((name for name, test in STEP_PARTS[:2] if test(node.name)), None)
            node = node.cpu_parent
        part = part or next(name for name, test in STEP_PARTS[2:] if test(event.name))
        parts[part] += event.self_cpu_time_total / 1e6 / steps
    parts["outside any operator"] = max(0.0, seconds_per_step - sum(parts.values()))
    return parts


def profile_table(result: dict[str, Any], device: torch.device, rows: int = 25) -> dict[str, Any]:
    """Where the time of the profiled steps goes: the top operators by self device time (CPU time on a CPU),
    the host-device synchronisations seen, and torch.compile's graph breaks and graph count."""
    from torch._dynamo.utils import counters

    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = result["profiler"].key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60)
    breaks = {reason: int(n) for reason, n in counters["graph_break"].items()}
    return {
        "seconds_per_step": result["seconds_per_step"],
        "breakdown": step_breakdown(result["profiler"].events(), result["steps"], result["seconds_per_step"]),
        "table": table,
        "syncs": len(result["syncs"]),
        "sync_examples": sorted(set(result["syncs"]))[:5],
        "graph_breaks": breaks,
        "unique_graphs": int(counters["stats"].get("unique_graphs", 0)),
    }


def official_step(size: int, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """The official code's CycleGAN step (the CUT repository's `--model cycle_gan`, from the checkout given with
    `--official-code`) at the same size, widths and threads, timed by scripts/official_cyclegan.py in a child."""
    if args.n_blocks not in (6, 9):
        raise SystemExit(
            f"--official-code: the official ResNet generator has 6 or 9 blocks, not {args.n_blocks}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        options = [
            "--dataroot", tmp, "--name", "bench", "--checkpoints_dir", tmp, "--model", "cycle_gan",
            "--netG", f"resnet_{args.n_blocks}blocks", "--ngf", str(args.channels), "--ndf", str(args.channels),
            "--gpu_ids", "0" if device.type == "cuda" else "-1", "--display_id", "0", "--no_html",
        ]  # fmt: skip
        command = [
            sys.executable, str(REPO / "scripts" / "official_cyclegan.py"), "time", str(args.official_code),
            str(size), str(args.steps), str(args.warmup), "--", *options,
        ]  # fmt: skip
        threads = str(torch.get_num_threads())
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp)
    if result.returncode != 0:
        raise SystemExit(f"the official code's step failed:\n{result.stderr[-2000:]}")
    row = json.loads(result.stdout.strip().splitlines()[-1])
    return {"config": "official (CUT repo cycle_gan)", **row, "pairs_per_s": 1 / row["seconds_per_step"]}


INFERENCE_VARIANTS = {  # name: (torch.compile, bf16 autocast); NHWC for all but the reference on a GPU
    "reference": (False, False),
    "compiled": (True, False),
    "bf16": (False, True),
    "bf16_compiled": (True, True),
}


def paper_generator(args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_generator("resnet", channels=args.channels, n_blocks=args.n_blocks)
    init_weights(net)
    return net.to(device).eval()


def run_inference(
    name: str, size: int, device: torch.device, args: argparse.Namespace, *, compiled: bool, bf16: bool
) -> dict[str, Any]:
    net = paper_generator(args, device)
    x = torch.rand(args.inference_batch, 3, size, size, device=device) * 2 - 1  # (B, 3, H, W)
    nhwc = name != "reference" and device.type == "cuda"  # NHWC pays off with tensor cores; on CPU NCHW won
    if nhwc:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(x)
    flops = counter.get_total_flops()
    if compiled:
        net.compile()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    with torch.inference_mode(), autocast:
        start = time.perf_counter()
        for _ in range(args.warmup):
            net(x)
        sync(device)
        warmup = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(args.inference_steps):
            net(x)
        sync(device)
        seconds = (time.perf_counter() - start) / args.inference_steps
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # whole-process peak resident memory (Linux reports KiB)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "config": name,
        "size": size,
        "batch": args.inference_batch,
        "precision": "bf16" if bf16 else "fp32",
        "compiled": compiled,
        "channels_last": nhwc,
        "warmup_s": warmup,
        "images_per_s": args.inference_batch / seconds,
        "seconds_per_batch": seconds,
        "flops_per_image": flops / args.inference_batch,
        "peak_memory_mb": peak_mb,
    }


def run_tiled(size: int, device: torch.device, args: argparse.Namespace, precision: str) -> dict[str, Any]:
    """One size x size image through the user's path (`translate_tensor`: the host image in, the host image
    out) with the default tiles (TileOptions(): 512 px, 128 overlap, statistics from a 1024 px copy)."""
    from stylegan_transfer.inference.tiling import TileOptions
    from stylegan_transfer.inference.translation import translate_tensor

    net = paper_generator(args, device)
    x = torch.rand(1, 3, size, size) * 2 - 1  # (1, 3, H, W) on the host, as an image file arrives
    options = TileOptions()
    translate_tensor(net, x, tile=options, device=device, precision=precision)  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    reps = max(1, args.inference_steps // 10)
    for _ in range(reps):
        translate_tensor(net, x, tile=options, device=device, precision=precision)
    seconds = (time.perf_counter() - start) / reps
    return {
        "config": f"tiled {options.tile}",
        "size": size,
        "batch": 1,
        "precision": precision,
        "compiled": False,
        "channels_last": False,
        "images_per_s": 1 / seconds,
        "seconds_per_batch": seconds,
        "flops_per_image": float("nan"),
        "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def int8_experiment(size: int, args: argparse.Namespace) -> dict[str, Any]:
    """CPU: ONNX Runtime static int8 (QDQ) vs fp32 on real photos from the packaged demo set."""
    import logging

    import numpy as np
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from stylegan_transfer.images import list_images, load_rgb, to_tensor

    photos = list_images(Path(__file__).resolve().parents[1] / "src/stylegan_transfer/assets/demo/testA")
    images = [
        to_tensor(load_rgb(p).resize((size, size))).unsqueeze(0).numpy() for p in photos
    ]  # (1, 3, H, W)
    torch.manual_seed(0)
    if args.weights:
        from stylegan_transfer.inference.generator_file import load_generator

        net = load_generator(args.weights).eval()
    else:
        net = init_weights(build_generator("resnet", channels=args.channels, n_blocks=args.n_blocks)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path, int8_path = Path(tmp) / "g.onnx", Path(tmp) / "g_int8.onnx"
        torch.onnx.export(
            net, (torch.from_numpy(images[0]),), str(fp32_path), input_names=["image"], output_names=["out"],
            dynamo=False, opset_version=17,
        )  # fmt: skip

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.items = iter(images)

            def get_next(self):
                item = next(self.items, None)
                return None if item is None else {"image": item}

        logging.getLogger().setLevel(logging.ERROR)  # the quantiser warns once per layer
        quantize_static(
            str(fp32_path), str(int8_path), Reader(), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
        )  # fmt: skip
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        sessions = {
            k: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
            for k, p in (("fp32", fp32_path), ("int8", int8_path))
        }
        timing, outputs = {}, {}
        for key, session in sessions.items():
            session.run(None, {"image": images[0]})
            start = time.perf_counter()
            outputs[key] = [session.run(None, {"image": im})[0] for im in images]
            timing[key] = (time.perf_counter() - start) / len(images)
    ref, got = np.concatenate(outputs["fp32"]), np.concatenate(outputs["int8"])
    mse = float(np.mean((ref - got) ** 2))
    psnr = 10 * np.log10(4.0 / mse) if mse > 0 else float("inf")  # range [-1, 1]: peak-to-peak 2
    lpips = None
    try:  # LPIPS (AlexNet) from the metrics modules when they and their cached weights are present
        from stylegan_transfer.metrics.weights import load_lpips  # type: ignore[import-not-found]

        lpips = float(load_lpips("alex", lin_url=None)(torch.from_numpy(ref), torch.from_numpy(got)).mean())
    except Exception as error:  # any failure means "not measured", and is reported as such
        print(f"int8: LPIPS not measured ({type(error).__name__}: {error})", file=sys.stderr)
    return {
        "size": size,
        "photos": len(images),
        "weights": args.weights or "paper init (untrained)",
        "fp32_seconds": timing["fp32"],
        "int8_seconds": timing["int8"],
        "speedup": timing["fp32"] / timing["int8"],
        "psnr_db": psnr,
        "max_abs_error": float(np.abs(ref - got).max()),
        "lpips": lpips,
        "gate_passed": None
        if lpips is None
        else bool(timing["fp32"] / timing["int8"] >= 2 and lpips <= 0.02),
    }


def markdown(report: dict[str, Any]) -> str:
    def fmt(table: dict[str, float]) -> str:
        return ", ".join(f"{k} {v:.4g} TFLOP/s" for k, v in table.items())

    peaks = (
        f"{fmt(report['matmul_peak_tflops'])} (matmul); {fmt(report['conv_peak_tflops'])} (3x3 conv); "
        f"MFU and roofline use the better of the two: {fmt(report['peak_tflops'])} "
        "(bf16-mixed rows: the better of the bf16 and float32 peaks)"
    )
    lines = [
        f"Device: {report['device']}; torch {report['torch']}; threads {report['threads']}; {report['date']}",
        f"Command: `{report['command']}`",
        f"Measured peaks: {peaks}",
        "",
        "| training | recipe | size | batch | precision | channels_last | compile | fused Adam | first steps s "
        "| steps/s | pairs/s | s/step | TFLOP/s | MFU | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["training"]:
        mem = "" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
        lines.append(
            f"| {r['config']} | {r['recipe']} | {r['size']} | {r['batch']} | {r['precision']} | {r['channels_last']} "
            f"| {r['compile']} | {r['fused_adam']} | {r['warmup_s']:.1f} | {r['steps_per_s']:.3f} "
            f"| {r['pairs_per_s']:.3f} | {r['seconds_per_step']:.4f} | {r['tflops']:.4g} | {100 * r['mfu']:.1f} % "
            f"| {mem} |"
        )
    lines.append("")
    for r in report.get("official", []):
        lines.append(
            f"Official code ({r['config']}) at {r['size']}px, batch 1, {r['threads']} threads: "
            f"{r['seconds_per_step']:.4f} s/step"
        )
    for r in report["training"]:
        if "vs_official" in r:
            lines.append(
                f"Time per image vs the official code, {r['config']} {r['recipe']} {r['size']}px: "
                f"**{r['vs_official']:.2f}x**"
            )
    for key, ratio in report["speedup"].items():
        lines.append(f"Training speed-up fast / reference, {key} (pairs/s): **{ratio:.2f}x**")
    lines += [
        "",
        "| inference | size | batch | precision | compiled | NHWC | images/s | GFLOP/image | roofline ratio "
        "| peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["inference"]:
        ratio = "" if r["roofline_ratio"] != r["roofline_ratio"] else f"{r['roofline_ratio']:.2f}"  # NaN: ""
        lines.append(
            f"| {r['config']} | {r['size']} | {r['batch']} | {r['precision']} | {r['compiled']} "
            f"| {r['channels_last']} | {r['images_per_s']:.2f} | {r['flops_per_image'] / 1e9:.4g} | {ratio} "
            f"| {r['peak_memory_mb']:.0f} |"
        )
    lines.append("")
    lines.append(
        "roofline ratio = measured time / (FLOPs / peak of the row's precision, the better of matmul and 3x3 "
        "conv); 1.0 = at the roofline. Tiled rows: the whole user path (host image in and out, statistics pass)."
    )
    profiles = report.get("profiles", [])
    if profiles:
        parts = list(profiles[0]["breakdown"])
        lines += [
            "",
            "Where one step's time goes (seconds per step under the profiler; `step_breakdown`):",
            "",
            "| part | " + " | ".join(prof["config"] for prof in profiles) + " |",
            "|---|" + "---|" * len(profiles),
        ]
        for part in parts:
            cells = (
                f"{prof['breakdown'][part]:.4f} ({prof['breakdown'][part] / prof['seconds_per_step']:.0%})"
                for prof in profiles
            )
            lines.append(f"| {part} | " + " | ".join(cells) + " |")
        lines.append("| **step** | " + " | ".join(f"{p['seconds_per_step']:.4f}" for p in profiles) + " |")
    for prof in profiles:
        lines += [
            "",
            f"Profile of `{prof['config']}` ({prof['seconds_per_step']:.4f} s/step under the profiler): "
            f"{prof['syncs']} host-device synchronisations in {prof['steps']} steps"
            + (f" (e.g. {prof['sync_examples'][0]})" if prof["sync_examples"] else "")
            + f"; torch.compile: {prof['unique_graphs']} graphs, graph breaks {prof['graph_breaks'] or 'none'}.",
            "",
            "```",
            prof["table"],
            "```",
        ]
    if report.get("int8"):
        q = report["int8"]
        lpips = "not measured" if q["lpips"] is None else f"{q['lpips']:.4f}"
        lines += [
            "",
            f"int8 (ONNX Runtime, static QDQ) at {q['size']}px on {q['photos']} photos, weights: {q['weights']}: "
            f"fp32 {q['fp32_seconds']:.3f} s, int8 {q['int8_seconds']:.3f} s, speed-up {q['speedup']:.2f}x, "
            f"PSNR {q['psnr_db']:.1f} dB, max |error| {q['max_abs_error']:.3f}, LPIPS {lpips}.",
        ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="*",
        help="training sizes (default: 256 512 on GPU, 128 on CPU; none: skip)",
    )
    parser.add_argument("--batch", type=int, help="batch of the fast configuration (default: the preset's)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per configuration")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compile, autotuning)")
    parser.add_argument(
        "--recipes",
        nargs="+",
        choices=sorted(RECIPES),
        help="losses trained (default: paper default on GPU, default on CPU)",
    )
    parser.add_argument("--inference-sizes", type=int, nargs="*", help="default: 256 1024 GPU, 256 CPU")
    parser.add_argument(
        "--tiled-sizes",
        type=int,
        nargs="*",
        help="one image of this size through the tiled user path (default: 4096 GPU, none CPU)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also profile the step (--profile-config, --profile-sizes)"
    )
    parser.add_argument(
        "--configs", nargs="*", default=[], help="time only these configurations (reference, fast, ...)"
    )
    parser.add_argument(
        "--profile-config",
        nargs="+",
        default=["fast"],
        help="the configurations --profile records (fast, reference, ...)",
    )
    parser.add_argument(
        "--profile-sizes",
        type=int,
        nargs="*",
        help="the sizes --profile records (default: the first of --sizes)",
    )
    parser.add_argument(
        "--overrides",
        nargs="*",
        default=[],
        help="train.py overrides added to every recipe (e.g. model.generator.upsample=resize)",
    )
    parser.add_argument(
        "--official-code",
        type=Path,
        help="a checkout of the CUT repository: also time its --model cycle_gan step (same sizes, widths, threads)",
    )
    parser.add_argument("--inference-batch", type=int, help="default: 8 on GPU, 1 on CPU")
    parser.add_argument("--inference-steps", type=int, help="timed batches (default: 20 GPU, 3 CPU)")
    parser.add_argument("--channels", type=int, default=64, help="base width (paper: 64)")
    parser.add_argument("--n-blocks", type=int, default=9, help="residual blocks (paper: 9)")
    parser.add_argument(
        "--matmul-size", type=int, help="n of the n x n peak matmul (default 8192 GPU, 2048 CPU)"
    )
    parser.add_argument("--threads", type=int, help="CPU threads (default: the cores this process may use)")
    parser.add_argument("--no-compile", action="store_true", help="fast configuration without torch.compile")
    parser.add_argument("--skip-reference", action="store_true", help="only the fast training configuration")
    parser.add_argument("--int8", action="store_true", help="CPU: ONNX Runtime int8 vs fp32 inference")
    parser.add_argument("--weights", help="exported generator (.safetensors) for the int8 comparison")
    parser.add_argument("--out", default="benchmark_out", help="folder for benchmark.json and benchmark.md")
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device not in ("cpu", "cuda") or (args.device == "cuda" and not torch.cuda.is_available()):
        parser.exit(2, f"error: --device {args.device} is not available here; use --device cpu\n")
    gpu = args.device == "cuda"
    args.sizes = args.sizes if args.sizes is not None else ([256, 512] if gpu else [128])
    args.recipes = args.recipes or (["paper", "default"] if gpu else ["default"])
    args.tiled_sizes = args.tiled_sizes if args.tiled_sizes is not None else ([4096] if gpu else [])
    args.inference_sizes = args.inference_sizes if args.inference_sizes is not None else (
        [256, 1024] if gpu else [256]
    )  # fmt: skip
    args.inference_batch = args.inference_batch or (8 if gpu else 1)
    args.inference_steps = args.inference_steps or (20 if gpu else 3)
    args.matmul_size = args.matmul_size or (8192 if gpu else 2048)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{cpu_name()} ({len(os.sched_getaffinity(0))} cores)"
    matmul_peaks = {
        "float32": matmul_peak_tflops(device, torch.float32, args.matmul_size),
        "bfloat16": matmul_peak_tflops(device, torch.bfloat16, args.matmul_size),
    }
    conv_peaks = {
        name: conv_peak_tflops(device, dtype, channels=min(256, max(16, args.matmul_size // 8)))
        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))
    }
    peaks = {
        k: max(matmul_peaks[k], conv_peaks[k]) for k in matmul_peaks
    }  # the roofline MFU is judged against
    print(f"device {name}; matmul peak {matmul_peaks}; conv peak {conv_peaks}", flush=True)

    report: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "peak_tflops": peaks,
        "matmul_peak_tflops": matmul_peaks,
        "conv_peak_tflops": conv_peaks,
        "training": [],
        "speedup": {},
        "official": [],
        "inference": [],
        "profiles": [],
        "int8": None,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_report(report, out)  # rewritten after every row: a run cut short keeps what it measured

    training = report["training"]
    for size in args.sizes:
        official = official_step(size, device, args) if args.official_code else None
        if official is not None:
            print(json.dumps(official), flush=True)
            report["official"].append(official)
        for recipe in args.recipes:
            flops_per_pair = None
            for config, spec in training_configs(device, args, recipe).items():
                if (args.skip_reference and config == "reference") or (
                    args.configs and config not in args.configs
                ):
                    continue
                row = run_training(config, spec, size, device, args)
                if row["flops_per_step"] is not None:
                    flops_per_pair = flops_per_pair or row["flops_per_step"] / row["batch"]
                else:  # compiled runs are not counted; the model's math is the same as the eager one's
                    row["flops_per_step"] = (
                        None if flops_per_pair is None else int(flops_per_pair * row["batch"])
                    )
                # bf16-mixed autocast runs some ops in fp32, and CPUs without native bf16 emulate it far below their
                # fp32 speed: a mixed-precision step is judged against the better of both peaks, never the slower.
                mixed = row["precision"].startswith("bf16")
                peak = max(peaks["bfloat16"], peaks["float32"]) if mixed else peaks["float32"]
                row["tflops"] = (row["flops_per_step"] or 0) * row["steps_per_s"] / 1e12
                row["mfu"] = row["tflops"] / peak
                if official is not None:  # time per image (pair) relative to the official step, same run
                    row["vs_official"] = (row["seconds_per_step"] / row["batch"]) / official[
                        "seconds_per_step"
                    ]
                print(json.dumps(row), flush=True)
                training.append(row)
                rows = {
                    r["config"]: r for r in training if r["size"] == size and r["recipe"] == row["recipe"]
                }
                if "reference" in rows and "fast" in rows:
                    key = f"{recipe} {size}px"
                    report["speedup"][key] = rows["fast"]["pairs_per_s"] / rows["reference"]["pairs_per_s"]
                write_report(report, out)

    for size in (args.profile_sizes or args.sizes[:1]) if args.profile else []:
        recipe = args.recipes[0]
        for name in args.profile_config:
            spec = training_configs(device, args, recipe)[name]
            result = run_training(name, spec, size, device, args, profile=True)
            report["profiles"].append(
                {
                    "config": f"{name}, {recipe} recipe, {size}px, batch {spec['batch']}",
                    "steps": args.steps,
                    **profile_table(result, device),
                }
            )
            print(report["profiles"][-1]["table"], flush=True)
            write_report(report, out)

    variants = INFERENCE_VARIANTS if device.type == "cuda" else {"reference": (False, False)}
    if args.no_compile:
        variants = {k: v for k, v in variants.items() if not v[0]}
    for size in args.inference_sizes:
        for config, (compiled, bf16) in variants.items():
            row = run_inference(config, size, device, args, compiled=compiled, bf16=bf16)
            peak = peaks["bfloat16"] if bf16 else peaks["float32"]
            row["roofline_ratio"] = (row["seconds_per_batch"] / row["batch"]) / (
                row["flops_per_image"] / peak / 1e12
            )
            print(json.dumps(row), flush=True)
            report["inference"].append(row)
            write_report(report, out)
    for size in args.tiled_sizes:
        for precision in ("fp32", "bf16") if device.type == "cuda" else ("fp32",):
            row = run_tiled(size, device, args, precision)
            row["roofline_ratio"] = float("nan")
            print(json.dumps(row), flush=True)
            report["inference"].append(row)
            write_report(report, out)

    if args.int8:
        report["int8"] = int8_experiment(args.inference_sizes[0] if args.inference_sizes else 256, args)
    write_report(report, out)
    print(markdown(report))
    print(f"wrote {out / 'benchmark.json'} and {out / 'benchmark.md'}")
    return 0


def write_report(report: dict[str, Any], out: Path) -> None:
    for filename, text in (
        ("benchmark.json", json.dumps(report, indent=2)),
        ("benchmark.md", markdown(report)),
    ):
        tmp = out / f".{filename}.tmp"
        tmp.write_text(text)
        tmp.replace(out / filename)


if __name__ == "__main__":
    raise SystemExit(main())

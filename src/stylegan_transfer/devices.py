"""The one rule for choosing a device when the user says `auto` (CUDA, else Apple MPS, else the CPU), the one
rule for the CPU speed preset's precision (bf16 autocast only where the CPU has bf16 in hardware), and the CPU's
name as benchmarks record it."""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def pick_device(name: str | torch.device | None = "auto") -> torch.device:
    """`auto` (or None): CUDA if available, else MPS, else CPU; any other name is taken as given."""
    if name is not None and str(name) != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def native_bf16_cpu() -> bool:
    """True when this CPU computes bfloat16 in hardware (AVX-512-BF16 or AMX), where bf16 autocast trains 1.3-1.8x
    faster than fp32 (docs/benchmarks.md); without it bf16 is emulated and slower than fp32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private in torch 2.x: absent = no
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def cpu_precision() -> str:
    """The Lightning precision of the CPU speed preset (configs/perf/cpu.yaml): "bf16-mixed" on CPUs with native
    bf16, else "32-true"."""
    return "bf16-mixed" if native_bf16_cpu() else "32-true"


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name ("AMD EPYC 7B13", "Intel(R) Xeon(R) Processor"): `model name` of /proc/cpuinfo on Linux,
    else what `platform` knows. Benchmarks record it beside their times: VMs of one size differ by CPU kind, and
    times from two kinds are not one comparison."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"

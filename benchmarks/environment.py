"""What a benchmark ran on: CPU, ISA, OS, library versions, devices, load, and the machine's compute peak.

Latency figures mean nothing without this block, so every run stores it (JSON report and history DB). The
load average is recorded because the figures of a shared machine move with it. Torch-free.

The theoretical FP32 peak is ``cores x clock x FLOP/cycle``, with FLOP/cycle from the ISA (an FMA counts
as two FLOPs): AVX-512 on Intel server cores 64 (two 512-bit FMA ports), AVX-512 on AMD Zen 4 32 (512-bit
instructions run on 256-bit data paths), AVX2+FMA 32 (two 256-bit FMA ports), AVX 16, SSE 8. These are
the usual figures for those micro-architectures, not a measurement; :func:`measured_sgemm_gflops` gives an
achieved figure (numpy's BLAS) to put beside it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "KMP_BLOCKTIME")
PACKAGES = ("edgeseg", "numpy", "torch", "onnx", "onnxruntime", "onnxscript", "openvino", "nncf",
            "litert-torch", "ai-edge-litert", "ai-edge-quantizer", "torchao", "opencv-python-headless",
            "matplotlib", "scipy")


def _clock_mhz() -> float | None:
    """Nominal CPU clock in MHz: cpufreq's maximum when the kernel exposes it, else /proc/cpuinfo's figure."""
    max_freq = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if max_freq.is_file():
        try:
            return int(max_freq.read_text().strip()) / 1000.0
        except ValueError:
            pass
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("cpu MHz") and ":" in line:
                try:
                    return float(line.split(":", 1)[1])
                except ValueError:
                    return None
    return None


def cpu_info() -> dict[str, Any]:
    """``edgeseg.runtimes.sysinfo.cpu_info()`` (model, vendor, cores, ISA flags) plus the clock (``mhz``) and the
    ISA summary line."""
    from edgeseg.runtimes.sysinfo import cpu_info as _cpu
    from edgeseg.runtimes.sysinfo import int8_path, isa_summary

    info = dict(_cpu())
    info["mhz"] = _clock_mhz()
    info["isa_summary"] = isa_summary(info.get("isa", []))
    info["int8_path"] = int8_path(info.get("isa", []))
    return info


def flops_per_cycle(isa: list[str], vendor: str = "") -> int:
    """FP32 FLOP per cycle per core (FMA = 2) for the widest vector ISA present (see module docstring)."""
    isa_set = set(isa)
    if "avx512f" in isa_set:
        return 32 if "amd" in vendor.lower() else 64
    if "avx2" in isa_set and "fma" in isa_set:
        return 32
    if "avx" in isa_set:
        return 16
    if "asimd" in isa_set or "neon" in isa_set:
        return 16  # two 128-bit FMA pipes, typical of Cortex-A7x / Neoverse cores
    return 8


def peak_gflops(cpu: dict[str, Any], cores: int) -> float | None:
    """Theoretical FP32 peak in GFLOP/s of ``cores`` cores; None when the clock is unknown."""
    if not cpu.get("mhz") or cores < 1:
        return None
    return cores * cpu["mhz"] / 1000.0 * flops_per_cycle(cpu.get("isa", []), cpu.get("vendor", ""))


def measured_sgemm_gflops(n: int = 512, seconds: float = 0.3) -> float:
    """Achieved FP32 GFLOP/s of numpy's BLAS on an n x n matmul (uses BLAS's own thread count)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up
    count, t0 = 0, time.perf_counter()
    while True:
        a @ b
        count += 1
        dt = time.perf_counter() - t0
        if dt >= seconds:
            break
    return 2.0 * n**3 * count / dt / 1e9


def measured_copy_gbs(mib: int = 64, repeats: int = 5) -> float:
    """Achieved memory bandwidth in GB/s of a large array copy (bytes read + written, best of ``repeats``): the
    slope of the roofline for working sets that do not fit in the caches."""
    import numpy as np

    src = np.ones(mib * (1 << 20) // 4, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # warm-up: pages touched
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * src.nbytes / best / 1e9


def compute_floor_ms(macs: int | float, gflops: float | None) -> float | None:
    """Time in ms to run ``macs`` multiply-accumulates (2 FLOPs each) at ``gflops``; None when unknown."""
    if not gflops:
        return None
    return 2.0 * float(macs) / (gflops * 1e9) * 1000.0


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        res = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None


def _memory_total_mb() -> float | None:
    path = Path("/proc/meminfo")
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024.0
    return None


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def runtime_devices() -> list[dict[str, Any]]:
    """Every runtime backend with availability, version and device names (from ``runtimes``)."""
    try:
        from edgeseg.runtimes import runtime_info
    except ImportError as exc:  # pragma: no cover - runtimes is part of the package
        return [{"error": f"runtimes not importable: {exc}"}]
    try:
        return runtime_info()
    except Exception as exc:  # a broken backend must not lose the whole environment block
        return [{"error": f"{type(exc).__name__}: {exc}"}]


def capture_environment(threads: int | None = None, measure_peak: bool = False) -> dict[str, Any]:
    """The environment block of a run.

    Args:
        threads: the thread count the run uses (the compute peak is computed for this many cores).
        measure_peak: also run a short numpy matmul to record the achieved GFLOP/s.

    Returns:
        A JSON-serialisable dict: cpu, os, python, packages, runtimes (with devices), load average,
        memory, thread settings, theoretical (and optionally measured) FP32 peak.
    """
    cpu = cpu_info()
    cores = threads or cpu["usable_cores"] or 1
    env: dict[str, Any] = {
        "cpu": cpu,
        "os": {"system": platform.system(), "release": platform.release(), "platform": platform.platform()},
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "runtimes": runtime_devices(),
        "load_average": load_average(),
        "memory_total_mb": _memory_total_mb(),
        "threads": threads,
        "thread_env": {k: os.environ[k] for k in THREAD_ENV
                       if k in os.environ},
        "peak_gflops_fp32": peak_gflops(cpu, cores),
        "peak_cores": cores,
        "flops_per_cycle": flops_per_cycle(cpu["isa"], cpu["vendor"]),
        "git_commit": _git_commit(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if measure_peak:
        env["sgemm_gflops_numpy"] = round(measured_sgemm_gflops(), 2)
        env["copy_gbs"] = round(measured_copy_gbs(), 2)
    return env

"""What CPU this is: model, cores, and the instruction-set flags that decide inference speed (torch-free).

Linux reads ``/proc/cpuinfo`` (x86 ``flags``, Arm ``Features``); macOS asks ``sysctl``; elsewhere the
``platform`` module gives what it can. The ISA list is what a latency report should quote: AVX2, AVX-512,
VNNI (int8 dot products), AMX (matrix tiles), BF16/FP16, and NEON/dot-product/SVE on Arm.

Examples:
    >>> from edgeseg.runtimes.sysinfo import cpu_info
    >>> cpu_info()["isa"]
    ['sse4_2', 'avx', 'avx2', 'fma', 'f16c', 'avx512f', ...]
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

# flags worth reporting, in order (x86 names as Linux spells them, then Arm)
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd",
             "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2")
# macOS sysctl feature names -> Linux spelling
_MAC_FLAGS = {"SSE4.2": "sse4_2", "AVX1.0": "avx", "AVX2": "avx2", "FMA": "fma", "F16C": "f16c",
              "AVX512F": "avx512f", "AVX512BW": "avx512bw", "AVX512VL": "avx512vl", "AVX512VNNI": "avx512_vnni"}
_MAC_ARM = {"hw.optional.neon": "neon", "hw.optional.arm.FEAT_DotProd": "asimddp",
            "hw.optional.arm.FEAT_I8MM": "i8mm", "hw.optional.arm.FEAT_BF16": "bf16",
            "hw.optional.arm.FEAT_FP16": "asimdhp"}


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """Model, vendor, flags and physical core count from the text of ``/proc/cpuinfo``."""
    first: dict[str, str] = {}
    cores: set[tuple[str, str]] = set()
    block: dict[str, str] = {}
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if block:
                first = first or dict(block)
                if "core id" in block:
                    cores.add((block.get("physical id", "0"), block["core id"]))
                block = {}
            continue
        if ":" in line:
            k, v = line.split(":", 1)
            block.setdefault(k.strip(), v.strip())
    head = {**first}
    # Arm kernels put the SoC name after the per-core blocks ("Hardware", "Model").
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            head.setdefault(k.strip(), v.strip())
    flags = set((head.get("flags") or head.get("Features") or "").split())
    model = head.get("model name") or head.get("Model") or head.get("Hardware") or head.get("Processor") or ""
    return {
        "model": model,
        "vendor": head.get("vendor_id") or head.get("CPU implementer", ""),
        "physical_cores": len(cores) or None,
        "flags": flags,
    }


def _sysctl(name: str) -> str:
    try:
        res = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return res.stdout.strip() if res.returncode == 0 else ""


def _mac_info() -> dict[str, Any]:
    flags = {_MAC_FLAGS[f] for f in (_sysctl("machdep.cpu.features") + " " + _sysctl("machdep.cpu.leaf7_features"))
             .split() if f in _MAC_FLAGS}
    flags |= {flag for key, flag in _MAC_ARM.items() if _sysctl(key) == "1"}
    cores = _sysctl("hw.physicalcpu")
    return {"model": _sysctl("machdep.cpu.brand_string"), "vendor": "",
            "physical_cores": int(cores) if cores.isdigit() else None, "flags": flags}


def cpu_info() -> dict[str, Any]:
    """The CPU: model, vendor, architecture, cores (logical, usable by this process, physical), ISA flags.

    Returns:
        ``{"model", "vendor", "machine", "os", "logical_cores", "usable_cores", "physical_cores", "isa"}``;
        ``isa`` lists the flags of :data:`ISA_FLAGS` this CPU has, in that order.
    """
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        found = parse_cpuinfo(cpuinfo.read_text(errors="replace"))
    elif sys.platform == "darwin":
        found = _mac_info()
    else:
        found = {"model": "", "vendor": "", "physical_cores": None, "flags": set()}
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    machine = platform.machine()
    flags = set(found["flags"])
    if machine.lower() in ("arm64", "aarch64") and "asimd" in flags:
        flags.add("neon")  # AArch64 always has Advanced SIMD (NEON); Linux calls it asimd
    return {
        "model": found["model"] or platform.processor() or machine,
        "vendor": found["vendor"],
        "machine": machine,
        "os": f"{platform.system()} {platform.release()}",
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "physical_cores": found["physical_cores"],
        "isa": [f for f in ISA_FLAGS if f in flags],
    }


def isa_summary(isa: list[str]) -> str:
    """A short human line, e.g. "AVX2, AVX-512, VNNI, BF16" (most capable first matters to readers)."""
    names = [("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx512_vnni", "VNNI"),
             ("avx_vnni", "AVX-VNNI"), ("avx512_bf16", "BF16"), ("avx512_fp16", "FP16"), ("neon", "NEON"),
             ("asimddp", "DotProd"), ("i8mm", "I8MM"), ("sve", "SVE")]
    have = set(isa)
    out = [label for flag, label in names if flag in have]
    if "VNNI" in out and "AVX-VNNI" in out:
        out.remove("AVX-VNNI")
    return ", ".join(out) or "baseline"

"""What CPU this is: model, cores, and the instruction-set flags that decide inference speed (torch-free).

Linux reads ``/proc/cpuinfo`` (x86 ``flags``, Arm ``Features``); macOS asks ``sysctl``; elsewhere the
``platform`` module gives what it can. On x86-64 the int8-relevant flags (AVX2, AVX-512, VNNI, AMX) come from
CPUID itself, which is what the int8 kernels of onnxruntime, OpenVINO and XNNPACK follow: under an emulator
or a VM that masks features, ``/proc/cpuinfo`` still shows the host. :func:`int8_path` names the int8 kernel
family this CPU runs, which decides whether an int8 scheme can saturate here. The ISA list is what a latency report should quote: AVX2, AVX-512,
VNNI (int8 dot products), AMX (matrix tiles), BF16/FP16, and NEON/dot-product/SVE on Arm.

Examples:
    >>> from edgeseg.runtimes.sysinfo import cpu_info
    >>> cpu_info()["isa"]
    ['sse4_2', 'avx', 'avx2', 'fma', 'f16c', 'avx512f', ...]
    >>> int8_path()
    'vnni'
"""

from __future__ import annotations

import functools
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


# ---- what this process's CPU really executes (CPUID), for the int8 kernel choice ----
# x86-64 System V machine code for `void cpuid(uint32 leaf, uint32 subleaf, uint32 out[4])`:
# push rbx; mov eax, edi; mov ecx, esi; mov r8, rdx; cpuid; mov [r8], eax; mov [r8+4], ebx;
# mov [r8+8], ecx; mov [r8+12], edx; pop rbx; ret
_CPUID_CODE = bytes.fromhex("5389f889f14989d00fa241890041895804418948084189500c5bc3")
# (leaf, subleaf, register index 0..3 = eax..edx, bit) -> Linux flag name
_CPUID_BITS = {
    "avx2": (7, 0, 1, 5), "avx512f": (7, 0, 1, 16), "avx512bw": (7, 0, 1, 30), "avx512vl": (7, 0, 1, 31),
    "avx512_vnni": (7, 0, 2, 11), "avx512_fp16": (7, 0, 3, 23), "amx_bf16": (7, 0, 3, 22),
    "amx_tile": (7, 0, 3, 24), "amx_int8": (7, 0, 3, 25), "avx_vnni": (7, 1, 0, 4), "avx512_bf16": (7, 1, 0, 5),
}


@functools.lru_cache(maxsize=1)
def cpuid_flags() -> frozenset[str] | None:
    """The int8-relevant x86 flags as CPUID reports them to this process, or None where it cannot be asked.

    ``/proc/cpuinfo`` describes the host; CPUID describes what this process is given, which differs under an
    emulator (``../shared/tools/as-avx2-cpu``) or a VM that masks features. The int8 kernels onnxruntime,
    OpenVINO and XNNPACK pick follow CPUID, so the choice of int8 scheme does too.
    """
    if platform.machine().lower() not in ("x86_64", "amd64") or sys.platform not in ("linux", "darwin"):
        return None
    try:
        import ctypes
        import mmap

        buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, ValueError, AttributeError):  # W^X policies forbid executable anonymous pages
        return None
    try:
        buf.write(_CPUID_CODE)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        fn = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32))(addr)
        regs: dict[tuple[int, int], list[int]] = {}
        out = (ctypes.c_uint32 * 4)()
        fn(0, 0, out)
        max_leaf = out[0]
        flags = set()
        for name, (leaf, sub, reg, bit) in _CPUID_BITS.items():
            if leaf > max_leaf:
                continue
            if (leaf, sub) not in regs:
                fn(leaf, sub, out)
                regs[(leaf, sub)] = list(out)
            if regs[(leaf, sub)][reg] >> bit & 1:
                flags.add(name)
        del fn, addr
        return frozenset(flags)
    finally:
        try:
            buf.close()
        except BufferError:  # a ctypes view still holds it; the page goes with the process
            pass


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
    real = cpuid_flags()
    if real is not None:  # what this process executes wins over the host's description
        flags = (flags - set(_CPUID_BITS)) | real
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


# int8 kernel families. On x86 without VNNI, int8 GEMM/conv kernels multiply u8 x s8 pairs with vpmaddubsw,
# which sums two products into a saturating int16: a full-range uint8 activation times a full-range int8
# weight can overflow it (ORT's U8S8 and OpenVINO's int8 then lose accuracy: measured in docs/notes/issue-14.md).
INT8_PATHS = ("amx", "vnni", "avx512", "avx2", "sse", "i8mm", "dotprod", "neon", "other")
_SATURATING = ("avx512", "avx2", "sse")


def int8_path(isa: list[str] | None = None) -> str:
    """The int8 kernel family of this CPU (or of ``isa``, a flag list as :func:`cpu_info` gives it).

    Returns:
        One of :data:`INT8_PATHS`: "amx", "vnni" (AVX512-VNNI or AVX-VNNI), "avx512" (AVX-512BW, no VNNI),
        "avx2", "sse" (x86 without AVX2), "i8mm", "dotprod", "neon" (Arm), or "other".
    """
    have = set(cpu_info()["isa"] if isa is None else isa)
    if "amx_int8" in have:
        return "amx"
    if have & {"avx512_vnni", "avx_vnni"}:
        return "vnni"
    if "avx512bw" in have:
        return "avx512"
    if "avx2" in have:
        return "avx2"
    for flag, name in (("i8mm", "i8mm"), ("asimddp", "dotprod"), ("neon", "neon"), ("asimd", "neon")):
        if flag in have:
            return name
    if "sse4_2" in have or (isa is None and platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")):
        return "sse"
    return "other"


def int8_saturates(path: str | None = None) -> bool:
    """Whether full-range u8 x s8 int8 arithmetic can saturate on this int8 path (x86 without VNNI)."""
    return (int8_path() if path is None else path) in _SATURATING

"""List the inference runtimes installed here, the devices each can use, and the CPU.

For every backend (torch, onnxruntime, openvino, litert): its version and the devices, execution providers
or delegates it can use on this machine, or, when it is missing, the extra that installs it. The CPU line
(model, cores, ISA flags such as AVX2, AVX-512, VNNI, AMX) says what a latency figure was measured on.
"""

from __future__ import annotations

import argparse
from typing import Any

from edgeseg.cli._format import add_format_argument, print_json, table, wants_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_format_argument(p)


def _what(row: dict[str, Any]) -> str:
    """The backend's devices plus its own words for them (providers, device names, delegates)."""
    if not row["available"]:
        return row.get("error") or f"not installed: {row.get('install', '')}"
    from edgeseg.runtimes import get_runtime

    parts = [", ".join(row.get("devices") or []) or "none", get_runtime(row["name"]).summary(row.get("details") or {})]
    return "; ".join(p for p in parts if p)


def main(args: argparse.Namespace) -> int:
    from edgeseg.runtimes import runtime_info
    from edgeseg.runtimes.sysinfo import cpu_info, int8_path, int8_saturates, isa_summary

    cpu = cpu_info()
    cpu["int8_path"] = int8_path(cpu["isa"])
    rows = runtime_info()
    if wants_json(args):
        print_json({"cpu": cpu, "runtimes": rows})
        return 0
    cores = f"{cpu['logical_cores']} logical"
    if cpu.get("physical_cores"):
        cores += f", {cpu['physical_cores']} physical"
    if cpu["usable_cores"] != cpu["logical_cores"]:
        cores += f", {cpu['usable_cores']} usable"
    print(f"CPU  {cpu['model']} ({cpu['machine']}, {cpu['os']}); {cores} cores; {isa_summary(cpu['isa'])}")
    print(f"     ISA flags: {' '.join(cpu['isa']) or 'none reported'}")
    sat = " (full-range u8 x s8 saturates here: int8 is quantized with the portable scheme)" if int8_saturates(
        cpu["int8_path"]) else ""
    print(f"     int8 path: {cpu['int8_path']}{sat}")
    print()
    body = [(r["name"], r.get("version") or "-", "yes" if r["available"] else "no", _what(r)) for r in rows]
    print(table(body, ["runtime", "version", "available", "devices"]))
    return 0

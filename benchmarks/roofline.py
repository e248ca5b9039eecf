"""Bytes moved against FLOPs: whether a row, and each of its slowest ops, is memory-bound or compute-bound.

A roofline with the machine's two ceilings: the theoretical FP32 peak (``peak_gflops_fp32``, cores x clock x
FLOP/cycle) and the measured copy bandwidth (``copy_gbs``, a 64 MiB array copy: working sets beyond the
caches). An op whose arithmetic intensity (FLOPs per byte) is below the ridge (peak / bandwidth) cannot run
faster than its bytes allow: memory-bound.

What is counted, per layer of the torch model (:func:`edgeseg.profiling.layer_costs`):

- FLOPs: 2 x the MACs of convolutions and linear layers (norms are folded into them by every exporter, and
  activations fused);
- bytes: the layer's input and output activations plus its weights, at the artifact's precision (int8: 1 byte
  each; fp32 and fp16 activations 4 bytes, since the CPU runtimes compute fp16 artifacts in fp32; fp16
  weights 2 bytes). Pools and resizes move bytes and do no counted FLOPs.

These are model-level estimates: a runtime that keeps a tensor in cache between fused ops moves fewer bytes,
so "memory-bound" means "bound by bytes if they came from memory"; the attained bandwidth says how close.
"""

from __future__ import annotations

import re
from typing import Any

COMPUTE_KINDS = ("pointwise conv", "depthwise conv", "conv", "transposed conv", "linear")
MEMORY_KINDS = ("pool", "upsample")
_CONV_OPS = ("conv", "gemm", "matmul", "fullyconnected")


def element_bytes(precision: str) -> tuple[int, int]:
    """(activation, weight) bytes per element of an artifact at ``precision``."""
    return {"int8": (1, 1), "fp16": (4, 2)}.get(precision, (4, 4))


def layer_cost(c: dict[str, Any], precision: str) -> tuple[float, float]:
    """(FLOPs, bytes) of one layer of :func:`edgeseg.profiling.layer_costs` at ``precision``."""
    act, wgt = element_bytes(precision)
    if c["kind"] in COMPUTE_KINDS:
        return 2.0 * c["macs"], float((c["in_elems"] + c["out_elems"]) * act + c["params"] * wgt)
    if c["kind"] in MEMORY_KINDS:
        return 0.0, float((c["in_elems"] + c["out_elems"]) * act)
    return 0.0, 0.0  # folded or fused away


def bound(flops: float, nbytes: float, ms: float | None, peak_gflops: float | None,
          gbs: float | None) -> dict[str, Any]:
    """Intensity, the roofline's time floor, what bounds it, and what was attained in ``ms``."""
    out: dict[str, Any] = {"gflop": round(flops / 1e9, 5), "mbytes": round(nbytes / 1e6, 4),
                           "intensity": round(flops / nbytes, 3) if nbytes else None}
    if peak_gflops and gbs:
        t_compute, t_memory = flops / (peak_gflops * 1e9), nbytes / (gbs * 1e9)
        out["ridge"] = round(peak_gflops / gbs, 3)
        out["bound"] = "memory" if t_memory >= t_compute else "compute"
        out["floor_ms"] = round(max(t_compute, t_memory) * 1e3, 5)
    if ms:
        out["attained_gflops"] = round(flops / (ms * 1e6), 3)
        out["attained_gbs"] = round(nbytes / (ms * 1e6), 3)
        if out.get("floor_ms"):
            out["of_floor"] = round(ms / out["floor_ms"], 2)  # how many times the floor the op took
    return out


def row_roofline(costs: dict[str, dict[str, Any]], precision: str, ms: float | None,
                 env: dict[str, Any]) -> dict[str, Any]:
    """The whole model at ``precision`` run in ``ms``, on the machine ``env`` describes."""
    flops = nbytes = 0.0
    for c in costs.values():
        f, b = layer_cost(c, precision)
        flops, nbytes = flops + f, nbytes + b
    return bound(flops, nbytes, ms, env.get("peak_gflops_fp32"), env.get("copy_gbs"))


def _per_call(c: dict[str, Any]) -> dict[str, Any]:
    n = max(1, int(c.get("calls", 1)))
    return {**c, "macs": c["macs"] / n, "in_elems": c["in_elems"] / n, "out_elems": c["out_elems"] / n}


def _layer_of(op: dict[str, Any], costs: dict[str, dict[str, Any]], index: Any) -> str | None:
    """The counted layer a profiled op ran, or None. The exporter numbers the calls of a shared module
    (``/SA/conv_4/Conv``), and onnxruntime's layout pass names a fused conv after the activation whose output
    it writes (``.../pconv1.2/Clip_output_0_nchwc``): both are mapped back."""
    from edgeseg.converters.scopes import scoped

    scope = scoped([op["name"]])[0].scope
    path = index.resolve(scope) or index.resolve(tuple(re.sub(r"_\d+$", "", s) for s in scope))
    if not path:
        return None
    is_conv_op = any(w in op["op"].lower() for w in _CONV_OPS)
    c = costs.get(path)
    if c is not None and (c["kind"] in COMPUTE_KINDS) == is_conv_op:
        return path
    if not is_conv_op:
        return None
    # a conv op named after a container or a sibling (its fused activation): the one conv in that unit
    for unit in (path, path.rsplit(".", 1)[0] if "." in path else ""):
        inside = [k for k, v in costs.items() if unit and k.startswith(unit + ".") and v["kind"] in COMPUTE_KINDS]
        if len(inside) == 1:
            return inside[0]
    return None


def op_roofline(ops: list[dict[str, Any]], costs: dict[str, dict[str, Any]], index: Any, precision: str,
                env: dict[str, Any]) -> None:
    """Add a roofline entry (one call of its layer) to each profiled op that maps onto a counted layer, in
    place. Ops the runtime added (reorders, casts) or that map onto no counted layer get none. ``index`` is
    a :class:`edgeseg.converters.scopes.ModuleIndex` over the model."""
    for o in ops:
        path = _layer_of(o, costs, index)
        if path is None:
            continue
        c = costs[path]
        f, b = layer_cost(_per_call(c), precision)
        o["layer"], o["kind"] = path, c["kind"]
        o["roofline"] = bound(f, b, o["ms"], env.get("peak_gflops_fp32"), env.get("copy_gbs"))

"""Name scopes -> torch module paths: how a backend's graph op is tied to the layer it came from, and how a
quantizer is told to leave layers in float.

Each backend names its ops after the module that made them: the TorchScript exporter's
``/encoder1/encoder1.0/pconv1/pconv1.0/Conv`` (ONNX, and OpenVINO IR converted from that ONNX file), and
litert-torch's ``package.Class_attr`` segments in TFLite tensor names (read into attribute lists by the LiteRT
runtime). :class:`ModuleIndex` maps either onto module paths. :func:`match_layers` gives each layer its tensor
(the last op in its scope; :mod:`edgeseg.converters.layerwise`), :func:`nodes_in` the ops a quantizer must skip
(ONNX ``nodes_to_exclude``, NNCF ``ignored_scope``), and :func:`keep_float_in_pt2e` does it for PT2E
quantizers (TFLite, ExecuTorch).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


class ModuleIndex:
    """Module paths of a torch model, and the mapping from a backend's name scopes to them.

    Args:
        net: the torch model (or a wrapper holding it as ``.wrapped``, as ``to_channel_last_io`` does).
    """

    def __init__(self, net: Any):
        import torch.nn as nn

        self.paths: dict[str, Any] = {name: m for name, m in net.named_modules() if name}
        # litert-torch leaves the names of ModuleList / ModuleDict containers out of its scopes
        self._collapsed: dict[str, str] = {}
        lists = {n for n, m in self.paths.items() if isinstance(m, (nn.ModuleList, nn.ModuleDict))}
        for name in self.paths:
            parts = name.split(".")
            keep = [p for i, p in enumerate(parts) if ".".join(parts[: i + 1]) not in lists]
            self._collapsed.setdefault(".".join(keep), name)

    def resolve(self, scope: Sequence[str]) -> str | None:
        """The deepest module path that a backend scope (segments, outermost first) names, or None.

        Up to two leading segments that name no module (a layout wrapper's) are skipped."""
        scope = [s for s in scope if s]
        for start in range(min(3, len(scope))):
            hit = self._resolve(scope[start:])
            if hit is not None:
                return hit
        return None

    def _resolve(self, scope: Sequence[str]) -> str | None:
        parts: list[str] = []
        prev = ""
        best = None
        for seg in scope:
            # the TorchScript exporter writes a Sequential's child as "<parent>.<index>"
            parts.append(seg[len(prev) + 1 :] if prev and seg.startswith(prev + ".") else seg)
            prev = seg
            path = ".".join(parts)
            hit = path if path in self.paths else self._collapsed.get(path)
            if hit is not None:
                best = hit
        return best

    def within(self, path: str | None, layer: str) -> bool:
        return path is not None and (path == layer or path.startswith(layer + "."))


def match_layers(ops: Iterable[Any], index: ModuleIndex, layers: Sequence[str]) -> dict[str, str]:
    """For each layer, the tensor id of the last op inside its scope (layers no op maps to are left out)."""
    wanted = set(layers)
    found: dict[str, str] = {}
    for op in ops:
        path = index.resolve(op.scope)
        while path is not None:
            if path in wanted:
                found[path] = op.tensor  # later ops overwrite: the layer's output is its last op
            path = path.rsplit(".", 1)[0] if "." in path else None
    return found


def nodes_in(ops: Iterable[Any], index: ModuleIndex, layers: Sequence[str]) -> list[str]:
    """Names of the ops that lie inside any of ``layers`` (what a quantizer must leave in float)."""
    out = []
    for op in ops:
        path = index.resolve(op.scope)
        if any(index.within(path, layer) for layer in layers):
            out.append(op.name)
    return out


@dataclass(frozen=True)
class GraphOp:
    """A node of a graph a converter is about to quantize (the converter-side twin of ``LayerOp``)."""

    name: str
    scope: tuple[str, ...]


def scoped(names: Iterable[str]) -> list[GraphOp]:
    """ONNX / OpenVINO node names (``/encoder1/encoder1.0/pconv1/pconv1.0/Conv``) as scoped ops."""
    ops = []
    for name in names:
        segs = tuple(s for s in name.split("/") if s)
        ops.append(GraphOp(name=name, scope=segs[:-1]))
    return ops


def keep_float_in_pt2e(quantizer: Any, layers: Sequence[str], prefix: str = "") -> Any:
    """Make a torchao PT2E ``quantizer`` leave the nodes of ``layers`` (module paths, under ``prefix`` in the
    exported graph, e.g. "wrapped." for a layout wrapper) unannotated, so they stay in float. Works for any
    quantizer (litert-torch's PT2EQuantizer, ExecuTorch's XNNPACKQuantizer): it strips the annotations its own
    ``annotate`` made, after it made them."""
    if not layers:
        return quantizer
    wanted = [prefix + layer for layer in layers]
    annotate = quantizer.annotate

    def inside(node: Any) -> bool:
        for fqn, _cls in (node.meta.get("nn_module_stack") or {}).values():
            if any(fqn == w or fqn.startswith(w + ".") for w in wanted):
                return True
        return False

    def annotate_keeping_float(model: Any) -> Any:
        model = annotate(model)
        for node in model.graph.nodes:
            if "quantization_annotation" in node.meta and inside(node):
                del node.meta["quantization_annotation"]
        return model

    quantizer.annotate = annotate_keeping_float
    return quantizer

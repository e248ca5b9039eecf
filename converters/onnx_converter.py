"""torch -> ONNX: fp32, fp16 (float32 I/O), int8 static QDQ and dynamic int8 through onnxruntime.quantization.

Exporter: the TorchScript exporter (``torch.onnx.export(dynamo=False)``) by default. Measured with torch 2.13
on ultralightunet-t/-s (see notes/issue-6.md): it exports in ~0.5 s at exactly the requested opset 17 and
its graph quantizes well; the dynamo exporter takes 8-18 s, cannot down-convert to opset 17 (it falls back
to 18), its graph breaks onnxruntime's symbolic shape inference, and static QDQ of its graph was far less
faithful on the same calibration data (max logit error 0.33 vs 0.003). ``exporter="dynamo"`` stays
available. After export the graph is simplified with the onnxscript optimizer (constant folding, dead-node
removal: conv biases become initializers, which the quantizer needs) and checked with ``onnx.checker``.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from edgeseg.converters.base import Artifact, ConvertConfig, Converter, channels_last_wrapper, to_layout
from edgeseg.runtimes.manifest import TensorSpec

_ONNX_DTYPES = {1: "float32", 10: "float16", 3: "int8", 2: "uint8"}
_CALIB_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


@contextlib.contextmanager
def _quiet_ort():
    """Silence onnxruntime's per-initializer warnings while the quantizer builds its sessions."""
    import logging

    import onnxruntime as ort

    root = logging.getLogger()
    level = root.level
    ort.set_default_logger_severity(3)
    root.setLevel(logging.ERROR)  # "Please consider pre-processing": the graph is already simplified
    try:
        yield
    finally:
        ort.set_default_logger_severity(2)
        root.setLevel(level)


def export_onnx(model: Any, sample: Any, path: Path, cfg: ConvertConfig) -> dict[str, Any]:
    """Export ``model`` (already in the artifact's layout) to ``path``; returns facts for the manifest."""
    import torch

    names = {"input_names": ["input"], "output_names": ["logits"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if cfg.exporter == "torchscript":
            dyn = {"input": {0: "batch"}, "logits": {0: "batch"}} if cfg.batch is None else None
            with torch.no_grad():
                torch.onnx.export(
                    model,
                    (sample,),
                    str(path),
                    dynamo=False,
                    opset_version=cfg.opset,
                    do_constant_folding=True,
                    dynamic_axes=dyn,
                    **names,
                )
        else:
            shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},) if cfg.batch is None else None
            with torch.no_grad(), contextlib.redirect_stdout(None):
                torch.onnx.export(
                    model,
                    (sample,),
                    str(path),
                    dynamo=True,
                    opset_version=max(cfg.opset, 18),
                    dynamic_shapes=shapes,
                    optimize=True,
                    external_data=False,
                    verbose=False,
                    **names,
                )
    return {"exporter": cfg.exporter, "torch_onnx_dynamo": cfg.exporter == "dynamo"}


def _toposort(graph: Any) -> None:
    """Order ``graph.node`` topologically (the fp16 converter inserts casts out of order)."""
    produced = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(i in produced for i in node.input):
                ordered.append(node)
                produced.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError("the ONNX graph has a cycle or an undefined input; cannot sort it")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def _io_spec(value_info: Any, layout: str) -> TensorSpec:
    t = value_info.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
    return TensorSpec(
        name=value_info.name,
        shape=shape,
        layout=layout,
        dtype=_ONNX_DTYPES.get(t.elem_type, str(t.elem_type)),
    )


class _Reader:
    """onnxruntime CalibrationDataReader over calibration batches (``ConvertConfig.calibration_batches``)."""

    def __init__(self, batches: list[np.ndarray], input_name: str):
        self._batches = batches
        self._name = input_name
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self._batches):
            return None
        self._i += 1
        return {self._name: self._batches[self._i - 1]}

    def rewind(self) -> None:
        self._i = 0


def _restore_scopes(graph: Any) -> None:
    """Give the nodes the optimizer made by fusing (``node_Conv_7``) a scoped name again, taken from the tensor
    they write (``/encoder3/encoder3.0/pconv2/pconv2.1/BatchNormalization_output_0`` -> ``.../pconv2.1/Conv``),
    so that layer taps, ``keep_float`` and profiles still find the module they belong to."""
    taken = {n.name for n in graph.node}
    for node in graph.node:
        if "/" in node.name or not node.output or "/" not in node.output[0]:
            continue
        base = node.output[0].rsplit("/", 1)[0] + "/" + node.op_type
        name, i = base, 1
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        taken.add(name)
        node.name = name


def _nodes_of(proto: Any, model: Any, layers: tuple[str, ...]) -> list[str]:
    """The graph's node names inside ``layers`` (torch module paths): what quantize_static must exclude."""
    if not layers:
        return []
    from edgeseg.converters.scopes import ModuleIndex, nodes_in, scoped

    return nodes_in(scoped(n.name for n in proto.graph.node if n.name), ModuleIndex(model), layers)


def _kept(cfg: ConvertConfig, nodes: list[str]) -> dict[str, Any]:
    """The manifest's record of layers left in float (empty when all of them are int8)."""
    return {"keep_float": list(cfg.keep_float), "float_nodes": len(nodes)} if cfg.keep_float else {}


class OnnxConverter(Converter):
    """torch -> ONNX (opset >= 17), optional simplification, fp16 or int8 through onnxruntime."""

    target = "onnx"

    def _convert(self, model: Any, sample: Any, cfg: ConvertConfig, out_path: Path) -> Artifact:
        import onnx

        net = channels_last_wrapper(model) if cfg.channels_last else model
        x = to_layout(sample, cfg)
        fp32_path = out_path.with_name(out_path.stem + ".fp32.onnx")
        extra = export_onnx(net, x, fp32_path, cfg)
        proto = onnx.load(str(fp32_path))
        raw = proto
        if cfg.simplify and cfg.precision != "fp16":
            from onnxscript import optimizer

            before = len(proto.graph.node)
            proto = optimizer.optimize(proto)
            _restore_scopes(proto.graph)
            extra["simplified"] = {
                "tool": "onnxscript.optimizer",
                "nodes_before": before,
                "nodes_after": len(proto.graph.node),
            }
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(fp32_path))
        quant: dict[str, Any] = {}
        if cfg.precision == "fp32":
            fp32_path.replace(out_path)
        elif cfg.precision == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            # from the unsimplified graph: after constant folding, initializers shared by several Resize
            # nodes get duplicate cast names from the fp16 converter (invalid SSA)
            half = convert_float_to_float16(raw, keep_io_types=True)
            _toposort(half.graph)
            onnx.checker.check_model(half, full_check=True)
            onnx.save(half, str(out_path))
            quant = {
                "scheme": "fp16",
                "weights": "float16",
                "io": "float32 (cast at the graph boundary)",
                "tool": "onnxruntime.transformers.float16",
            }
        elif cfg.int8_scheme == "static":
            exclude = _nodes_of(proto, model, cfg.keep_float)
            quant = self._static_int8(fp32_path, out_path, cfg, proto.graph.input[0].name, exclude)
        else:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            with _quiet_ort():
                quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8, per_channel=True)
            quant = {
                "scheme": "dynamic",
                "weights": "int8 per-channel symmetric",
                "activations": "float32, quantized at run time",
                "tool": "onnxruntime.quantization",
            }
        fp32_path.unlink(missing_ok=True)
        final = onnx.load(str(out_path))
        onnx.checker.check_model(final, full_check=True)
        ops = sorted({n.op_type for n in final.graph.node})
        extra.update(
            opset=int(next(o.version for o in final.opset_import if o.domain in ("", "ai.onnx"))),
            nodes=len(final.graph.node),
            op_types=ops,
        )
        layout = cfg.manifest_layout
        return Artifact(
            path=out_path,
            target="onnx",
            precision=cfg.precision,
            files=[out_path],
            inputs=[_io_spec(final.graph.input[0], layout)],
            outputs=[_io_spec(final.graph.output[0], layout)],
            quantization=quant,
            extra=extra,
        )

    def _static_int8(
        self, src: Path, dst: Path, cfg: ConvertConfig, input_name: str, exclude: list[str]
    ) -> dict[str, Any]:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        assert cfg.calibration is not None  # ConvertConfig guarantees it for static int8
        reader = _Reader(cfg.calibration_batches(), input_name)
        method = getattr(CalibrationMethod, _CALIB_METHODS[cfg.calib_method])
        # uint8 activations: with int8 activations the QDQ model of the trained ultralightunet-s collapsed
        # (mask agreement 0.22 vs 0.98 with uint8; notes/issue-6.md). Weights: int8 (U8S8) for CPUs with
        # VNNI; "portable" takes uint8 weights (U8U8), which MLAS computes without the int16 saturation of
        # U8S8 on x86 CPUs without VNNI: on an AVX2-only CPU U8S8 of ultralightunet-s fell to 0.993 mask
        # agreement while U8U8 gave 0.999, bit for bit the same as on a VNNI CPU (notes/issue-14.md)
        portable = cfg.int8_isa == "portable"
        with _quiet_ort():
            quantize_static(
                str(src),
                str(dst),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QUInt8 if portable else QuantType.QInt8,
                calibrate_method=method,
                nodes_to_exclude=exclude,
            )
        return {
            "scheme": "static",
            "format": "QDQ",
            "weights": "uint8 per-channel (asymmetric)" if portable else "int8 per-channel symmetric",
            "activations": "uint8 per-tensor (asymmetric)",
            "int8_isa": cfg.int8_isa,
            "calibration_method": cfg.calib_method,
            "tool": "onnxruntime.quantization.quantize_static",
            "calibration": cfg.calibration.provenance,
            **_kept(cfg, exclude),
        }

"""torch -> OpenVINO IR (``.xml`` + ``.bin``): fp32, fp16 weight compression, int8 with NNCF.

The model goes through the same ONNX export as the ONNX target (TorchScript exporter, opset 17) and
``openvino.convert_model`` reads that file: measured on ultralightunet-s, the ONNX frontend gave the same
outputs as ``convert_model(torch_module)`` (max abs diff to torch identical) with fewer ops, in about a third
of the time (the torch frontend took 25-45 s per conversion on the shared 2-core machine).

fp16 stores the weights in half precision (``compress_to_fp16``); the device decides the compute
precision. int8 runs ``nncf.quantize`` over the calibration set (post-training, with fast bias correction).
Layers the accuracy budget keeps in float (``cfg.keep_float``, chosen by :mod:`edgeseg.converters.budget` for
every backend alike) lose their quantizers afterwards (:func:`revert_to_float`): NNCF quantizes the whole graph
once per conversion (its statistics pass is most of its ~8 s), and each budget trial is a clone of that graph
with some layers returned to float, in milliseconds, instead of another ``nncf.quantize``.
``nncf.quantize_with_accuracy_control`` is not used: on ultralightunet-t at 128 px it had not finished after 3
minutes (issue 14), where the budget's search takes a few conversions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from edgeseg.converters.base import Artifact, ConvertConfig, Converter, channels_last_wrapper, to_layout
from edgeseg.runtimes.manifest import TensorSpec

_OV_DTYPES = {"f32": "float32", "f16": "float16", "i8": "int8", "u8": "uint8"}


def _port_spec(port: Any, layout: str, default: str) -> TensorSpec:
    names = port.get_names()
    name = sorted(names)[0] if names else default
    shape = [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]
    dtype = _OV_DTYPES.get(port.get_element_type().get_type_name(), port.get_element_type().get_type_name())
    return TensorSpec(name=name, shape=shape, layout=layout, dtype=dtype)


class OpenVINOConverter(Converter):
    """torch -> OpenVINO IR through ``openvino.convert_model``; int8 through NNCF."""

    target = "openvino"

    def _float_model(self, model: Any, sample: Any, cfg: ConvertConfig, out_path: Path) -> Any:
        """The float OpenVINO model of ``model`` (exported through ONNX), converted once per model and export
        settings and cloned for each use: the precisions of one target and the accuracy budget's trials
        (which differ only in the layers kept in float) all start from the same graph."""
        import openvino as ov
        from edgeseg.converters.onnx_converter import export_onnx

        key = (tuple(sample.shape), cfg.batch, cfg.exporter, cfg.opset, cfg.channels_last)
        cached = getattr(self, "_float", None)
        if cached is None or cached[0] is not model or cached[1] != key:
            net = channels_last_wrapper(model) if cfg.channels_last else model
            src = out_path.with_name(out_path.stem + ".src.onnx")
            export_onnx(net, to_layout(sample, cfg), src, cfg)
            ov_model = ov.convert_model(str(src))
            src.unlink(missing_ok=True)
            ov_model.inputs[0].get_tensor().set_names({"input"})
            ov_model.outputs[0].get_tensor().set_names({"logits"})
            self._float = cached = (model, key, ov_model)
        return cached[2].clone()

    def _convert(self, model: Any, sample: Any, cfg: ConvertConfig, out_path: Path) -> Artifact:
        import openvino as ov

        ov_model = self._float_model(model, sample, cfg, out_path)
        quant: dict[str, Any] = {}
        compress = False
        if cfg.precision == "fp16":
            compress = True
            quant = {
                "scheme": "fp16",
                "weights": "float16 (compress_to_fp16)",
                "io": "float32",
                "compute": "device default (CPU runs f32 unless an inference precision hint is given)",
                "tool": "openvino.save_model",
            }
        elif cfg.precision == "int8":
            ov_model, quant = self._int8(ov_model, cfg, model)
        ov.save_model(ov_model, str(out_path), compress_to_fp16=compress)
        bin_path = out_path.with_suffix(".bin")
        saved = ov.Core().read_model(str(out_path))
        ops = sorted({op.get_type_name() for op in saved.get_ops()})
        layout = cfg.manifest_layout
        return Artifact(
            path=out_path,
            target="openvino",
            precision=cfg.precision,
            files=[bin_path, out_path],
            inputs=[_port_spec(saved.inputs[0], layout, "input")],
            outputs=[_port_spec(saved.outputs[0], layout, "logits")],
            quantization=quant,
            extra={
                "frontend": f"openvino.convert_model (ONNX, {cfg.exporter} exporter, opset {cfg.opset})",
                "op_types": ops,
                "compress_to_fp16": compress,
            },
        )

    def _int8(self, ov_model: Any, cfg: ConvertConfig, model: Any) -> tuple[Any, dict[str, Any]]:
        """int8 of ``ov_model``: NNCF's quantization of the whole graph, made once per float model, calibration
        set and scheme and cloned for each use; the layers kept in float (``cfg.keep_float``) then lose their
        quantizers (:func:`revert_to_float`), and the weights are compressed to int8 last."""
        import nncf
        from openvino._offline_transformations import compress_quantize_weights_transformation

        if cfg.calibration is None:  # ConvertConfig guarantees calibration for static int8
            raise ValueError("int8 needs calibration data")
        portable = cfg.int8_isa == "portable"
        float_model = self._float[2]
        cached = getattr(self, "_quantized", None)
        if cached is None or cached[0] is not float_model or cached[1] is not cfg.calibration or cached[2] != portable:
            batches = cfg.calibration_batches()
            self._quantized = cached = (float_model, cfg.calibration, portable, _quantize(ov_model, batches, portable),
                                        len(batches))
        q = cached[3].clone()
        info: dict[str, Any] = {
            "scheme": "static",
            "weights": "int8 per-channel symmetric" + (" (7-bit range: overflow fix)" if portable else ""),
            "activations": "int8 per-tensor",
            "int8_isa": cfg.int8_isa,
            "tool": f"nncf {nncf.__version__}",
            "preset": "performance (nncf default)",
            "overflow_fix": "all layers" if portable else "first layer (nncf default)",
            "fast_bias_correction": True,
            "subset_size": cached[4],
            "calibration": cfg.calibration.provenance,
        }
        if cfg.keep_float:
            from edgeseg.converters.scopes import ModuleIndex, nodes_in, scoped

            names = nodes_in(scoped(op.get_friendly_name() for op in float_model.get_ordered_ops()),
                             ModuleIndex(model), cfg.keep_float)
            removed = revert_to_float(q, float_model, names)
            info.update(keep_float=list(cfg.keep_float), float_nodes=len(names), quantizers_removed=removed,
                        keep_float_method="quantizers removed from the whole-graph NNCF quantization, biases "
                                          "restored (NNCF statistics computed once per conversion)")
        compress_quantize_weights_transformation(q)  # what nncf.quantize does last by default
        return q, info


def _quantize(ov_model: Any, batches: list[Any], portable: bool) -> Any:
    """``nncf.quantize`` of the whole graph with FakeQuantize on weights left uncompressed (float weights), so
    that layers can be returned to float afterwards without another statistics pass."""
    import logging

    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    # "portable": NNCF's overflow fix on every layer (7-bit weight range), so that the u8 x s8 products of
    # CPUs without VNNI cannot saturate their int16 sums; NNCF's default fixes only the first layer. On an
    # AVX2-only CPU that default lost mask agreement (0.954 vs 0.995 on the test network) while the
    # portable IR gave the VNNI CPU's figures exactly (notes/issue-14.md)
    advanced = AdvancedQuantizationParameters(
        overflow_fix=OverflowFix.ENABLE if portable else OverflowFix.FIRST_LAYER,
        backend_params={"compress_weights": False},
    )
    log = logging.getLogger("nncf")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        return nncf.quantize(ov_model, nncf.Dataset(batches), subset_size=len(batches), advanced_parameters=advanced)
    finally:
        log.setLevel(level)


def revert_to_float(quantized: Any, float_model: Any, names: list[str]) -> int:
    """Return the ops ``names`` of an NNCF-quantized model (FakeQuantize, weights not yet compressed) to float,
    in place: every FakeQuantize that feeds one of them is bypassed for that op (it stays for its other
    consumers), and the constants fast bias correction changed in them are restored from ``float_model``.
    Returns the number of op inputs rewired.

    What NNCF's ``ignored_scope`` would give, without its statistics pass: the remaining quantizers' ranges are
    statistics of the same float tensors. The placement can differ where a quantizer sat before a
    quantization-agnostic op (MaxPool) shared by a float and an int8 consumer: here it stays where it was, so
    the int8 consumer reads the same quantized tensor as in the all-int8 model.
    """
    import openvino as ov

    wanted = set(names)
    original = {op.get_friendly_name(): op for op in float_model.get_ops()}
    rewired = 0
    for op in quantized.get_ordered_ops():
        if op.get_friendly_name() not in wanted:
            continue
        for port in op.inputs():
            src = port.get_source_output().get_node()
            if src.get_type_name() == "FakeQuantize":
                port.replace_source_output(src.input_value(0))
                rewired += 1
        ref = original.get(op.get_friendly_name())
        if ref is None or ref.get_input_size() != op.get_input_size():
            continue
        for k in range(op.get_input_size()):  # biases: fast bias correction rewrote the Add's constant
            mine, theirs = op.input_value(k).get_node(), ref.input_value(k).get_node()
            if (mine.get_type_name() == theirs.get_type_name() == "Constant"
                    and mine.get_output_shape(0) == theirs.get_output_shape(0)
                    and not np.array_equal(mine.get_data(), theirs.get_data())):
                op.input(k).replace_source_output(ov.op.Constant(theirs.get_data()).output(0))
    quantized.validate_nodes_and_infer_types()
    return rewired

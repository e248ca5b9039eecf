"""torch -> OpenVINO IR (``.xml`` + ``.bin``): fp32, fp16 weight compression, int8 with NNCF.

The model goes through the same ONNX export as the ONNX target (TorchScript exporter, opset 17) and
``openvino.convert_model`` reads that file: measured on ultralightunet-s, the ONNX frontend gave the same
outputs as ``convert_model(torch_module)`` (max abs diff to torch identical) with fewer ops, in about a third
of the time (the torch frontend took 25-45 s per conversion on the shared 2-core machine).

fp16 stores the weights in half precision (``compress_to_fp16``); the device decides the compute
precision. int8 runs
``nncf.quantize`` over the calibration set (post-training, with fast bias correction). Layers the accuracy
budget keeps in float (``cfg.keep_float``, chosen by :mod:`edgeseg.converters.budget` for every backend
alike) go to NNCF's ``ignored_scope``. ``nncf.quantize_with_accuracy_control`` is not used: on ultralightunet-t
at 128 px it had not finished after 3 minutes (issue 14), where the budget's search takes a few conversions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
        import nncf

        calib = cfg.calibration
        if calib is None:  # ConvertConfig guarantees calibration for static int8
            raise ValueError("int8 needs calibration data")
        batches = cfg.calibration_batches()
        dataset = nncf.Dataset(batches)
        # "portable": NNCF's overflow fix on every layer (7-bit weight range), so that the u8 x s8 products of
        # CPUs without VNNI cannot saturate their int16 sums; NNCF's default fixes only the first layer. On an
        # AVX2-only CPU that default lost mask agreement (0.954 vs 0.995 on the test network) while the
        # portable IR gave the VNNI CPU's figures exactly (notes/issue-14.md)
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

        portable = cfg.int8_isa == "portable"
        advanced = AdvancedQuantizationParameters(
            overflow_fix=OverflowFix.ENABLE if portable else OverflowFix.FIRST_LAYER
        )
        info: dict[str, Any] = {
            "scheme": "static",
            "weights": "int8 per-channel symmetric" + (" (7-bit range: overflow fix)" if portable else ""),
            "activations": "int8 per-tensor",
            "int8_isa": cfg.int8_isa,
            "tool": f"nncf {nncf.__version__}",
            "preset": "performance (nncf default)",
            "overflow_fix": "all layers" if portable else "first layer (nncf default)",
            "fast_bias_correction": True,
            "subset_size": len(batches),
            "calibration": calib.provenance,
        }
        ignored = None
        if cfg.keep_float:
            from edgeseg.converters.scopes import ModuleIndex, nodes_in, scoped

            names = nodes_in(scoped(op.get_friendly_name() for op in ov_model.get_ordered_ops()),
                             ModuleIndex(model), cfg.keep_float)
            ignored = nncf.IgnoredScope(names=names, validate=False)
            info.update(keep_float=list(cfg.keep_float), float_nodes=len(names))
        kwargs = {"ignored_scope": ignored} if ignored is not None else {}
        import logging

        log = logging.getLogger("nncf")
        level = log.level
        log.setLevel(logging.WARNING)  # an ignored scope makes NNCF log every node it leaves out
        try:
            q = nncf.quantize(ov_model, dataset, subset_size=len(batches), advanced_parameters=advanced, **kwargs)
        finally:
            log.setLevel(level)
        return q, info

"""torch -> TFLite with litert-torch (the successor of ai-edge-torch): fp32, fp16, int8 (dynamic or static).

- fp32: ``litert_torch.convert``; channels-last I/O (the default for this target: TFLite kernels and camera
  frames are NHWC) through ``litert_torch.to_channel_last_io``.
- fp16: ai-edge-quantizer's float-casting recipe on the fp32 flatbuffer (float16 weights, float32 compute
  and I/O).
- int8 static, ``quantizer="pt2e"`` (default): PT2E through torchao's ``prepare_pt2e``/``convert_pt2e`` with
  litert-torch's ``PT2EQuantizer`` (symmetric, per-channel weights, histogram activation observers),
  calibrated by running the prepared graph, then converted with ``quant_config``: full-integer, int8 I/O.
- int8 static, ``quantizer="aeq"``: ai-edge-quantizer's ``static_wi8_ai8`` recipe on the fp32 flatbuffer,
  calibrated through its own interpreter (min/max).
- int8 dynamic: ai-edge-quantizer ``dynamic_wi8_afp32`` (default) or PT2E with dynamic activations.

torch.export specialises the batch, so TFLite artifacts have a fixed batch (a dynamic batch failed in the
converter: "Shapes must be 1D sequences of concrete values").
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
from edgeseg.converters.base import Artifact, ConvertConfig, Converter, to_layout
from edgeseg.runtimes.manifest import TensorSpec

_DTYPES = {
    np.dtype(np.float32): "float32",
    np.dtype(np.float16): "float16",
    np.dtype(np.int8): "int8",
    np.dtype(np.uint8): "uint8",
}


@contextlib.contextmanager
def _quiet():
    """ai-edge-quantizer prints a size report on stdout; keep stdout clean for --json."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _details(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(input detail, output detail, signatures) read from the flatbuffer (introspection, no inference)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(
        model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    return it.get_input_details()[0], it.get_output_details()[0], it.get_signature_list()


def _spec(detail: dict[str, Any], layout: str) -> TensorSpec:
    scale, zero = detail.get("quantization", (0.0, 0))
    dtype = _DTYPES.get(np.dtype(detail["dtype"]), str(np.dtype(detail["dtype"])))
    quant = dtype in ("int8", "uint8") and bool(scale)
    return TensorSpec(
        name=str(detail["name"]),
        shape=[int(d) for d in detail["shape"]],
        layout=layout,
        dtype=dtype,
        scale=float(scale) if quant else None,
        zero_point=int(zero) if quant else None,
    )


def _op_types(path: Path) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(
        model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    return sorted({op["op_name"] for op in it._get_ops_details()})


class TFLiteConverter(Converter):
    """torch -> .tflite through litert-torch; fp16 / int8 through ai-edge-quantizer or PT2E."""

    target = "tflite"

    def __init__(self) -> None:
        # fp32 flatbuffers already made by this instance, reused by fp16 / ai-edge-quantizer int8 (the
        # litert-torch conversion is the slow step: ~30-70 s on 2 cores)
        self._fp32: dict[tuple[Any, ...], bytes] = {}

    def _fp32_flatbuffer(self, net: Any, x: Any, cfg: ConvertConfig, model: Any, path: Path) -> bool:
        """Write the fp32 flatbuffer to ``path``; True when it came from this instance's cache."""
        import litert_torch

        key = (id(model), cfg.layout, cfg.batch, cfg.input_size, cfg.in_channels)
        if key in self._fp32:
            path.write_bytes(self._fp32[key])
            return True
        with _quiet():
            litert_torch.convert(net.eval(), (x,)).export(str(path))
        self._fp32[key] = path.read_bytes()
        return False

    def _convert(self, model: Any, sample: Any, cfg: ConvertConfig, out_path: Path) -> Artifact:
        from edgeseg.layers.self_attention import tflite_safe_attention

        with tflite_safe_attention():  # attention products in a form litert-torch lowers correctly
            return self._convert_traced(model, sample, cfg, out_path)

    def _convert_traced(self, model: Any, sample: Any, cfg: ConvertConfig, out_path: Path) -> Artifact:
        import litert_torch

        net = litert_torch.to_channel_last_io(model, args=[0], outputs=[0]) if cfg.channels_last else model
        x = to_layout(sample, cfg)
        extra: dict[str, Any] = {"converter": "litert_torch.convert", "channel_last_io": cfg.channels_last}
        quant: dict[str, Any] = {}
        pt2e = cfg.precision == "int8" and cfg.quantizer == "pt2e"
        if pt2e:
            quant = self._pt2e(net, x, cfg, out_path)
        else:
            fp32_path = (
                out_path if cfg.precision == "fp32" else out_path.with_name(out_path.stem + ".fp32.tflite")
            )
            extra["fp32_flatbuffer_reused"] = self._fp32_flatbuffer(net, x, cfg, model, fp32_path)
            if cfg.precision != "fp32":
                quant = self._aeq(fp32_path, out_path, cfg)
                fp32_path.unlink(missing_ok=True)
        inp, out, sigs = _details(out_path)
        layout = cfg.manifest_layout
        extra.update(signatures={k: v for k, v in sigs.items()}, op_types=_op_types(out_path))
        return Artifact(
            path=out_path,
            target="tflite",
            precision=cfg.precision,
            files=[out_path],
            inputs=[_spec(inp, layout)],
            outputs=[_spec(out, layout)],
            quantization=quant,
            extra=extra,
        )

    def _pt2e(self, net: Any, x: Any, cfg: ConvertConfig, out_path: Path) -> dict[str, Any]:
        import litert_torch
        import torch
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        dynamic = cfg.int8_scheme == "dynamic"
        config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
        from edgeseg.converters.observers import DESCRIPTION as SAMPLED
        from edgeseg.converters.observers import sampled_activations

        if not dynamic:  # the histogram of a subsample of each tensor: calibration 1.35x faster, same Dice
            config = sampled_activations(config)
        quantizer = PT2EQuantizer().set_global(config)
        if cfg.keep_float:
            from edgeseg.converters.scopes import keep_float_in_pt2e

            keep_float_in_pt2e(quantizer, cfg.keep_float, "wrapped." if cfg.channels_last else "")
        with torch.no_grad():
            graph = torch.export.export(net.eval(), (x,)).module()
            prepared = prepare_pt2e(graph, quantizer)
            if dynamic:
                prepared(x)
            else:
                for b in cfg.calibration_batches():
                    prepared(torch.from_numpy(b))
            converted = convert_pt2e(prepared, fold_quantize=False)
        with _quiet():
            litert_torch.convert(converted, (x,), quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(
                str(out_path)
            )
        info: dict[str, Any] = {
            "scheme": cfg.int8_scheme,
            "tool": "litert_torch PT2EQuantizer + torchao prepare_pt2e/convert_pt2e",
            "weights": "int8 per-channel symmetric",
            "activations": "int8 at run time (dynamic)"
            if dynamic
            else f"int8 per-tensor ({SAMPLED})",
        }
        if not dynamic:
            info["calibration"] = cfg.calibration.provenance if cfg.calibration else None
        if cfg.keep_float:
            info["keep_float"] = list(cfg.keep_float)
        return info

    def _aeq(self, src: Path, dst: Path, cfg: ConvertConfig) -> dict[str, Any]:
        from ai_edge_quantizer import qtyping, quantizer, recipe

        q = quantizer.Quantizer(str(src))
        calibration_result = None
        if cfg.precision == "fp16":
            q.update_quantization_recipe(
                regex=".*",
                operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING,
                op_config=qtyping.OpQuantizationConfig(
                    weight_tensor_config=qtyping.TensorQuantizationConfig(
                        num_bits=16, dtype=qtyping.TensorDataType.FLOAT
                    ),
                    compute_precision=qtyping.ComputePrecision.FLOAT,
                    explicit_dequantize=True,
                ),
            )
            info = {
                "scheme": "fp16",
                "weights": "float16",
                "compute": "float32",
                "io": "float32",
                "tool": "ai_edge_quantizer FLOAT_CASTING",
            }
        elif cfg.int8_scheme == "dynamic":
            q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
            info = {
                "scheme": "dynamic",
                "weights": "int8 per-channel symmetric",
                "activations": "float32, quantized at run time",
                "tool": "ai_edge_quantizer dynamic_wi8_afp32",
            }
        else:
            q.load_quantization_recipe(recipe.static_wi8_ai8())
            _, _, sigs = _details(src)
            key = next(iter(sigs))
            name = sigs[key]["inputs"][0]
            data = {key: [{name: b} for b in cfg.calibration_batches()]}
            with _quiet():
                calibration_result = q.calibrate(data, num_threads=1)
            info = {
                "scheme": "static",
                "weights": "int8 per-channel symmetric",
                "activations": "int8 (min/max)",
                "tool": "ai_edge_quantizer static_wi8_ai8",
                "calibration": cfg.calibration.provenance if cfg.calibration else None,
            }
        with _quiet():
            result = q.quantize(calibration_result)
        result.export_model(str(dst), overwrite=True)
        return info

"""torch -> ExecuTorch ``.pte`` with the XNNPACK delegate: fp32, and int8 with the XNNPACK quantizer.

- fp32: ``torch.export`` then ``executorch.exir.to_edge_transform_and_lower`` with ``XnnpackPartitioner``;
  every op XNNPACK takes runs in its kernels, the rest in ExecuTorch's portable kernels.
- int8 static: PT2E through torchao's ``prepare_pt2e``/``convert_pt2e`` with ExecuTorch's
  ``XNNPACKQuantizer`` (symmetric, per-channel weights, int8 activations), calibrated by running the
  prepared graph on the calibration images, then lowered the same way (the quantized ops go to XNNPACK;
  the program keeps float32 I/O).

torch.export specialises the batch, so ``.pte`` artifacts have a fixed batch. Layout is NCHW in and out
(the program's own), as PyTorch apps on iOS and Android feed it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeseg.converters.base import Artifact, ConvertConfig, Converter
from edgeseg.runtimes.manifest import TensorSpec


class ExecuTorchConverter(Converter):
    """torch -> ``.pte`` (ExecuTorch program, XNNPACK delegate)."""

    target = "executorch"

    def _convert(self, model: Any, sample: Any, cfg: ConvertConfig, out_path: Path) -> Artifact:
        import torch
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        quant: dict[str, Any] = {}
        with torch.no_grad():
            classes = int(model.eval()(sample).shape[1])
            program = torch.export.export(model, (sample,))
            if cfg.precision == "int8":
                program, quant = self._int8(program, sample, cfg)
            lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            delegated = _delegated_share(lowered)
            et = lowered.to_executorch()
        out_path.write_bytes(et.buffer)
        b = int(cfg.batch or 1)
        return Artifact(
            path=out_path,
            target="executorch",
            precision=cfg.precision,
            files=[out_path],
            inputs=[TensorSpec(name="input", shape=[b, cfg.in_channels, *cfg.input_size], layout=cfg.manifest_layout,
                               dtype="float32")],
            outputs=[TensorSpec(name="logits", shape=[b, classes, *cfg.input_size], layout=cfg.manifest_layout,
                                dtype="float32")],
            quantization=quant,
            extra={"converter": "torch.export + executorch.exir.to_edge_transform_and_lower",
                   "partitioner": "XnnpackPartitioner", **delegated},
        )

    def _int8(self, program: Any, sample: Any, cfg: ConvertConfig) -> tuple[Any, dict[str, Any]]:
        import torch
        from edgeseg.converters.observers import DESCRIPTION as SAMPLED
        from edgeseg.converters.observers import sampled_activations
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        # the activation histograms of a subsample of each tensor, as for TFLite (edgeseg.converters.observers)
        config = sampled_activations(get_symmetric_quantization_config(is_per_channel=True))
        quantizer = XNNPACKQuantizer().set_global(config)
        if cfg.keep_float:
            from edgeseg.converters.scopes import keep_float_in_pt2e

            keep_float_in_pt2e(quantizer, cfg.keep_float)
        prepared = prepare_pt2e(program.module(), quantizer)
        for b in cfg.calibration_batches():
            prepared(torch.from_numpy(b))
        converted = convert_pt2e(prepared)
        info = {
            "scheme": "static",
            "weights": "int8 per-channel symmetric",
            "activations": f"int8 per-tensor (asymmetric; {SAMPLED})",
            "io": "float32 (quantized inside the program)",
            "tool": "executorch XNNPACKQuantizer + torchao prepare_pt2e/convert_pt2e",
            "int8_isa": cfg.int8_isa,
            "calibration": cfg.calibration.provenance if cfg.calibration else None,
        }
        if cfg.keep_float:
            info["keep_float"] = list(cfg.keep_float)
        return torch.export.export(converted, (sample,)), info


def _delegated_share(lowered: Any) -> dict[str, Any]:
    """How many graph nodes went to XNNPACK and which ops stayed in portable kernels (for the manifest)."""
    graph = lowered.exported_program().graph
    calls = [n for n in graph.nodes if n.op == "call_function"]
    delegate = sum(1 for n in calls if "executorch_call_delegate" in str(n.target))
    portable = sorted({str(n.target).split("::")[-1].split(".")[0] for n in calls
                       if "executorch_call_delegate" not in str(n.target) and "getitem" not in str(n.target)})
    return {"delegate_calls": delegate, "portable_ops": portable}

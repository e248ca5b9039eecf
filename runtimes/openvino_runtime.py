"""OpenVINO backend: runs IR (``.xml`` + ``.bin``) and ``.onnx`` artifacts on CPU, GPU, NPU or AUTO.

Devices are OpenVINO's own (``Core().available_devices``, lower-cased here: "cpu", "gpu", "gpu.1", "npu")
plus "auto". The performance hint is LATENCY unless ``hint="THROUGHPUT"`` (or "CUMULATIVE_THROUGHPUT") is
passed; ``threads`` sets INFERENCE_NUM_THREADS on the CPU.

Precision: on CPUs with AVX512-BF16 or AMX, OpenVINO's CPU plugin computes in bfloat16 by default, which
costs fp32 parity (logits differ by ~1e-2). For fp32/fp16 artifacts this runner asks for f32 compute unless
``inference_precision`` says otherwise ("bf16", "f16", "f32" or "default" to keep the plugin's choice).
Torch-free; openvino is imported only when needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from edgeseg.runtimes.base import DeviceNotAvailableError, LayerOp, Runtime
from edgeseg.runtimes.manifest import Manifest, TensorSpec, manifest_from_io

HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
PRECISIONS = ("f32", "bf16", "f16", "default")
_OV_DTYPES = {"f32": "float32", "f16": "float16", "i8": "int8", "u8": "uint8"}


def available_devices() -> list[dict[str, str]]:
    """OpenVINO devices on this machine with their full names ([] when openvino is missing)."""
    from edgeseg.common.deps import is_available

    if not is_available("openvino"):
        return []
    import openvino as ov

    core = ov.Core()
    out = []
    for dev in core.available_devices:
        try:
            full = str(core.get_property(dev, "FULL_DEVICE_NAME"))
        except Exception:  # a plugin that cannot answer still counts as present
            full = ""
        out.append({"device": dev, "full_name": full})
    return out


def _port_name(port: Any, default: str) -> str:
    try:
        return str(port.get_any_name())
    except RuntimeError:  # models converted from torch may have unnamed outputs
        return default


def _port_spec(port: Any, default_name: str) -> TensorSpec:
    shape = [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]
    etype = port.get_element_type().get_type_name()
    dtype = _OV_DTYPES.get(etype)
    if dtype is None:
        raise ValueError(f"tensor {default_name!r} has type {etype}; edgeseg runtimes take f32/f16/i8/u8")
    return TensorSpec(name=_port_name(port, default_name), shape=shape, layout="ncdhw" if len(shape) == 5 else "nchw",
                      dtype=dtype)


class OpenVINORuntime(Runtime):
    """An OpenVINO IR or ONNX artifact compiled for one OpenVINO device.

    Options:
        hint: "LATENCY" (default), "THROUGHPUT" or "CUMULATIVE_THROUGHPUT".
        inference_precision: "f32" (default for fp32/fp16 artifacts), "bf16", "f16" or "default".
        cache_dir: folder for OpenVINO's compiled-model cache (faster second load).
        config: extra properties passed to ``compile_model`` as they are.

    Examples:
        >>> with OpenVINORuntime("model.xml", device="cpu", threads=2, hint="LATENCY") as rt:
        ...     logits = rt.infer(batch)
    """

    name = "openvino"
    extra = "openvino"
    module = "openvino"

    @classmethod
    def devices(cls) -> list[str]:
        devs = [d["device"].lower() for d in available_devices()]
        if any(d.startswith("gpu.") for d in devs) and "gpu" not in devs:
            devs.append("gpu")
        return [*devs, "auto"] if devs else []

    @classmethod
    def tuning_space(cls, device: str) -> list[Any]:
        from edgeseg.runtimes.tuning import Knob

        knobs = [Knob("hint", "hint", ("LATENCY", "THROUGHPUT"))]
        if device.lower().startswith("cpu"):
            knobs.append(Knob("cpu_pinning", "config", (True, False), key="ENABLE_CPU_PINNING"))
        return knobs

    @classmethod
    def summary(cls, details: dict[str, Any]) -> str:
        names = [f"{x['device']} ({x['full_name']})" if x.get("full_name") else x["device"]
                 for x in details.get("devices", [])]
        return "devices: " + ", ".join(names)

    @classmethod
    def details(cls) -> dict[str, Any]:
        return {"devices": available_devices(), "hints": list(HINTS)}

    def _config(self) -> dict[str, Any]:
        hint = str(self.options.get("hint", "LATENCY")).upper()
        if hint not in HINTS:
            raise ValueError(f"hint must be one of {', '.join(HINTS)}, got {hint!r}")
        config: dict[str, Any] = {"PERFORMANCE_HINT": hint}
        on_cpu = self._device.lower().startswith("cpu")
        if self.threads is not None:
            if self.threads < 1:
                raise ValueError(f"threads must be >= 1, got {self.threads}")
            if on_cpu:
                config["INFERENCE_NUM_THREADS"] = int(self.threads)
        precision = self.options.get("inference_precision")
        if precision is None:
            fp = self.manifest is None or self.manifest.precision in ("fp32", "fp16", "unknown")
            precision = "f32" if fp else "default"
        precision = str(precision).lower()
        if precision not in PRECISIONS:
            raise ValueError(f"inference_precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision != "default" and on_cpu:
            config["INFERENCE_PRECISION_HINT"] = precision
        config.update(self.options.get("config") or {})
        return config

    def _load_impl(self) -> None:
        import openvino as ov

        path = Path(str(self.artifact))
        if path.suffix.lower() == ".xml" and not path.with_suffix(".bin").is_file():
            raise FileNotFoundError(f"{path}: the weights file {path.with_suffix('.bin').name} is missing beside it")
        core = ov.Core()
        if self.options.get("cache_dir"):
            core.set_property({"CACHE_DIR": str(self.options["cache_dir"])})
        from edgeseg.common.errors import first_line

        config = self._config()
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # openvino raises RuntimeError subclasses with long messages
            raise ValueError(f"{path}: OpenVINO cannot read this model ({first_line(exc, 300)})") from None
        device = self._device.upper()
        try:
            self._compiled = core.compile_model(model, device, config)
        except Exception as exc:
            raise DeviceNotAvailableError(
                f"OpenVINO could not compile {path.name} for {device} with {config} ({first_line(exc, 300)})"
            ) from None
        self._request = self._compiled.create_infer_request()
        self._config_used = config
        self._core, self._model = core, model

    def _infer_impl(self, x: np.ndarray) -> np.ndarray:
        self._request.infer({0: x})
        return self._request.get_output_tensor(0).data.copy()

    def _close_impl(self) -> None:
        self._request = None
        self._compiled = None
        self._taps = None
        self._core = self._model = None

    # ---- per-op profile ----
    def _profile_impl(self, x: np.ndarray, runs: int) -> list[dict[str, Any]]:
        """OpenVINO's performance counters (a second compiled model with ``PERF_COUNT``); the op type is
        given with the kernel the CPU plugin chose (e.g. ``Convolution[brgconv]``)."""
        config = {**self._config_used, "PERF_COUNT": "YES"}
        compiled = self._core.compile_model(self._core.read_model(str(self.artifact)), self._device.upper(), config)
        request = compiled.create_infer_request()
        for _ in range(3):
            request.infer({0: x})
        acc: dict[str, list] = {}
        for _ in range(runs):
            request.infer({0: x})
            for info in request.profiling_info:
                kernel = info.exec_type.split("_")[0] if info.exec_type else ""
                op = f"{info.node_type}[{kernel}]" if kernel else info.node_type
                acc.setdefault(info.node_name, [op, 0.0])[1] += info.real_time.total_seconds() * 1000.0
        return [{"name": n, "op": op, "ms": ms / runs} for n, (op, ms) in acc.items() if ms > 0]

    # ---- layer taps ----
    layer_notes = ["openvino: a tapped int8 tensor is its FakeQuantize output (what the CPU plugin's fused int8 "
                   "kernel writes)"]
    _SKIP = ("Constant", "Parameter", "Result", "Convert", "ShapeOf")

    def layer_ops(self) -> list[LayerOp]:
        """Ops in topological order (weight FakeQuantize / Convert chains left out)."""
        if not self.loaded:
            self.load()
        ops = []
        for op in self._model.get_ordered_ops():
            kind = op.get_type_name()
            if kind in self._SKIP or op.get_output_size() == 0:
                continue
            if kind == "FakeQuantize" and op.input_value(0).get_node().get_type_name() in ("Constant", "Convert"):
                continue  # quantized weights
            name = op.get_friendly_name()
            segs = tuple(s for s in name.split("/") if s)
            ops.append(LayerOp(name=name, scope=segs[:-1], tensor=name, op=kind))
        return ops

    def _tap_impl(self, x: np.ndarray, tensors: list[str]) -> list[np.ndarray | None]:
        key = tuple(tensors)
        if getattr(self, "_taps", None) is None or self._taps[0] != key:
            self._taps = (key, self._tap_groups(list(tensors)))
        out: dict[str, np.ndarray | None] = {}
        for names, request, index in self._taps[1]:
            if request is None:
                out.update(dict.fromkeys(names))
                continue
            request.infer({0: x})
            out.update({n: request.get_output_tensor(i).data.copy() for n, i in zip(names, index)})
        return [out[t] for t in tensors]

    def _tap_groups(self, tensors: list[str]) -> list[tuple[list[str], Any, list[int]]]:
        """Compiled models that expose ``tensors`` as outputs. The CPU plugin refuses some outputs (seen: a
        FakeQuantize behind a Sigmoid in a layer kept in float); the group is split until the refused ones
        stand alone, and those read as None (not compared)."""
        model = self._core.read_model(str(self.artifact))
        by_name = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
        added = model.add_outputs([by_name[t].output(0) for t in tensors])
        index = [model.outputs.index(o) for o in added]
        try:
            compiled = self._core.compile_model(model, self._device.upper(), self._config_used)
        except RuntimeError:
            if len(tensors) == 1:
                return [(tensors, None, [])]
            half = len(tensors) // 2
            return self._tap_groups(tensors[:half]) + self._tap_groups(tensors[half:])
        return [(tensors, compiled.create_infer_request(), index)]

    def _describe(self) -> Manifest:
        ins = [_port_spec(p, f"input{i}") for i, p in enumerate(self._compiled.inputs)]
        outs = [_port_spec(p, f"output{i}") for i, p in enumerate(self._compiled.outputs)]
        target = "onnx" if Path(str(self.artifact)).suffix.lower() == ".onnx" else "openvino"
        return manifest_from_io(self.artifact, target, ins, outs, self.given_preprocessing)

    def _info_impl(self) -> dict[str, Any]:
        d: dict[str, Any] = {"config": {k: str(v) for k, v in self._config_used.items()}}
        try:
            d["execution_devices"] = list(self._compiled.get_property("EXECUTION_DEVICES"))
            d["inference_precision"] = str(self._compiled.get_property("INFERENCE_PRECISION_HINT"))
        except Exception:  # not every device reports every property
            pass
        return d

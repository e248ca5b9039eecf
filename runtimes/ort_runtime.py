"""onnxruntime backend: runs ``.onnx`` artifacts with the execution providers the installed build has.

Devices map to execution providers: ``cpu`` (CPUExecutionProvider), ``cuda``, ``tensorrt``, ``rocm``,
``migraphx``, ``openvino`` (the OpenVINO EP), ``coreml``, ``dml`` (DirectML), ``qnn``, ``xnnpack``, plus the
aliases ``gpu`` (the first GPU provider present), ``npu`` (QNN) and ``auto`` (every provider present, best
first). The CPU provider is always appended as the fallback for nodes the chosen provider cannot run.
Torch-free; onnxruntime is imported only when needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from edgeseg.runtimes.base import DeviceNotAvailableError, LayerOp, Runtime
from edgeseg.runtimes.manifest import Manifest, TensorSpec, manifest_from_io

# device name -> execution provider
PROVIDERS: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
}
# alias -> candidate devices, best first
ALIASES: dict[str, tuple[str, ...]] = {
    "gpu": ("cuda", "rocm", "migraphx", "dml", "coreml"),
    "npu": ("qnn",),
    "auto": ("tensorrt", "cuda", "rocm", "migraphx", "openvino", "coreml", "dml", "qnn", "cpu"),
}
_OPT_LEVELS = ("disable", "basic", "extended", "all")
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8",
               "tensor(uint8)": "uint8"}


def available_providers() -> list[str]:
    """Execution providers of the installed onnxruntime build ([] when onnxruntime is missing)."""
    from edgeseg.common.deps import is_available

    if not is_available("onnxruntime"):
        return []
    import onnxruntime as ort

    return list(ort.get_available_providers())


def providers_for(device: str, available: list[str] | None = None) -> list[str]:
    """The provider list a session gets for ``device`` (CPU appended as fallback).

    Raises:
        DeviceNotAvailableError: the device is unknown or its provider is not in this build.
    """
    have = available_providers() if available is None else available
    dev = device.lower()
    if dev in ALIASES:
        chosen = [PROVIDERS[d] for d in ALIASES[dev] if PROVIDERS[d] in have]
        if dev != "auto":
            chosen = chosen[:1]
    elif dev in PROVIDERS:
        chosen = [PROVIDERS[dev]] if PROVIDERS[dev] in have else []
    else:
        chosen = []
    if not chosen:
        raise DeviceNotAvailableError(
            f"runtime 'onnxruntime' has no device {device!r} on this machine; available: "
            f"{', '.join(OnnxRuntime.devices())} (providers: {', '.join(have) or 'none'})"
        )
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def _spec(arg: Any, layout: str | None = None) -> TensorSpec:
    shape = [d if isinstance(d, int) and d > 0 else -1 for d in arg.shape]
    dtype = _ORT_DTYPES.get(arg.type)
    if dtype is None:
        raise ValueError(f"tensor {arg.name!r} has type {arg.type}; edgeseg runtimes take float32/16, int8, uint8")
    return TensorSpec(name=arg.name, shape=shape, layout=layout or ("ncdhw" if len(shape) == 5 else "nchw"),
                      dtype=dtype)


class OnnxRuntime(Runtime):
    """An ``.onnx`` artifact in an onnxruntime InferenceSession.

    Options:
        providers: explicit execution-provider list (overrides the device mapping).
        provider_options: list of per-provider option dicts, same order as the providers.
        optimization: graph optimisation level, one of "disable", "basic", "extended", "all" (default "all").
        session_config: extra session config entries, e.g. ``{"session.intra_op.allow_spinning": "0"}``
            (no busy-waiting between ops: slower on an idle device, faster on an oversubscribed one).

    Examples:
        >>> with OnnxRuntime("model.onnx", device="cpu", threads=2) as rt:
        ...     logits = rt.infer(batch)
    """

    name = "onnxruntime"
    extra = "onnx"
    module = "onnxruntime"

    @classmethod
    def devices(cls) -> list[str]:
        have = available_providers()
        devs = [d for d, p in PROVIDERS.items() if p in have]
        devs += [a for a in ALIASES if a != "auto" and any(PROVIDERS[d] in have for d in ALIASES[a])]
        return [*devs, "auto"] if devs else []

    @classmethod
    def busy_wait_options(cls, spin: bool) -> dict[str, Any]:
        return {"session_config": {"session.intra_op.allow_spinning": "1" if spin else "0"}}

    @classmethod
    def tuning_space(cls, device: str) -> list[Any]:
        from edgeseg.runtimes.tuning import Knob

        # spinning workers win on idle cores and lose badly on busy ones (docs/notes/issue-7.md): measure it
        return [Knob("spinning", "session_config", ("1", "0"), key="session.intra_op.allow_spinning"),
                Knob("graph_optimization", "optimization", ("all", "extended"))]

    @classmethod
    def summary(cls, details: dict[str, Any]) -> str:
        return "providers: " + ", ".join(details.get("providers", []))

    @classmethod
    def details(cls) -> dict[str, Any]:
        import onnxruntime as ort

        return {"providers": available_providers(), "build_device": ort.get_device()}

    def _load_impl(self) -> None:
        import onnxruntime as ort

        level = str(self.options.get("optimization", "all")).lower()
        if level not in _OPT_LEVELS:
            raise ValueError(f"optimization must be one of {_OPT_LEVELS}, got {level!r}")
        so = ort.SessionOptions()
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        if self.threads is not None:
            if self.threads < 1:
                raise ValueError(f"threads must be >= 1, got {self.threads}")
            so.intra_op_num_threads = int(self.threads)
            so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3  # errors only: EP fallback warnings are checked below instead
        for key, value in (self.options.get("session_config") or {}).items():
            so.add_session_config_entry(str(key), str(value))
        providers = list(self.options.get("providers") or providers_for(self._device))
        kwargs: dict[str, Any] = {"providers": providers}
        if self.options.get("provider_options") is not None:
            kwargs["provider_options"] = self.options["provider_options"]
        self._session_args = (so, kwargs)  # layer taps build their sessions the same way
        try:
            self._session = ort.InferenceSession(str(self.artifact), sess_options=so, **kwargs)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            from edgeseg.common.errors import first_line

            raise ValueError(f"{self.artifact}: onnxruntime cannot load this model ({first_line(exc, 300)})") from None
        active = self._session.get_providers()
        wanted = providers[0]
        if wanted not in active:
            raise DeviceNotAvailableError(
                f"onnxruntime could not start {wanted} for device {self._device!r} (active: {', '.join(active)}); "
                "check the provider's libraries or use device='cpu'"
            )
        self._input_name = self._session.get_inputs()[0].name
        self._output_name = self._session.get_outputs()[0].name
        if self.manifest is not None:
            names = [i.name for i in self._session.get_inputs()]
            if self.manifest.input.name not in names:
                raise ValueError(
                    f"{self.artifact}: manifest input {self.manifest.input.name!r} is not in the model "
                    f"(inputs: {', '.join(names)}); the manifest belongs to another artifact"
                )
            self._input_name = self.manifest.input.name
            self._output_name = self.manifest.output.name

    def _infer_impl(self, x: np.ndarray) -> np.ndarray:
        return self._session.run([self._output_name], {self._input_name: x})[0]

    def _close_impl(self) -> None:
        self._session = None
        self._taps = None

    # ---- per-op profile ----
    def _profile_impl(self, x: np.ndarray, runs: int) -> list[dict[str, Any]]:
        """onnxruntime's own profiler (a second session with ``enable_profiling``; its JSON is read and
        removed)."""
        import json
        import os
        import tempfile

        import onnxruntime as ort

        so, kwargs = self._session_args
        prof = ort.SessionOptions()
        prof.graph_optimization_level = so.graph_optimization_level
        prof.intra_op_num_threads, prof.inter_op_num_threads = so.intra_op_num_threads, so.inter_op_num_threads
        prof.enable_profiling = True
        prof.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix="edgeseg-prof-"), "ort")
        session = ort.InferenceSession(str(self.artifact), sess_options=prof, **kwargs)
        for _ in range(3):
            session.run(None, {self._input_name: x})
        for _ in range(runs):
            session.run(None, {self._input_name: x})
        path = session.end_profiling()
        try:
            events = json.loads(open(path).read())
        finally:
            os.remove(path)
            os.rmdir(os.path.dirname(path))
        acc: dict[str, list] = {}
        for e in events:
            if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
                name = e["name"][: -len("_kernel_time")]
                acc.setdefault(name, [e["args"].get("op_name", "?"), 0.0])[1] += e["dur"]
        calls = runs + 3
        return [{"name": n, "op": op, "ms": us / calls / 1000.0} for n, (op, us) in acc.items()]

    # ---- layer taps ----
    layer_notes = ["onnxruntime: a tapped int8 tensor is the QuantizeLinear output (what the fused int8 kernel "
                   "writes), dequantized with its scale and zero point"]

    def _graph(self) -> Any:
        import onnx

        if getattr(self, "_proto", None) is None:
            self._proto = onnx.load(str(self.artifact))
        return self._proto

    def layer_ops(self) -> list[LayerOp]:
        """Nodes in graph order; DequantizeLinear nodes are left out, so an int8 layer's last op is the
        QuantizeLinear that its fused kernel writes (its float tensor is never materialised)."""
        if not self.loaded:
            self.load()
        graph = self._graph().graph
        consts = {i.name for i in graph.initializer}
        ops = []
        for node in graph.node:
            if node.op_type in ("DequantizeLinear", "Constant") or not node.output:
                continue
            if node.op_type == "QuantizeLinear" and node.input[0] in consts:
                continue  # a quantized initializer, not an activation
            name = node.name or node.output[0]
            segs = tuple(s for s in name.split("/") if s)
            ops.append(LayerOp(name=name, scope=segs[:-1], tensor=node.output[0], op=node.op_type))
        return ops

    def _tap_impl(self, x: np.ndarray, tensors: list[str]) -> list[np.ndarray]:
        import onnx
        import onnxruntime as ort
        from onnx import numpy_helper

        key = tuple(tensors)
        if getattr(self, "_taps", None) is None or self._taps[0] != key:
            proto = onnx.ModelProto()
            proto.CopyFrom(self._graph())
            graph = proto.graph
            inits = {i.name: i for i in graph.initializer}
            producers = {o: n for n in graph.node for o in n.output}
            dequant: dict[str, tuple[float, int]] = {}
            have = {o.name for o in graph.output}
            for t in tensors:
                node = producers.get(t)
                elem = onnx.TensorProto.FLOAT
                if node is not None and node.op_type == "QuantizeLinear":
                    scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
                    zero = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 else np.uint8(0)
                    elem = inits[node.input[2]].data_type if len(node.input) > 2 else onnx.TensorProto.UINT8
                    dequant[t] = (scale, np.asarray(zero).astype(np.int32))
                if t not in have:
                    graph.output.append(onnx.helper.make_tensor_value_info(t, elem, None))
            so, kwargs = self._session_args
            session = ort.InferenceSession(proto.SerializeToString(), sess_options=so, **kwargs)
            self._taps = (key, session, dequant)
        _, session, dequant = self._taps
        outs = session.run(list(tensors), {self._input_name: x})
        result = []
        for t, v in zip(tensors, outs):
            if t in dequant:
                scale, zero = dequant[t]
                shape = (1, -1) + (1,) * (v.ndim - 2) if np.ndim(scale) == 1 and v.ndim > 2 else ()
                v = (v.astype(np.int32) - (zero.reshape(shape) if shape else zero)) * (
                    scale.reshape(shape) if shape else scale)
            result.append(np.asarray(v, dtype=np.float32))
        return result

    def _describe(self) -> Manifest:
        ins = [_spec(a) for a in self._session.get_inputs()]
        outs = [_spec(a) for a in self._session.get_outputs()]
        return manifest_from_io(self.artifact, "onnx", ins, outs, self.given_preprocessing)

    def _info_impl(self) -> dict[str, Any]:
        return {"providers": self._session.get_providers()}

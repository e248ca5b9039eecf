"""LiteRT backend: runs ``.tflite`` artifacts with the ai_edge_litert interpreter (or tflite_runtime).

ai_edge_litert is the maintained successor of tflite_runtime; where a device only has tflite_runtime (it
needs numpy < 2, so it cannot share an environment with ai_edge_litert), that interpreter is used instead:
the two have the same ``Interpreter`` API. Both apply XNNPACK to float and int8 CPU kernels by default;
``xnnpack=False`` uses the builtin kernels alone (a reference for checking XNNPACK results).

Devices: "cpu" always; "gpu" where a GPU delegate library loads (``libtensorflowlite_gpu_delegate.so``
and friends); "npu" where an Edge TPU delegate (``libedgetpu``) loads. ``delegate=PATH`` loads any other
external delegate. NHWC artifacts (``litert_torch.to_channel_last_io``) take and give NCHW through
:meth:`Runtime.infer` like every other backend; integer I/O is (de)quantized with the tensor's own scale.
Torch-free.
"""

from __future__ import annotations

import ctypes
import importlib
import re
import warnings
from dataclasses import replace
from typing import Any

import numpy as np
from edgeseg.runtimes.base import DeviceNotAvailableError, LayerOp, Runtime
from edgeseg.runtimes.manifest import Manifest, TensorSpec, manifest_from_io

# where the Interpreter class lives, preferred first: (module, distribution)
INTERPRETERS = (("ai_edge_litert.interpreter", "ai-edge-litert"), ("tflite_runtime.interpreter", "tflite-runtime"))
# device -> shared libraries of the external delegate that provides it
DELEGATE_LIBS: dict[str, tuple[str, ...]] = {
    "gpu": ("libtensorflowlite_gpu_delegate.so", "libtensorflowlite_gpu_gl.so", "libLiteRtGpuAccelerator.so"),
    "npu": ("libedgetpu.so.1", "libedgetpu.1.dylib", "edgetpu.dll"),
}
_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16", np.dtype(np.int8): "int8",
           np.dtype(np.uint8): "uint8"}


def _interpreter_module() -> tuple[Any, str] | None:
    from edgeseg.common.deps import is_available

    for mod, dist in INTERPRETERS:
        if is_available(mod.split(".")[0]):
            try:
                return importlib.import_module(mod), dist
            except ImportError:  # e.g. tflite_runtime built against numpy 1 under numpy 2
                continue
    return None


def _loadable(lib: str) -> bool:
    try:
        ctypes.CDLL(lib)
    except OSError:
        return False
    return True


def delegates() -> dict[str, str | None]:
    """Delegates usable here: {"xnnpack": "built-in", "gpu": library or None, "npu": library or None}."""
    found: dict[str, str | None] = {"xnnpack": "built-in" if _interpreter_module() else None}
    for dev, libs in DELEGATE_LIBS.items():
        found[dev] = next((lib for lib in libs if _loadable(lib)), None)
    return found


def _layout_guess(shape: list[int]) -> str:
    """Channels-last when the last dim looks like channels and the second does not (no manifest only)."""
    rank = len(shape)
    small = (1, 2, 3, 4)
    if rank in (4, 5) and shape[-1] in small and shape[1] not in small:
        return "ndhwc" if rank == 5 else "nhwc"
    return "ncdhw" if rank == 5 else "nchw"


class LiteRTRuntime(Runtime):
    """A ``.tflite`` artifact in a LiteRT (TFLite) interpreter.

    Options:
        xnnpack: use the default XNNPACK delegate (default True).
        delegate: path of an external delegate library to load (overrides the device's default one).
        delegate_options: dict passed to ``load_delegate``.

    Examples:
        >>> with LiteRTRuntime("model.tflite", threads=2) as rt:
        ...     logits = rt.infer(batch)            # NCHW in and out, even for an NHWC model
    """

    name = "litert"
    extra = "tflite"
    module = "ai_edge_litert"

    @classmethod
    def is_available(cls) -> bool:
        from edgeseg.common.deps import is_available

        return any(is_available(mod.split(".")[0]) for mod, _ in INTERPRETERS)

    @classmethod
    def distribution(cls) -> str:
        found = _interpreter_module()
        return found[1] if found else INTERPRETERS[0][1]

    @classmethod
    def devices(cls) -> list[str]:
        if _interpreter_module() is None:
            return []
        found = delegates()
        return ["cpu", *[d for d in DELEGATE_LIBS if found.get(d)]]

    @classmethod
    def summary(cls, details: dict[str, Any]) -> str:
        delegates = details.get("delegates", {})
        present = [f"{k} ({v})" for k, v in delegates.items() if v]
        absent = [k for k, v in delegates.items() if not v]
        return (f"interpreter: {details.get('interpreter')}; delegates: {', '.join(present) or 'none'}"
                + (f"; not found: {', '.join(absent)}" if absent else ""))

    @classmethod
    def details(cls) -> dict[str, Any]:
        found = _interpreter_module()
        return {"interpreter": found[1] if found else None, "delegates": delegates()}

    def _load_impl(self) -> None:
        found = _interpreter_module()
        if found is None:  # is_available said yes but the import failed
            raise DeviceNotAvailableError("no working LiteRT interpreter: pip install 'edgeseg[tflite]'")
        mod, self._dist = found
        kwargs: dict[str, Any] = {"model_path": str(self.artifact)}
        if self.threads is not None:
            if self.threads < 1:
                raise ValueError(f"threads must be >= 1, got {self.threads}")
            kwargs["num_threads"] = int(self.threads)
        if not self.options.get("xnnpack", True):
            kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self._delegate_lib = None
        lib = self.options.get("delegate")
        dev = self._device.lower()
        if lib is None and dev != "cpu":
            lib = delegates().get(dev)
        if lib is not None:
            try:
                kwargs["experimental_delegates"] = [mod.load_delegate(str(lib), self.options.get("delegate_options"))]
            except (ValueError, OSError, RuntimeError) as exc:
                raise DeviceNotAvailableError(f"LiteRT could not load the delegate {lib} ({exc})") from None
            self._delegate_lib = str(lib)
        try:
            self._interp = mod.Interpreter(**kwargs)
            self._interp.allocate_tensors()
        except ValueError as exc:
            from edgeseg.common.errors import first_line

            raise ValueError(f"{self.artifact}: LiteRT cannot load this model ({first_line(exc, 300)})") from None
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        if self.manifest is not None:
            # Integer I/O: the interpreter's own scale/zero point win over a manifest that lacks them.
            self.manifest = replace(self.manifest, inputs=[self._with_quant(self.manifest.input, self._in)],
                                    outputs=[self._with_quant(self.manifest.output, self._out)])

    @staticmethod
    def _with_quant(spec: TensorSpec, detail: dict[str, Any]) -> TensorSpec:
        scale, zero = detail.get("quantization", (0.0, 0))
        if spec.dtype in ("int8", "uint8") and spec.scale is None and scale:
            return replace(spec, scale=float(scale), zero_point=int(zero))
        return spec

    def _infer_impl(self, x: np.ndarray) -> np.ndarray:
        if tuple(x.shape) != tuple(self._in["shape"]):
            # Dynamic dims (-1 in shape_signature) are resized; static ones were checked by the manifest.
            self._interp.resize_tensor_input(self._in["index"], list(x.shape), strict=True)
            self._interp.allocate_tensors()
            self._in = self._interp.get_input_details()[0]
            self._out = self._interp.get_output_details()[0]
        self._interp.set_tensor(self._in["index"], np.ascontiguousarray(x))
        self._interp.invoke()
        return self._interp.get_tensor(self._out["index"]).copy()

    def _close_impl(self) -> None:
        self._interp = None
        self._tap_interp = None

    # ---- layer taps ----
    layer_notes = ["litert: taps come from an interpreter that keeps every tensor, which runs LiteRT's reference "
                   "kernels (XNNPACK cannot keep intermediates); the final output is compared on XNNPACK"]

    def _tapper(self) -> Any:
        if getattr(self, "_tap_interp", None) is None:
            mod, _ = _interpreter_module()
            kwargs: dict[str, Any] = {"model_path": str(self.artifact), "experimental_preserve_all_tensors": True,
                                      "experimental_op_resolver_type": mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
            if self.threads is not None:
                kwargs["num_threads"] = int(self.threads)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "preserve_all_tensors is for debugging": that is its use here
                self._tap_interp = mod.Interpreter(**kwargs)
            self._tap_interp.allocate_tensors()
        return self._tap_interp

    def layer_ops(self) -> list[LayerOp]:
        """Ops in execution order; scopes are read from litert-torch's ``package.Class_attr/...`` tensor
        names (a channels-last I/O wrapper's own level is dropped)."""
        it = self._tapper()
        details = {d["index"]: d for d in it.get_tensor_details()}
        ops = []
        for op in it._get_ops_details():
            if not len(op["outputs"]) or op["outputs"][0] < 0:
                continue
            tensor = int(op["outputs"][0])
            name = str(details[tensor]["name"])
            ops.append(LayerOp(name=name, scope=_litert_scope(name), tensor=str(tensor), op=str(op["op_name"])))
        return ops

    def _tap_impl(self, x: np.ndarray, tensors: list[str]) -> list[np.ndarray]:
        it = self._tapper()
        inp = it.get_input_details()[0]
        it.set_tensor(inp["index"], np.ascontiguousarray(x))
        it.invoke()
        details = {d["index"]: d for d in it.get_tensor_details()}
        out = []
        for t in tensors:
            d = details[int(t)]
            v = it.get_tensor(int(t))
            scale, zero = d.get("quantization", (0.0, 0))
            qp = d.get("quantization_parameters") or {}
            scales = np.asarray(qp.get("scales", []), np.float64)
            if v.dtype in (np.int8, np.uint8, np.int16, np.int32) and (scale or scales.size):
                zeros = np.asarray(qp.get("zero_points", [zero]), np.float64)
                axis = int(qp.get("quantized_dimension", 0))
                if scales.size > 1:
                    shape = [1] * v.ndim
                    shape[axis] = -1
                    v = (v.astype(np.float64) - zeros.reshape(shape)) * scales.reshape(shape)
                else:
                    v = (v.astype(np.float64) - float(zero)) * float(scale)
            out.append(np.asarray(v, dtype=np.float32))
        return out

    def _spec(self, detail: dict[str, Any]) -> TensorSpec:
        sig = detail.get("shape_signature")
        shape = [int(d) for d in (sig if sig is not None and len(sig) else detail["shape"])]
        dtype = _DTYPES.get(np.dtype(detail["dtype"]))
        if dtype is None:
            raise ValueError(f"tensor {detail['name']!r} has dtype {detail['dtype']}; edgeseg takes float/int8/uint8")
        scale, zero = detail.get("quantization", (0.0, 0))
        quant = dtype in ("int8", "uint8") and bool(scale)
        return TensorSpec(name=detail["name"], shape=shape, layout=_layout_guess(shape), dtype=dtype,
                          scale=float(scale) if quant else None, zero_point=int(zero) if quant else None)

    def _describe(self) -> Manifest:
        ins = [self._spec(d) for d in self._interp.get_input_details()]
        outs = [self._spec(d) for d in self._interp.get_output_details()]
        # An output keeps the input's layout family (a channels-last model gives channels-last logits).
        outs[0] = replace(outs[0], layout=ins[0].layout)
        return manifest_from_io(self.artifact, "tflite", ins, outs, self.given_preprocessing)

    def _info_impl(self) -> dict[str, Any]:
        return {"interpreter": self._dist, "xnnpack": bool(self.options.get("xnnpack", True)),
                "delegate": self._delegate_lib}


_SEGMENT = re.compile(r"^_*[A-Za-z0-9]+_(.+)$")  # "Class_attr" (a private class may start with "_")


def _litert_scope(name: str) -> tuple[str, ...]:
    """Module attribute names from a litert-torch tensor name: ``pkg.Class_attr/pkg.Class_attr;N``."""
    segs = name.split(";", 1)[0].split("/")
    attrs = []
    for i, seg in enumerate(segs):
        m = _SEGMENT.match(seg.rsplit(".", 1)[-1])
        if m:
            attr = m.group(1)
            if not (i == 1 and segs[0].endswith("ChannelLastIOWrapper") and attr == "wrapped"):
                attrs.append(attr)
    return tuple(attrs)

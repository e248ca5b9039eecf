"""ExecuTorch backend: runs ``.pte`` programs (PyTorch's own edge runtime) with the XNNPACK delegate.

On a phone or an embedded board ExecuTorch is a C++ library; here its Python bindings run the same program
and kernels on the CPU, which is what the parity check and the benchmark need. Those bindings take torch
tensors, so this backend needs torch at load time (the module itself imports torch-free, like every backend).

Examples:
    >>> from edgeseg import runtimes
    >>> with runtimes.load("exports/ultralightunet-s_fp32.pte", threads=2) as rt:
    ...     logits = rt.infer(batch)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from edgeseg.runtimes.base import Runtime
from edgeseg.runtimes.manifest import Manifest, TensorSpec, manifest_from_io

# ExecuTorch ScalarType codes (c10 numbering) -> numpy names
_DTYPES = {6: "float32", 5: "float16", 1: "int8", 0: "uint8"}


class ExecuTorchRuntime(Runtime):
    """A ``.pte`` program in the ExecuTorch runtime (portable kernels plus the delegates it was lowered to).

    ``threads`` sets the size of ExecuTorch's process-wide thread pool (XNNPACK runs on it).
    """

    name = "executorch"
    extra = "executorch"
    module = "executorch"

    @classmethod
    def details(cls) -> dict[str, Any]:
        from executorch.runtime import Runtime as ETRuntime

        et = ETRuntime.get()
        return {"backends": sorted(et.backend_registry.registered_backend_names)}

    @classmethod
    def summary(cls, details: dict[str, Any]) -> str:
        return "backends: " + (", ".join(details.get("backends", [])) or "none")

    def _load_impl(self) -> None:
        from executorch.runtime import Runtime as ETRuntime

        if self.threads is not None:
            if self.threads < 1:
                raise ValueError(f"threads must be >= 1, got {self.threads}")
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(int(self.threads))
        try:
            program = ETRuntime.get().load_program(str(self.artifact))
            self._method = program.load_method("forward")
        except Exception as exc:  # the bindings raise RuntimeError with long C++ context
            from edgeseg.common.errors import first_line

            raise ValueError(f"{self.artifact}: ExecuTorch cannot load this program ({first_line(exc, 300)})") \
                from None
        self._program = program

    def _infer_impl(self, x: np.ndarray) -> np.ndarray:
        import torch

        out = self._method.execute([torch.from_numpy(np.ascontiguousarray(x))])
        return out[0].numpy().copy()

    def _close_impl(self) -> None:
        self._method = None
        self._program = None

    def _spec(self, meta: Any, name: str) -> TensorSpec:
        shape = [int(d) for d in meta.sizes()]
        dtype = _DTYPES.get(int(meta.dtype()), str(meta.dtype()))
        return TensorSpec(name=name, shape=shape, layout="ncdhw" if len(shape) == 5 else "nchw", dtype=dtype)

    def _describe(self) -> Manifest:
        meta = self._program.metadata("forward")
        ins = [self._spec(meta.input_tensor_meta(0), "input")]
        outs = [self._spec(meta.output_tensor_meta(0), "logits")]
        return manifest_from_io(self.artifact, "executorch", ins, outs, self.given_preprocessing)

    def _info_impl(self) -> dict[str, Any]:
        return {"threads": self.threads}

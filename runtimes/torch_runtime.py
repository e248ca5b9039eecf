"""The torch backend: the FP32 reference runner (a registered model name, a checkpoint, or an nn.Module).

It is just another :class:`~edgeseg.runtimes.base.Runtime`, so "reference vs candidate" comparisons need no special
case. torch is imported only when the runner loads (or lists devices), so this module imports without it.

Examples:
    >>> from edgeseg import runtimes
    >>> ref = runtimes.load("ultralightunet-s", runtime="torch")           # shipped weights, else random
    >>> ref = runtimes.load("runs/exp1/best.pt", runtime="torch")          # an edgeseg checkpoint
    >>> ref = TorchRuntime.from_module(model, candidate.manifest)          # an in-memory nn.Module
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
from edgeseg.runtimes.base import Runtime
from edgeseg.runtimes.manifest import (
    Manifest,
    Postprocessing,
    Preprocessing,
    TensorSpec,
    is_volume_record,
    volume_preprocessing,
)

_DEVICE_ALIASES = {"gpu": "cuda"}


def _torch_manifest(
    model_name: str,
    cfg: dict[str, Any],
    in_channels: int,
    num_classes: int,
    spatial: list[int] | None = None,
    preprocessing: Preprocessing | None = None,
    postprocessing: Postprocessing | None = None,
    weights: dict[str, Any] | None = None,
) -> Manifest:
    """A manifest for a torch model: NCHW/NCDHW float32, dynamic batch and (unless given) spatial size."""
    size = list(cfg.get("input_size") or (spatial or [256, 256]))
    dims = len(spatial) if spatial else len(size)
    space = list(spatial) if spatial else [-1] * dims
    layout = "ncdhw" if dims == 3 else "nchw"
    if preprocessing is None:
        mean = list(cfg.get("mean") or ([0.485, 0.456, 0.406] if in_channels == 3 else [0.5] * in_channels))
        std = list(cfg.get("std") or ([0.229, 0.224, 0.225] if in_channels == 3 else [0.5] * in_channels))
        preprocessing = Preprocessing(size=size, mean=mean, std=std, color="rgb" if in_channels == 3 else "gray")
    if postprocessing is None:
        postprocessing = Postprocessing(activation="sigmoid" if num_classes == 1 else "softmax",
                                        num_classes=num_classes)
    return Manifest(
        artifact=model_name,
        target="torch",
        precision="fp32",
        model=model_name,
        inputs=[TensorSpec(name="input", shape=[-1, in_channels, *space], layout=layout)],
        outputs=[TensorSpec(name="logits", shape=[-1, num_classes, *space], layout=layout)],
        preprocessing=preprocessing,
        postprocessing=postprocessing,
        model_cfg=dict(cfg),
        weights=dict(weights or {}),
    )


def _preprocessing_of(ckpt: dict[str, Any], in_channels: int) -> Preprocessing | None:
    """The checkpoint's preprocessing record as a :class:`Preprocessing` (None when absent or partial); a 3D
    checkpoint's volume record (patch size, intensity clip, z-score) too."""
    pre = ckpt.get("preprocessing")
    if is_volume_record(pre):
        return volume_preprocessing(pre, in_channels)
    if not isinstance(pre, dict) or "size" not in pre:
        return None
    known = {f.name for f in fields(Preprocessing)}
    return Preprocessing(**{k: (list(v) if isinstance(v, tuple) else v) for k, v in pre.items() if k in known})


class TorchRuntime(Runtime):
    """FP32 torch reference runner.

    Args:
        artifact: a registered model name (weights: ``options["weights"]``, else the shipped ones, else
            random with a warning) or an edgeseg checkpoint / state_dict file (``.pt``/``.pth``; a bare
            state_dict needs ``options["model"]``).
        manifest: optional; when None one is synthesized (float32 NCHW, dynamic batch and spatial size,
            preprocessing from the model's config or the checkpoint).
        device: "cpu", "cuda"/"gpu" or "mps" where torch has them.
        threads: ``torch.set_num_threads`` while loaded (process-wide; restored on close).
        **options: ``weights`` (checkpoint for a model name), ``model`` (name for a bare state_dict),
            ``model_kwargs`` (builder options, e.g. ``num_classes``).
    """

    name = "torch"
    extra = "train"
    module = "torch"
    describes_itself = True

    def __init__(self, artifact: str | Path, manifest: Manifest | None = None, device: str = "cpu",
                 threads: int | None = None, **options: Any):
        super().__init__(artifact, manifest=manifest, device=device, threads=threads, **options)
        self._module: Any = None
        self._given_module: Any = None
        self._saved_threads: int | None = None

    @classmethod
    def from_module(
        cls,
        module: Any,
        reference: Manifest | Preprocessing | None = None,
        device: str = "cpu",
        threads: int | None = None,
        name: str | None = None,
    ) -> TorchRuntime:
        """Wrap an in-memory ``nn.Module`` as a loaded reference runner.

        Args:
            module: the model (put in eval mode; its weights are used as they are).
            reference: the candidate artifact's manifest (its input shape, preprocessing and postprocessing
                are copied, in NCHW float32) or just a :class:`Preprocessing`; None: from ``module.model_cfg``.
            device: torch device.
            threads: torch threads while loaded.
            name: model name for the manifest (default: ``module.model_cfg.name`` or the class name).

        Examples:
            >>> ref = TorchRuntime.from_module(model, ort_runner.manifest)
            >>> np.abs(ref.infer(x) - ort_runner.infer(x)).max()
        """
        cfg_obj = getattr(module, "model_cfg", None)
        cfg = cfg_obj.to_dict() if cfg_obj is not None else {}
        model_name = name or cfg.get("name") or type(module).__name__
        if isinstance(reference, Manifest):
            spec = reference.input
            nchw = spec.nchw_shape()
            out = reference.output.nchw_shape()
            manifest = _torch_manifest(
                model_name, cfg or reference.model_cfg, nchw[1], out[1] if out[1] > 0 else 1,
                spatial=[-1 if d is None else d for d in nchw[2:]], preprocessing=reference.preprocessing,
                postprocessing=reference.postprocessing, weights=reference.weights,
            )
        else:
            in_ch = int(getattr(module, "in_channels", cfg.get("in_channels", 3)))
            classes = int(getattr(module, "num_classes", cfg.get("num_classes", 1)))
            manifest = _torch_manifest(model_name, cfg, in_ch, classes, preprocessing=reference)
        rt = cls(model_name, manifest=manifest, device=device, threads=threads)
        rt._given_module = module
        return rt.load()

    @classmethod
    def devices(cls) -> list[str]:
        import torch

        devs = ["cpu"]
        if torch.cuda.is_available():
            devs += ["cuda", "gpu"]
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            devs.append("mps")
        return devs

    @classmethod
    def summary(cls, details: dict[str, Any]) -> str:
        return "GPUs: " + (", ".join(details.get("gpus", [])) or "none")

    @classmethod
    def details(cls) -> dict[str, Any]:
        import torch

        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return {"cuda": torch.version.cuda, "gpus": gpus, "threads": torch.get_num_threads()}

    @property
    def torch_device(self) -> str:
        dev = self._device.lower()
        return _DEVICE_ALIASES.get(dev, dev)

    @property
    def model(self) -> Any:
        """The loaded ``nn.Module`` (None before load)."""
        return self._module

    def _build(self) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """(module, checkpoint-or-empty, weights provenance), through the one weights resolver."""
        from edgeseg.weights import resolve

        kwargs = dict(self.options.get("model_kwargs") or {})
        path = Path(str(self.artifact))
        if path.is_file():
            r = resolve(self.options.get("model"), path, model_kwargs=kwargs)
        elif path.suffix.lower() in (".pt", ".pth"):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        else:  # a registered name: the given weights, else the shipped ones, else random
            r = resolve(str(self.artifact), self.options.get("weights"), model_kwargs=kwargs)
        if r.path is None:
            return r.module, {}, {"path": None, "note": "random"}
        # the checkpoint's own preprocessing record (e.g. the size the weights were trained at) wins over
        # the model config's defaults, as in converters and benchmarks
        return r.module, r.checkpoint, {"path": str(r.path), "sha256": r.sha256}

    def _load_impl(self) -> None:
        import torch

        if self.threads is not None:
            if self.threads < 1:
                raise ValueError(f"threads must be >= 1, got {self.threads}")
            self._saved_threads = torch.get_num_threads()
            torch.set_num_threads(int(self.threads))
        if self._given_module is not None:
            module, ckpt, prov = self._given_module, {}, {}
        else:
            module, ckpt, prov = self._build()
        self._module = module.eval().to(self.torch_device)
        if self.manifest is None:
            cfg_obj = getattr(module, "model_cfg", None)
            cfg = cfg_obj.to_dict() if cfg_obj is not None else {}
            in_ch = int(getattr(module, "in_channels", cfg.get("in_channels", 3)))
            pre = _preprocessing_of(ckpt, in_ch)
            classes = int(getattr(module, "num_classes", cfg.get("num_classes", 1)))
            self.manifest = _torch_manifest(cfg.get("name", str(self.artifact)), cfg, in_ch, classes,
                                            preprocessing=pre, weights=prov)

    def _infer_impl(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self._module(torch.from_numpy(x).to(self.torch_device))
            if isinstance(out, (list, tuple)):
                out = out[0]
            return out.float().cpu().numpy()

    def _profile_impl(self, x: np.ndarray, runs: int) -> list[dict[str, Any]]:
        """torch.profiler's CPU self time per aten op (the reference runs eager, so ops are aten calls)."""
        import torch
        from torch.profiler import ProfilerActivity, profile

        inp = torch.from_numpy(x).to(self.torch_device)
        with torch.inference_mode():
            for _ in range(3):
                self._module(inp)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(runs):
                    self._module(inp)
        return [{"name": e.key, "op": e.key, "ms": e.self_cpu_time_total / runs / 1000.0}
                for e in prof.key_averages() if e.self_cpu_time_total > 0]

    def _close_impl(self) -> None:
        if self._saved_threads is not None:
            import torch

            torch.set_num_threads(self._saved_threads)
            self._saved_threads = None
        self._module = None

    def _info_impl(self) -> dict[str, Any]:
        import torch

        return {"torch_threads": torch.get_num_threads(), "torch_device": self.torch_device}

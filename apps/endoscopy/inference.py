"""The segmenter: one loaded :class:`runtimes.Runtime` plus the frame -> mask steps around it.

Opening checks that the artifact fits the demo (a 2D image model whose manifest agrees with the model
file) with one warm-up inference, so a mismatch fails at start with a clear message instead of mid-stream.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from edgeseg.runtimes import Runtime
from edgeseg.runtimes.processing import RESIZE_MODES, postprocess, preprocess

from edgeseg import runtimes


@dataclass
class Segmentation:
    """One frame's result: the binary mask at frame size and what each step cost (ms)."""

    mask: np.ndarray
    pre_ms: float
    infer_ms: float
    post_ms: float


class Segmenter:
    """Frame (RGB uint8, any size) -> binary polyp mask at frame size, through a loaded runtime.

    Pre- and post-processing are ``edgeseg.runtimes.processing``'s (stretch/letterbox, mean/std, colour, activation,
    threshold, mapping the mask back to the frame), as the manifest says.

    Args:
        runtime: a loaded runtime whose manifest describes a 2D segmentation model.
        threshold: probability threshold (None: the manifest's).
    """

    def __init__(self, runtime: Runtime, threshold: float | None = None):
        self.runtime = runtime
        m = runtime.manifest
        if m is None:
            raise ValueError(f"{runtime.artifact}: no manifest; re-export it with `edgeseg convert`")
        self.manifest = m
        self.pre = m.preprocessing
        self.post = m.postprocessing
        self.threshold = float(self.post.threshold if threshold is None else threshold)
        _check_threshold(self.threshold)
        self._check_fits()
        self.size = (int(self.pre.size[0]), int(self.pre.size[1]))
        self.channels = 1 if self.pre.color == "gray" else 3

    def _check_fits(self) -> None:
        m = self.manifest
        nchw = m.input.nchw_shape()
        if len(nchw) != 4 or len(self.pre.size) != 2:
            raise ValueError(
                f"{m.model}: the demo runs 2D image models; this artifact takes a "
                f"{len(nchw) - 2}D input {nchw}"
            )
        if self.pre.resize not in RESIZE_MODES:
            raise ValueError(
                f"unknown resize mode {self.pre.resize!r} in the manifest ({', '.join(RESIZE_MODES)})"
            )
        channels = nchw[1]
        want = 1 if self.pre.color == "gray" else 3
        if channels not in (-1, None) and channels != want:
            raise ValueError(
                f"{self.runtime.artifact}: the manifest says color={self.pre.color!r} but the "
                f"model takes {channels} channels; the artifact and its manifest do not match"
            )
        for dim, want_dim, name in zip(nchw[2:], self.pre.size, ("height", "width")):
            if dim not in (-1, None) and dim != want_dim:
                raise ValueError(
                    f"{self.runtime.artifact}: model input {name} {dim} differs from the "
                    f"manifest's preprocessing size {self.pre.size}; re-export the artifact"
                )
        if self.post.activation not in ("sigmoid", "softmax"):
            raise ValueError(
                f"unknown activation {self.post.activation!r} in the manifest (sigmoid, softmax)"
            )

    def warm_up(self, runs: int = 2) -> float:
        """Run the model on a blank input (returns the last run's ms); fails on a model-manifest mismatch.

        Raises:
            ValueError: the artifact does not produce a mask of the expected shape.
        """
        h, w = self.size
        x = np.zeros((1, self.channels, h, w), np.float32)
        ms = 0.0
        for _ in range(max(1, runs)):
            t0 = time.perf_counter()
            try:
                y = self.runtime.infer(x)
            except ValueError:
                raise
            except Exception as exc:  # a backend error here means the file and its manifest disagree
                from edgeseg.common.errors import first_line

                raise ValueError(
                    f"{self.runtime.artifact}: the model fails on the manifest's input "
                    f"{list(x.shape)} ({type(exc).__name__}: {first_line(exc, 200)}); "
                    "the artifact and its manifest do not match, re-export it"
                ) from None
            ms = (time.perf_counter() - t0) * 1e3
        if y.ndim != 4 or y.shape[0] != 1 or y.shape[2:] != (h, w):
            raise ValueError(
                f"{self.runtime.artifact}: expected logits of shape [1, C, {h}, {w}], got "
                f"{list(y.shape)}; this is not a segmentation model of the manifest's size"
            )
        if self.post.activation == "sigmoid" and y.shape[1] != 1:
            raise ValueError(
                f"{self.runtime.artifact}: sigmoid output with {y.shape[1]} channels; the demo "
                "shows one polyp class (sigmoid, 1 channel) or softmax with background first"
            )
        return ms

    # ---- per frame ----
    def __call__(self, frame: np.ndarray, threshold: float | None = None) -> Segmentation:
        """RGB uint8 frame (any size) -> binary mask at the frame's size, through ``edgeseg.runtimes.processing``."""
        t0 = time.perf_counter()
        x, infos = preprocess(frame, self.pre)
        t1 = time.perf_counter()
        y = self.runtime.infer(x)
        t2 = time.perf_counter()
        label = postprocess(y, infos, self.post, self.threshold if threshold is None else threshold)[0]
        mask = label if self.post.activation == "sigmoid" else (label > 0).astype(np.uint8)
        t3 = time.perf_counter()
        return Segmentation(mask, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)

    def describe(self) -> dict[str, Any]:
        """Model, runtime, device and precision for the HUD and the summary."""
        m = self.manifest
        return {
            "model": m.model,
            "runtime": self.runtime.name,
            "device": self.runtime.device,
            "precision": m.precision,
            "target": m.target,
            "artifact": str(self.runtime.artifact),
            "input_size": list(self.size),
        }


LOAD_OPTIONS = ("runtime", "device", "threads", "check_files", "preprocessing")


def _check_threshold(t: float) -> None:
    if not 0.0 < t < 1.0:
        raise ValueError(f"--threshold must be between 0 and 1 (exclusive), got {t}")


def open_segmenter(
    artifact: str | None = None,
    model: str | None = None,
    *,
    threshold: float | None = None,
    warm_up: int = 2,
    **load: Any,
) -> Segmenter:
    """Load an artifact (or a model name through the torch runtime) and check it fits the demo.

    Args:
        artifact: converted model file (its manifest beside it).
        model: registered model name: run through the torch runtime when no artifact is given; with an
            artifact, the name the artifact must have been converted from.
        threshold: probability threshold (default: the manifest's).
        warm_up: warm-up inferences (at least one; it also checks the artifact against its manifest).
        **load: how to load it, passed to ``edgeseg.runtimes.load``: ``runtime`` (backend; default from the
            artifact's manifest, "torch" for a model name), ``device`` (default cpu), ``threads``,
            ``check_files`` (refuse an artifact whose files differ from the sha256 its manifest records;
            default True) and ``preprocessing`` (of an artifact without a manifest; with a model name it
            replaces the checkpoint's).

    Raises:
        ValueError: neither or a mismatched artifact/model, or an artifact that does not fit its manifest;
            an unknown loading option.
        FileNotFoundError: the artifact does not exist.
    """
    unknown = sorted(set(load) - set(LOAD_OPTIONS))
    if unknown:
        raise ValueError(f"unknown loading option(s) {', '.join(unknown)}; valid: {', '.join(LOAD_OPTIONS)}")
    runtime = load.pop("runtime", None)
    load.setdefault("device", "cpu")
    if threshold is not None:
        _check_threshold(threshold)
    if artifact is None and model is None:
        raise ValueError(
            "give --artifact PATH (a converted model, see `edgeseg convert`) or --model NAME "
            "(runs through the torch runtime; `edgeseg models` lists names)"
        )
    if artifact is not None:
        rt = runtimes.load(artifact, runtime=runtime, **load)
        if model is not None and rt.manifest is not None and rt.manifest.model != model:
            rt.close()
            raise ValueError(
                f"{artifact} was converted from {rt.manifest.model!r}, not {model!r}; drop --model "
                f"or pass --model {rt.manifest.model}"
            )
    else:
        if runtime not in (None, "torch"):
            raise ValueError(
                f"--model runs through the torch runtime, not {runtime!r}; to use {runtime} "
                f"convert first (`edgeseg convert {model} ...`) and pass --artifact"
            )
        # the torch reference, or where torch is absent (a device) the artifact shipped for the model
        load.pop("check_files", None)  # a model name has no artifact files to check
        rt = runtimes.load(model, runtime=runtimes.name_runtime(runtime), **load)
    try:
        seg = Segmenter(rt, threshold=threshold)
        seg.warm_up(warm_up)
    except BaseException:
        rt.close()
        raise
    return seg

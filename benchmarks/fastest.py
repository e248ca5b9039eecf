"""The fastest verified artifact of a model on this machine, converted once and cached.

``edgeseg demo --model NAME`` runs what this picks instead of torch eager. The candidates are the fp32
artifacts of each installed runtime that converts in seconds (OpenVINO IR, ONNX). Each one is converted
and verified against the FP32 torch model (an artifact that fails parity is never a candidate), then timed
on this CPU (warm-up, then the median of ``iters`` calls). The winner and every timing are written to
``choice.json``.

The cache key is the weights' sha256, the input size and this CPU's int8 path and core count: new weights,
another size or another machine give another folder. A later call reuses the choice while its artifact's
files still match their manifest. Default root: ``$EDGESEG_CACHE``, else ``~/.cache/edgeseg``.

Examples:
    >>> from edgeseg.benchmarks.fastest import fastest_artifact
    >>> choice = fastest_artifact("ultralightunet-s", threads=2)
    >>> choice.artifact, choice.timings_ms
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CANDIDATES = ("openvino", "onnx")  # fp32 converts in seconds; TFLite takes ~30 s and was never fastest here


@dataclass
class Choice:
    """The artifact picked for this machine.

    Attributes:
        artifact: its path.
        target: its format.
        timings_ms: the median latency of every candidate timed, by format.
        reused: whether it came from the cache.
    """

    artifact: Path
    target: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    reused: bool = False

    def line(self) -> str:
        others = ", ".join(f"{t} {ms:.1f} ms" for t, ms in sorted(self.timings_ms.items(), key=lambda kv: kv[1]))
        how = "cached" if self.reused else "converted and verified"
        return f"fastest verified artifact here: {self.target} fp32 ({others}; {how}) {self.artifact}"


def cache_root() -> Path:
    return Path(os.environ.get("EDGESEG_CACHE") or Path.home() / ".cache" / "edgeseg")


def fastest_artifact(
    model: str,
    weights: str | Path | None = None,
    *,
    threads: int | None = None,
    iters: int = 20,
    root: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    tune: bool = True,
) -> Choice:
    """Convert (once), verify, tune (``edgeseg.runtimes.tuning``, at ``threads`` when given) and time the
    candidates; return the fastest. Its manifest holds the tuned settings, so loading it applies them.

    Raises:
        ValueError: no candidate runtime is installed, or none passed verification.
    """
    from edgeseg.converters import ExportOptions, VerifyOptions, convert_model, get_converter
    from edgeseg.runtimes.manifest import check_files, find_manifest
    from edgeseg.runtimes.sysinfo import cpu_info, int8_path

    from edgeseg.common.io import atomic_write_json
    from edgeseg.weights import resolve

    say = log or (lambda _m: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resolved = resolve(model, weights)
    size = resolved.preprocessing.get("size")
    cpu = cpu_info()
    key = f"{resolved.model}-{(resolved.sha256 or 'random')[:12]}-{size[-1] if size else 'default'}-" \
          f"{int8_path(cpu['isa'])}-{cpu['usable_cores']}c"
    folder = Path(root or cache_root()) / "artifacts" / key
    record = folder / "choice.json"
    if record.is_file():
        try:
            saved = json.loads(record.read_text())
            path = folder / saved["artifact"]
            manifest = find_manifest(path)
            if manifest is not None and manifest.parity.get("passed"):
                check_files(path, manifest)
                return Choice(artifact=path, target=saved["target"], timings_ms=saved["timings_ms"], reused=True)
        except (ValueError, KeyError, OSError):
            pass  # a damaged cache entry is converted again
    installed = []
    for target in CANDIDATES:
        try:
            get_converter(target).check_available()
            installed.append(target)
        except ImportError:
            continue
    results = []
    if installed:
        say(f"converting {resolved.model} -> {', '.join(installed)} fp32 for this machine (once) ...")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results = convert_model(resolved.model, installed, "fp32", weights=weights,
                                    export=ExportOptions(name=resolved.model), verify=VerifyOptions(images=8),
                                    out_dir=folder)
    timings: dict[str, float] = {}
    paths: dict[str, Path] = {}
    for res in results:
        target = res.artifact.target
        if not res.passed:
            say(f"  {target}: failed verification, not a candidate ({res.parity.summary()})")
            continue
        if tune:
            from edgeseg.runtimes import tuning

            found = tuning.tune(res.artifact.path, threads=threads, options=tuning.TuneOptions(rounds=7, budget_s=15))
            tuning.record(res.artifact.path, found)
            say(f"  {target}: tuned {tuning.settings_label(found.settings)} ({found.speedup:.2f}x the default)")
            timings[target] = found.p50_ms  # the tuned setting, timed by the search's final comparison
        else:
            timings[target] = _median_ms(res.artifact.path, threads, iters)
        paths[target] = res.artifact.path
    if not timings:
        raise ValueError(f"no runtime to run {resolved.model} fast here: install one "
                         "(pip install 'edgeseg[openvino]' or 'edgeseg[onnx]'), or run torch with --runtime torch")
    best = min(timings, key=timings.__getitem__)
    atomic_write_json(record, {"target": best, "timings_ms": timings, "artifact": paths[best].name,
                               "threads": threads, "iters": iters, "cpu": cpu})
    return Choice(artifact=paths[best], target=best, timings_ms=timings)


def _median_ms(path: Path, threads: int | None, iters: int) -> float:
    from edgeseg.benchmarks.measure import time_inference

    from edgeseg import runtimes

    with runtimes.load(path, threads=threads) as rt:
        x = np.zeros([1 if d in (-1, None) else d for d in rt.input_spec.nchw_shape()], np.float32)
        timing = time_inference(rt.infer, x, warmup=5, iters=iters)
    return float(np.median(timing["samples_ms"]))


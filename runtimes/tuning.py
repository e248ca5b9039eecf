"""Autotuned runtime settings: a short search on the target machine, recorded in the artifact's manifest.

For one artifact and one backend, :func:`tune` searches the backend's knobs (threads for every backend, plus
what :meth:`Runtime.tuning_space` lists: onnxruntime's graph-optimisation level and thread spinning,
OpenVINO's performance hint and thread pinning) on this machine, and :func:`record` writes the winner into the
manifest under ``extra["tuned"][machine key]``. :func:`edgeseg.runtimes.load` then applies the settings
recorded for this machine and backend by default; whatever the caller passes explicitly wins, and
``tuned=False`` turns it off.

How the search decides, so that noise on shared cores does not pick a setting:

- coordinate descent from the backend's defaults: one knob at a time, every value of it loaded side by side;
- rounds interleave the candidates (``calls`` timed calls each, median per round), and a candidate's figure is
  the median over rounds, so a burst of load from another process hits every candidate alike;
- a value replaces the current one only when it is at least ``min_gain`` (3%) faster;
- every candidate's output must match the default setting's on the same input (the knobs change speed, never
  results); one that does not is rejected and recorded as such;
- a final interleaved run of the default against the winner gives the speed-up as a ratio from one run, and
  the winner is kept only if it is still ``min_gain`` faster there.

The record is per machine (CPU model, usable cores, int8 kernel path): settings tuned on a 2-core mini PC
are not applied on a 16-core workstation, which has its own entry once tuned there.

Examples:
    >>> from edgeseg.runtimes.tuning import tune, record
    >>> result = tune("exports/ultralightunet-s_fp32.xml")
    >>> record("exports/ultralightunet-s_fp32.xml", result)   # runtimes.load uses it from now on
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from edgeseg.runtimes.manifest import Manifest, find_manifest, manifest_path
from edgeseg.runtimes.sysinfo import cpu_info, int8_path


@dataclass(frozen=True)
class Knob:
    """One runtime setting the tuner may change.

    Attributes:
        name: what the report calls it (e.g. "threads", "hint", "cpu_pinning").
        option: the load option it sets (``threads`` or a backend option such as ``hint``, ``config``).
        values: candidate values, the backend's default first.
        key: for a dict-valued option (``config``, ``session_config``): the entry inside it.
    """

    name: str
    option: str
    values: tuple[Any, ...]
    key: str | None = None


@dataclass
class TuneOptions:
    """How long and how carefully to search.

    Attributes:
        rounds: interleaved rounds per comparison (median over rounds).
        calls: timed calls per candidate per round (median per round).
        warmup: untimed calls after each load.
        min_gain: a candidate replaces the current value only when this much faster (0.03 = 3%).
        budget_s: stop searching further knobs after this many seconds (the final comparison still runs).
    """

    rounds: int = 15
    calls: int = 4
    warmup: int = 5
    min_gain: float = 0.03
    budget_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("rounds", "calls"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0 or self.budget_s <= 0 or not 0 <= self.min_gain < 1:
            raise ValueError("warmup must be >= 0, budget_s > 0 and 0 <= min_gain < 1")


@dataclass
class TuneResult:
    """What the search found for one artifact on this machine.

    Attributes:
        runtime: the backend tuned.
        device: the device it ran on.
        machine: the key the record is filed under (see :func:`machine_key`).
        settings: the chosen load settings (``threads`` and backend options), as ``runtimes.load`` takes them.
        p50_ms: the chosen setting's latency in the final comparison.
        default_p50_ms: the default setting's, in the same run.
        trials: every candidate tried: its settings, p50 and status ("ok" or why it was rejected).
    """

    runtime: str
    device: str
    machine: str
    settings: dict[str, Any]
    p50_ms: float
    default_p50_ms: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def speedup(self) -> float:
        return self.default_p50_ms / self.p50_ms if self.p50_ms > 0 else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "speedup": round(self.speedup, 4)}


def machine_key(info: dict[str, Any] | None = None) -> str:
    """The machine a tuned setting belongs to: CPU model, usable cores and int8 path, e.g.
    ``"AMD EPYC 9B14 | 2 cores | vnni"``."""
    info = info or cpu_info()
    return f"{info['model'].strip()} | {info['usable_cores']} cores | {int8_path(info['isa'])}"


@lru_cache(maxsize=1)
def _this_machine() -> str:
    return machine_key()


def thread_counts(cores: int | None = None) -> tuple[int, ...]:
    """Thread counts worth trying: the usable cores first (what the backends default to), then powers of two
    below it."""
    cores = cores or int(cpu_info()["usable_cores"]) or 1
    counts = [cores] + [c for c in (1, 2, 4, 8, 16, 32) if c < cores]
    return tuple(dict.fromkeys(counts))


def _apply(settings: dict[str, Any], knob: Knob, value: Any) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in settings.items()}
    if knob.key is None:
        out[knob.option] = value
    else:
        out.setdefault(knob.option, {})[knob.key] = value
    return out


def settings_label(settings: dict[str, Any]) -> str:
    """Settings as one line, e.g. ``threads=2, hint=LATENCY, config.ENABLE_CPU_PINNING=True``."""
    parts = []
    for k, v in settings.items():
        if isinstance(v, dict):
            parts += [f"{k}.{kk}={vv}" for kk, vv in v.items()]
        else:
            parts.append(f"{k}={v}")
    return ", ".join(parts)


def _sample(manifest: Manifest, seed: int = 0) -> np.ndarray:
    """A normalised NCHW input of the artifact's shape, dynamic dims taken from the pre-processing's size (the
    knobs never change results, so any input shows whether one does)."""
    spec = manifest.input
    dims = list(spec.shape)
    if spec.channels_last:  # Runtime.infer takes channels-first
        dims = [dims[0], dims[-1], *dims[1:-1]]
    spatial = list(manifest.preprocessing.size)
    shape = [1, int(dims[1]) if int(dims[1]) > 0 else 3]
    for i, d in enumerate(dims[2:]):
        shape.append(int(d) if d not in (-1, None) and int(d) > 0 else int(spatial[i % len(spatial)]))
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


class _Timer:
    """Loaded candidates, timed side by side in interleaved rounds."""

    def __init__(self, artifact: Path, runtime: str, device: str, x: np.ndarray, opts: TuneOptions):
        self.artifact, self.runtime, self.device, self.x, self.opts = artifact, runtime, device, x, opts

    def _load(self, settings: dict[str, Any]) -> Any:
        from edgeseg.runtimes.registry import load

        s = dict(settings)
        return load(self.artifact, runtime=self.runtime, device=self.device, threads=s.pop("threads", None),
                    tuned=False, **s)

    def compare(self, candidates: list[dict[str, Any]], reference: np.ndarray | None
                ) -> tuple[list[float | None], list[str], np.ndarray]:
        """p50 (ms) and status of each candidate; the first candidate's output becomes the reference when
        none is given."""
        loaded, status, ref = [], [], reference
        try:
            for settings in candidates:
                try:
                    rt = self._load(settings)
                except (ValueError, RuntimeError) as exc:
                    loaded.append(None)
                    status.append(f"rejected: does not load ({str(exc).splitlines()[0][:160]})")
                    continue
                y = rt.infer(self.x)
                if ref is None:
                    ref = y
                scale = max(1.0, float(np.max(np.abs(ref))))
                err = float(np.max(np.abs(y - ref)))
                if not np.all(np.isfinite(y)) or err > 1e-3 * scale:
                    rt.close()
                    loaded.append(None)
                    status.append(f"rejected: changes the output (max|d| {err:.2e})")
                    continue
                for _ in range(self.opts.warmup):
                    rt.infer(self.x)
                loaded.append(rt)
                status.append("ok")
            per_round: list[list[float]] = [[] for _ in candidates]
            for _ in range(self.opts.rounds):
                for i, rt in enumerate(loaded):
                    if rt is None:
                        continue
                    ts = []
                    for _ in range(self.opts.calls):
                        t0 = time.perf_counter()
                        rt.infer(self.x)
                        ts.append(time.perf_counter() - t0)
                    per_round[i].append(float(np.median(ts)) * 1e3)
        finally:
            for rt in loaded:
                if rt is not None:
                    rt.close()
        p50 = [float(np.median(r)) if r else None for r in per_round]
        return p50, status, ref if ref is not None else np.zeros(0, np.float32)


def tune(artifact: str | Path, runtime: str | None = None, device: str = "cpu", threads: int | None = None,
         options: TuneOptions | None = None) -> TuneResult:
    """Search this machine's fastest settings for ``artifact`` on ``runtime`` (default: the format's).

    ``threads`` holds the thread count (the bench's ``--threads``) instead of searching it.

    Raises:
        FileNotFoundError / ValueError: the artifact or its manifest is missing or unreadable (as
            ``runtimes.load``).
        RuntimeError: not even the default setting runs.
    """
    from edgeseg.runtimes.registry import get_runtime, load

    opts = options or TuneOptions()
    path = Path(artifact)
    t_start = time.perf_counter()
    with load(path, runtime=runtime, device=device, tuned=False) as probe:  # validates everything up front
        name, manifest = probe.name, probe.manifest
    cls = get_runtime(name)
    counts = (int(threads),) if threads else thread_counts()
    knobs = [Knob("threads", "threads", counts), *cls.tuning_space(device)]
    timer = _Timer(path, name, device, _sample(manifest), opts)
    default: dict[str, Any] = {}
    for k in knobs:
        default = _apply(default, k, k.values[0])
    best, ref, trials = default, None, []
    for n, knob in enumerate(knobs):
        if n and time.perf_counter() - t_start > opts.budget_s:
            trials.append({"knob": knob.name, "status": "skipped: time budget spent"})
            continue
        values = list(knob.values)
        current = best[knob.option] if knob.key is None else best[knob.option][knob.key]
        values.sort(key=lambda v: v != current)  # the current value first: it is what the others must beat
        candidates = [_apply(best, knob, v) for v in values]
        p50, status, ref = timer.compare(candidates, ref)
        for settings, p, s in zip(candidates, p50, status):
            trials.append({"knob": knob.name, "settings": settings, "label": settings_label(settings),
                           "p50_ms": None if p is None else round(p, 4), "status": s})
        if p50[0] is None:
            raise RuntimeError(f"{path.name}: the {name} backend does not run with {settings_label(candidates[0])}: "
                               f"{status[0]}")
        win = min((i for i, p in enumerate(p50) if p is not None), key=lambda i: p50[i])
        if win and p50[win] < p50[0] * (1 - opts.min_gain):
            best = candidates[win]
    if best == default:
        final, _, _ = timer.compare([default], ref)
        p_best = p_default = final[0]
    else:
        final, _, _ = timer.compare([default, best], ref)
        p_default, p_best = final
    if p_best is None or p_default is None:
        raise RuntimeError(f"{path.name}: the final comparison failed to run")
    if best != default and p_best >= p_default * (1 - opts.min_gain):  # it did not pay when checked again
        trials.append({"knob": "confirm", "settings": best, "label": settings_label(best), "p50_ms": round(p_best, 4),
                       "status": f"not kept: {p_best:.3f} ms against the default's {p_default:.3f} ms"})
        best, p_best = default, p_default
    return TuneResult(runtime=name, device=device, machine=_this_machine(), settings=best,
                      p50_ms=round(p_best, 4), default_p50_ms=round(p_default, 4), trials=trials,
                      seconds=round(time.perf_counter() - t_start, 2))


def record(artifact: str | Path, result: TuneResult) -> Path:
    """Write ``result`` into the artifact's manifest (atomically), under this machine and backend.

    Returns:
        The manifest's path.
    """
    manifest = find_manifest(artifact)
    if manifest is None:
        raise FileNotFoundError(f"{artifact}: no manifest beside it to record the tuned settings in")
    tuned = dict(manifest.extra.get("tuned") or {})
    entry = dict(tuned.get(result.machine) or {})
    entry[f"{result.runtime}/{result.device}"] = {
        "settings": result.settings,
        "p50_ms": result.p50_ms,
        "default_p50_ms": result.default_p50_ms,
        "speedup": round(result.speedup, 4),
        "tuned_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    tuned[result.machine] = entry
    manifest.extra = {**manifest.extra, "tuned": tuned}
    return manifest.save(manifest_path(artifact))


def tuned_settings(manifest: Manifest | None, runtime: str, device: str) -> dict[str, Any]:
    """The settings recorded for this machine, backend and device ({} when none)."""
    tuned = (manifest.extra.get("tuned") or {}) if manifest is not None else {}
    if not tuned:
        return {}
    entry = (tuned.get(_this_machine()) or {}).get(f"{runtime}/{device}")
    return dict((entry or {}).get("settings") or {})


def merge_settings(tuned: dict[str, Any], threads: int | None, options: dict[str, Any]
                   ) -> tuple[int | None, dict[str, Any], dict[str, Any]]:
    """Apply tuned settings under the caller's: an explicit ``threads`` or option wins, and inside a
    dict-valued option (``config``) the caller's entries win one by one.

    Returns:
        ``(threads, options, applied)``, ``applied`` being the tuned settings that took effect.
    """
    applied: dict[str, Any] = {}
    out = dict(options)
    if "threads" in tuned and threads is None:
        threads = applied["threads"] = tuned["threads"]
    for key, value in tuned.items():
        if key == "threads":
            continue
        if isinstance(value, dict):
            given = out.get(key) or {}
            if not isinstance(given, dict):
                continue
            fill = {k: v for k, v in value.items() if k not in given}
            if fill:
                out[key] = {**fill, **given}
                applied[key] = fill
        elif key not in out:
            out[key] = applied[key] = value
    return threads, out, applied

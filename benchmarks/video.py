"""Steadiness on video in the bench (``edgeseg bench --video ...``, a suite's ``video:`` key): every ok artifact
row is scored on clips with a true mask per frame, with smoothing off and on (:mod:`edgeseg.benchmarks.temporal`).

Clips are either folders on disk (``edgeseg.common.clips``; ``python -m edgeseg.benchmarks.temporal --write``)
or simulated here from the run's data: the camera pans onto each val image's polyp and away again, so the delay
to a first box is measured too. The FP32 torch reference is not scored (it would take minutes per clip set, and
its masks are what the fidelity columns already compare against).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgeseg.benchmarks.results import OK, RunResult

SETTINGS = ("raw", "default")


@dataclass
class VideoSpec:
    """Which clips: ``folders`` on disk, else ``simulate`` clips of ``frames`` frames from the run's data."""

    folders: list[str] = field(default_factory=list)
    simulate: int = 0
    frames: int = 120
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.folders and self.simulate < 1:
            raise ValueError("video: give clip folders (folders: [DIR]) or how many to simulate (simulate: 8)")
        if self.frames < 2 or self.simulate < 0:
            raise ValueError(f"video: frames must be >= 2 and simulate >= 0, got {self.frames}, {self.simulate}")

    @classmethod
    def parse(cls, value: Any) -> VideoSpec:
        """From a suite's mapping, a list of folders, or a CLI string (``8`` / ``8x120`` simulated, else a
        comma-separated list of folders)."""
        if isinstance(value, VideoSpec):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"folders", "simulate", "frames", "seed"})
            if unknown:
                raise ValueError(f"video: unknown key(s) {', '.join(unknown)}; valid: folders, simulate, frames, seed")
            return cls(**value)
        if isinstance(value, (list, tuple)):
            return cls(folders=[str(v) for v in value])
        text = str(value).strip()
        count, _, frames = text.partition("x")
        if count.isdigit() and (not frames or frames.isdigit()):
            return cls(simulate=int(count), frames=int(frames or 120))
        return cls(folders=[p for p in text.split(",") if p])

    def describe(self, data: str) -> str:
        if self.folders:
            return f"clip folders {', '.join(self.folders)}"
        return f"{self.simulate} simulated pan-on clips x {self.frames} frames over {data} (val), seed {self.seed}"


def video_rows(run: RunResult, spec: VideoSpec, log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """One entry per ok artifact row: its figures per setting and the smoothing on/off ratios."""
    from edgeseg.apps.endoscopy.inference import Segmenter
    from edgeseg.benchmarks import temporal

    from edgeseg import runtimes

    say = log or (lambda _m: None)
    cfg = run.config
    data = str(cfg.get("data") or "synthetic")
    settings = {k: temporal.SETTINGS[k] for k in SETTINGS}
    out = []
    for r in run.rows:
        if r.status != OK or r.reference or not r.artifact:
            continue
        label = f"{r.target}/{r.precision} ({r.runtime}, {r.device})"
        entry: dict[str, Any] = {"row": label, "clips": spec.describe(data)}
        try:
            seg = Segmenter(runtimes.load(r.artifact, runtime=r.runtime, device=r.device, threads=cfg.get("threads")))
            try:
                if spec.folders:
                    res = temporal.measure_folders(seg, spec.folders, settings)
                else:
                    res = temporal.measure(seg, data, spec.simulate, spec.frames, spec.seed, settings, kind="pan-on")
            finally:
                seg.runtime.close()
            entry["results"] = res
            entry["off_vs_on"] = temporal.off_vs_on(res)
            say(f"video {label}: {temporal.off_vs_on_line(entry['off_vs_on'])}")
        except (ValueError, RuntimeError, FileNotFoundError) as exc:
            entry["error"] = str(exc).splitlines()[0][:200]
            say(f"video {label}: not scored ({entry['error']})")
        out.append(entry)
    return out

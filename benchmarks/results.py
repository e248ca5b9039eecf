"""The row and run model of a benchmark: what each (target, precision, runtime, device) row found.

A row always ends with one status and, unless it is ``ok``, a one-line reason:

- ``ok``: converted (or reused), loaded, measured, and within the fidelity thresholds of its precision;
- ``unavailable``: the backend package or the device is missing here (not a defect of the artifact);
- ``convert-failed``: the converter raised (or its process died);
- ``load-failed``: the runtime could not load or run the artifact (including a crash during inference);
- ``fidelity-failed``: it ran, but its masks or logits are too far from the FP32 torch reference.

One failing row never aborts the matrix: every stage records its failure in the row and the harness moves on.
Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from edgeseg.benchmarks.stats import speedup

OK = "ok"
UNAVAILABLE = "unavailable"
CONVERT_FAILED = "convert-failed"
LOAD_FAILED = "load-failed"
FIDELITY_FAILED = "fidelity-failed"
STATUSES = (OK, CONVERT_FAILED, LOAD_FAILED, FIDELITY_FAILED, UNAVAILABLE)

# Default fidelity thresholds per precision: minimum mean mask agreement vs the FP32 reference, and the
# largest tolerated max-abs logit difference (None: not checked). fp32 artifacts should be numerically the
# same model; reduced precisions are judged on the masks they produce.
DEFAULT_MIN_AGREEMENT = {"fp32": 0.99, "fp16": 0.98, "int8": 0.90}
DEFAULT_MAX_ABS_DIFF = {"fp32": 1e-2, "fp16": None, "int8": None}


@dataclass(frozen=True)
class RowSpec:
    """One cell of the matrix.

    Attributes:
        target: artifact format: "torch" (the reference), "onnx", "openvino", "tflite".
        precision: "fp32", "fp16" or "int8".
        runtime: backend that runs it ("torch", "onnxruntime", "openvino", "litert").
        device: "cpu", "gpu", "npu", ...
    """

    target: str
    precision: str
    runtime: str
    device: str = "cpu"

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.target, self.precision, self.runtime, self.device)

    @property
    def label(self) -> str:
        """Short human label, e.g. ``onnx/int8 (onnxruntime, cpu)``."""
        return f"{self.target}/{self.precision} ({self.runtime}, {self.device})"

    @property
    def is_reference(self) -> bool:
        return self.target == "torch" and self.precision == "fp32"


@dataclass
class Row:
    """Everything measured for one :class:`RowSpec` (fields stay None when a stage did not run).

    Latency fields are milliseconds; ``latency_ms`` holds ``p50/p90/p99/mean/std/min/max/n``.
    """

    target: str
    precision: str
    runtime: str
    device: str
    status: str = OK
    reason: str = ""
    reference: bool = False
    artifact: str | None = None
    reused: bool | None = None
    convert_time_s: float | None = None
    size_bytes: int | None = None
    threads: int | None = None
    load_time_ms: float | None = None
    first_inference_ms: float | None = None
    latency_ms: dict[str, float] | None = None
    fps: float | None = None
    samples_ms: list[float] = field(default_factory=list)
    peak_rss_mb: float | None = None
    rss_before_load_mb: float | None = None
    isolated: bool | None = None
    speedup: float | None = None
    # accuracy vs labels
    dice: float | None = None
    iou: float | None = None
    recall: float | None = None
    seg_precision: float | None = None
    dice_per_case: list[float] = field(default_factory=list)
    dice_drop: float | None = None
    # fidelity vs the FP32 torch reference
    agreement: float | None = None
    agreement_min: float | None = None
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    psnr_db: float | None = None
    runtime_info: dict[str, Any] = field(default_factory=dict)
    warning: str = ""  # e.g. an int8 artifact verified on another CPU's int8 kernels

    @classmethod
    def from_spec(cls, spec: RowSpec, **kw: Any) -> Row:
        return cls(target=spec.target, precision=spec.precision, runtime=spec.runtime, device=spec.device,
                   reference=spec.is_reference, **kw)

    @property
    def spec(self) -> RowSpec:
        return RowSpec(self.target, self.precision, self.runtime, self.device)

    @property
    def p50(self) -> float | None:
        return None if not self.latency_ms else self.latency_ms.get("p50")

    def fail(self, status: str, reason: str) -> Row:
        """Mark the row as failed with a one-line reason; returns self."""
        if status not in STATUSES or status == OK:
            raise ValueError(f"a failure status must be one of {STATUSES[1:]}, got {status!r}")
        self.status = status
        self.reason = one_line(reason)
        return self

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Row:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def one_line(text: str, limit: int = 400) -> str:
    """First non-empty line of an error text, shortened to ``limit`` characters."""
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def json_safe(obj: Any) -> Any:
    """Replace NaN/inf floats (not valid JSON) by None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def judge_fidelity(
    row: Row,
    min_agreement: dict[str, float] | None = None,
    max_abs_diff: dict[str, float | None] | None = None,
) -> Row:
    """Set ``fidelity-failed`` on a measured row whose figures are outside its precision's thresholds.

    Only rows still ``ok`` are judged (an earlier failure keeps its own status); the reference row is never
    judged against itself.

    Args:
        row: a row whose ``agreement`` and ``max_abs_diff`` were filled.
        min_agreement: per precision; defaults to :data:`DEFAULT_MIN_AGREEMENT`.
        max_abs_diff: per precision (None: not checked); defaults to :data:`DEFAULT_MAX_ABS_DIFF`.
    """
    if row.status != OK or row.reference:
        return row
    mins = {**DEFAULT_MIN_AGREEMENT, **(min_agreement or {})}
    maxd = {**DEFAULT_MAX_ABS_DIFF, **(max_abs_diff or {})}
    if row.agreement is None:
        return row.fail(FIDELITY_FAILED, "no fidelity figures (the reference row did not produce outputs)")
    need = mins.get(row.precision)
    if row.agreement is not None and (math.isnan(row.agreement) or (need is not None and row.agreement < need)):
        return row.fail(FIDELITY_FAILED, f"mask agreement {row.agreement:.4f} < {need} required for "
                                         f"{row.precision}")
    tol = maxd.get(row.precision)
    if tol is not None and (row.max_abs_diff is None or not row.max_abs_diff <= tol):
        return row.fail(FIDELITY_FAILED, f"max abs logit difference {row.max_abs_diff} > {tol} allowed for "
                                         f"{row.precision}")
    return row


@dataclass
class RunResult:
    """One benchmark run: its id, configuration, environment and rows."""

    run_id: str
    created: str
    config: dict[str, Any]
    environment: dict[str, Any]
    rows: list[Row]
    layers: list[dict[str, Any]] = field(default_factory=list)  # layer-wise reports (benchmarks.layers)
    profiles: list[dict[str, Any]] = field(default_factory=list)  # per-op profiles (benchmarks.profile)
    video: list[dict[str, Any]] = field(default_factory=list)  # steadiness on clips (benchmarks.video)

    @property
    def reference(self) -> Row | None:
        return next((r for r in self.rows if r.reference), None)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "run_id": self.run_id,
            "created": self.created,
            "config": self.config,
            "environment": self.environment,
            "rows": [r.to_dict() for r in self.rows],
            "layers": self.layers,
            "profiles": self.profiles,
            "video": self.video,
        })

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        return cls(run_id=d["run_id"], created=d.get("created", ""), config=d.get("config", {}),
                   environment=d.get("environment", {}), rows=[Row.from_dict(r) for r in d.get("rows", [])],
                   layers=list(d.get("layers") or []), profiles=list(d.get("profiles") or []),
                   video=list(d.get("video") or []))

    def counts(self) -> dict[str, int]:
        """Rows per status."""
        out = dict.fromkeys(STATUSES, 0)
        for r in self.rows:
            out[r.status] = out.get(r.status, 0) + 1
        return out


def finalize_rows(rows: list[Row]) -> None:
    """Fill the ratios relative to the reference row: speedup (reference p50 / row p50) and Dice drop."""
    ref = next((r for r in rows if r.reference and r.status == OK), None)
    for r in rows:
        if ref is None:
            continue
        r.speedup = speedup(ref.p50, r.p50)
        if r.dice is not None and ref.dice is not None:
            r.dice_drop = ref.dice - r.dice

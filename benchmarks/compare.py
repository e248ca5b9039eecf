"""Per-row deltas between two runs, and the gates that turn a run into a CI pass/fail.

Rows are matched by (target, precision, runtime, device). Gates:

- latency regression: a row's p50 more than ``PCT`` percent above the same row's p50 in the baseline run;
- minimum agreement: a measured row's mean mask agreement with the FP32 reference below ``X``;
- maximum Dice drop: a measured row's Dice (vs labels) more than ``X`` below the reference row's Dice.

A gate failure is a :class:`GateFailure` that names the row and the figures; the CLI prints them and exits
non-zero. Rows that did not run (``unavailable``, ``convert-failed``, ``load-failed``) carry no figures and
are not judged by the figure gates. Torch-free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edgeseg.benchmarks.results import CONVERT_FAILED, FIDELITY_FAILED, LOAD_FAILED, OK, Row, RunResult

MEASURED = (OK, FIDELITY_FAILED)  # statuses whose rows carry latency/accuracy/fidelity figures


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def _pct(a: float | None, b: float | None) -> float | None:
    return None if not a or b is None else 100.0 * (b - a) / a


def compare_runs(run_a: RunResult, run_b: RunResult) -> dict[str, Any]:
    """Per-row changes from ``run_a`` (before) to ``run_b`` (after).

    Returns:
        ``{"run_a", "run_b", "rows": [...], "only_a": [labels], "only_b": [labels]}``; each row has the key
        fields, both statuses, p50 in both runs with the absolute and percent change, and the changes of
        FPS, Dice, mask agreement and size.
    """
    a_rows = {r.spec.key: r for r in run_a.rows}
    b_rows = {r.spec.key: r for r in run_b.rows}
    out_rows = []
    for key, b in b_rows.items():
        a = a_rows.get(key)
        if a is None:
            continue
        out_rows.append({
            "target": b.target, "precision": b.precision, "runtime": b.runtime, "device": b.device,
            "status_a": a.status, "status_b": b.status,
            "p50_a": a.p50, "p50_b": b.p50, "p50_delta_ms": _delta(a.p50, b.p50), "p50_pct": _pct(a.p50, b.p50),
            "fps_a": a.fps, "fps_b": b.fps, "fps_delta": _delta(a.fps, b.fps),
            "dice_a": a.dice, "dice_b": b.dice, "dice_delta": _delta(a.dice, b.dice),
            "agreement_a": a.agreement, "agreement_b": b.agreement,
            "agreement_delta": _delta(a.agreement, b.agreement),
            "size_a": a.size_bytes, "size_b": b.size_bytes,
        })
    return {
        "run_a": run_a.run_id,
        "run_b": run_b.run_id,
        "rows": out_rows,
        "only_a": [a_rows[k].spec.label for k in a_rows if k not in b_rows],
        "only_b": [b_rows[k].spec.label for k in b_rows if k not in a_rows],
    }


@dataclass(frozen=True)
class GateFailure:
    """One gate that a row did not pass."""

    gate: str
    row: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _check_pct(name: str, value: float | None, limit: float | None) -> None:
    if limit is not None and (value is None or value < 0):
        raise ValueError(f"{name} must be a non-negative number, got {value}")


def check_gates(
    run: RunResult,
    baseline: RunResult | None = None,
    fail_on_regression: float | None = None,
    min_agreement: float | None = None,
    max_dice_drop: float | None = None,
) -> list[GateFailure]:
    """Every gate failure of ``run`` (empty list: all gates pass).

    Args:
        run: the run to judge.
        baseline: the earlier run for the latency gate (rows missing from it are not judged).
        fail_on_regression: allowed p50 increase in percent over the baseline (None: gate off).
        min_agreement: lowest allowed mean mask agreement with the FP32 reference (None: gate off).
        max_dice_drop: largest allowed drop of Dice vs labels below the reference row's (None: gate off).

    Raises:
        ValueError: a negative threshold, an agreement outside [0, 1], or a latency gate without baseline
            (pass ``baseline=None`` and ``fail_on_regression=None`` together to skip it).
    """
    _check_pct("--fail-on-regression", fail_on_regression, fail_on_regression)
    _check_pct("--max-dice-drop", max_dice_drop, max_dice_drop)
    if min_agreement is not None and not 0.0 <= min_agreement <= 1.0:
        raise ValueError(f"--min-agreement must be between 0 and 1, got {min_agreement}")
    failures: list[GateFailure] = []
    gated = any(g is not None for g in (fail_on_regression, min_agreement, max_dice_drop))
    candidates = [r for r in run.rows if not r.reference]
    for r in candidates:
        # with a gate set, a row that could not be converted or loaded cannot have passed it
        if gated and r.status in (CONVERT_FAILED, LOAD_FAILED):
            failures.append(GateFailure("row-failed", r.spec.label, f"{r.status}: {r.reason}"))
    if candidates and not any(r.status == OK for r in candidates):
        failures.append(GateFailure("nothing-ok", f"{len(candidates)} rows",
                                    "no row is ok: " + ", ".join(sorted({r.status for r in candidates}))))
    measured = [r for r in run.rows if r.status in MEASURED]
    if fail_on_regression is not None and baseline is not None:
        base = {r.spec.key: r for r in baseline.rows}
        for r in measured:
            b = base.get(r.spec.key)
            if b is None or b.p50 is None or r.p50 is None:
                continue
            pct = _pct(b.p50, r.p50)
            if pct is not None and pct > fail_on_regression:
                failures.append(GateFailure(
                    "latency", r.spec.label,
                    f"p50 {r.p50:.2f} ms is {pct:+.1f}% vs {b.p50:.2f} ms in run {baseline.run_id} "
                    f"(limit +{fail_on_regression:g}%)"))
    ref = run.reference
    for r in measured:
        if r.reference:
            continue
        if min_agreement is not None and (r.agreement is None or r.agreement < min_agreement):
            got = "none" if r.agreement is None else f"{r.agreement:.4f}"
            failures.append(GateFailure("agreement", r.spec.label,
                                        f"mask agreement {got} < {min_agreement:g}"))
        if max_dice_drop is not None:
            drop = _drop(ref, r)
            if drop is None or drop > max_dice_drop:
                got = "unknown" if drop is None else f"{drop:.4f}"
                failures.append(GateFailure("dice-drop", r.spec.label,
                                            f"Dice drop vs the FP32 reference {got} > {max_dice_drop:g}"))
    return failures


def _drop(ref: Row | None, row: Row) -> float | None:
    if ref is None or ref.dice is None or row.dice is None:
        return None
    return ref.dice - row.dice

"""The benchmark matrix: for every (target, precision, runtime, device) row, convert or reuse the artifact,
load it, measure it, and score it against the labels and the FP32 torch reference.

Design:
    - the FP32 torch model is the first row (the reference every ratio is relative to), measured exactly
      like the others through ``runtimes`` (its "artifact" is the checkpoint);
    - each stage of each row runs in its own process by default (``isolate=True``): conversion in one,
      load + timing + outputs in another. A crash (segfault, OOM kill, timeout) becomes that row's status,
      peak memory is the row's own, and one converter's memory never inflates another runtime's figure;
    - artifacts are cached in ``artifacts/<model>-<size>-<weights sha>/`` and reused when their manifest is
      there (``reuse=False`` forces conversion);
    - without trained weights (none given, none shipped) the model is initialised with a fixed seed and
      saved once, so the reference and every converter see the same (random) weights;
    - every row sees the same cases; Dice is the mean per-case Dice vs the labels; fidelity compares each
      row's logits with the reference's on the same inputs;
    - busy-waiting thread pools are off by default (``busy_wait="off"``): workers get
      ``OMP_WAIT_POLICY=PASSIVE`` (torch) and onnxruntime sessions ``session.intra_op.allow_spinning=0``.
      On the shared 2-core machine this was built on, torch eager with OpenMP's default spinning took 5.9 s
      per 256x256 inference instead of 84 ms, and onnxruntime 46 ms instead of 20 ms (every op's barrier
      waits for a spinning thread the scheduler has descheduled). On a dedicated device spinning can be
      slightly faster: ``busy_wait="on"`` asks for it, ``"default"`` leaves each library's own default. The
      choice is recorded with the run.
"""

from __future__ import annotations

import io
import json
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgeseg.benchmarks import stats
from edgeseg.benchmarks.jobs import ConvertJob, MeasureJob, StageRunner, TuneJob
from edgeseg.benchmarks.results import (
    LOAD_FAILED,
    OK,
    UNAVAILABLE,
    Row,
    RowSpec,
    RunResult,
    finalize_rows,
    judge_fidelity,
)
from edgeseg.runtimes.formats import FORMATS, PRECISIONS, runtimes_for, target_formats

TARGETS = tuple(f.name for f in target_formats())
DEVICES = ("cpu", "gpu", "npu")
BUSY_WAIT = ("off", "on", "default")


def parse_list(value: str | list[str] | tuple[str, ...] | None, valid: tuple[str, ...], what: str) -> list[str]:
    """``"a,b"`` / ``"all"`` / a list -> validated list (order of ``valid``, duplicates removed)."""
    if value is None:
        return list(valid)
    items = [v.strip().lower() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    if items == ["all"]:
        return list(valid)
    bad = [v for v in items if v not in valid]
    if bad or not items:
        raise ValueError(f"unknown {what} {', '.join(bad) or '(none)'}; valid: {', '.join(valid)} or all")
    return [v for v in valid if v in items]


def expand_matrix(targets: list[str], precisions: list[str], devices: list[str],
                  runtimes: list[str] | None = None) -> list[RowSpec]:
    """The reference row followed by every (target, precision, runtime, device) row.

    A precision a target does not make (ExecuTorch fp16) gives no row. Each target runs on its default runtime; ``runtimes`` adds every other backend that can run a target
    (e.g. OpenVINO reading the ONNX file) and restricts the matrix to the backends named.
    """
    specs = [RowSpec("torch", "fp32", "torch", "cpu")]
    for target in targets:
        backends = [FORMATS[target].runtime] if runtimes is None else \
            [r for r in runtimes if r in runtimes_for(target)]
        offered = FORMATS[target].target.precisions if FORMATS[target].target else precisions
        for precision in [p for p in precisions if p in offered]:  # "all" means what the target makes
            for rt in backends:
                for dev in devices:
                    specs.append(RowSpec(target, precision, rt, dev))
    return specs


@dataclass
class BenchConfig:
    """Everything a run depends on (stored with the run)."""

    model: str
    weights: str | None = None
    targets: list[str] = field(default_factory=lambda: list(TARGETS))
    precisions: list[str] = field(default_factory=lambda: list(PRECISIONS))
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    runtimes: list[str] | None = None
    data: str = "synthetic"
    split: str | None = "val"
    img_size: int | None = None
    threads: int | None = 2
    warmup: int = 10
    iters: int | None = 50
    min_time: float | None = None
    limit: int | None = None
    calibration: int = 32
    out: str = "bench-out"
    artifacts: str | None = None
    reuse: bool = True
    isolate: bool = True
    keep_work: bool = False
    busy_wait: str = "off"
    row_timeout: float = 1800.0
    suite: str | None = None
    min_agreement: dict[str, float] = field(default_factory=dict)
    max_abs_diff: dict[str, float | None] = field(default_factory=dict)
    runtime_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    convert_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    tune: bool = False  # search each artifact's fastest runtime settings here first (edgeseg.runtimes.tuning)
    video: dict[str, Any] | None = None  # clips to score each artifact on (edgeseg.benchmarks.video.VideoSpec)

    def validate(self) -> None:
        self.targets = parse_list(self.targets, TARGETS, "target(s)")
        self.precisions = parse_list(self.precisions, PRECISIONS, "precision(s)")
        self.devices = parse_list(self.devices, DEVICES, "device(s)")
        if self.runtimes is not None:
            from edgeseg.runtimes import list_runtimes

            self.runtimes = parse_list(self.runtimes, tuple(r for r in list_runtimes() if r != "torch"),
                                       "runtime(s)")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")
        if self.min_time is None and (self.iters is None or self.iters < 1):
            raise ValueError("--iters must be >= 1 (or give --min-time S)")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {self.warmup}")
        if self.busy_wait not in BUSY_WAIT:
            raise ValueError(f"--busy-wait must be one of {', '.join(BUSY_WAIT)}, got {self.busy_wait!r}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")
        if self.video is not None:
            from edgeseg.benchmarks.video import VideoSpec

            self.video = asdict(VideoSpec.parse(self.video))


def runtime_options(cfg: BenchConfig, runtime: str) -> dict[str, Any]:
    """The options a row's runtime gets: the configured ones plus the busy-wait choice, in the backend's own
    terms (:meth:`~edgeseg.runtimes.base.Runtime.busy_wait_options`)."""
    from edgeseg.runtimes import get_runtime
    from edgeseg.runtimes.tuning import merge_settings

    opts = dict(cfg.runtime_options.get(runtime, {}))
    if cfg.busy_wait == "default":
        return opts
    # the same rule as tuned settings: what the configuration names wins, dict options entry by entry
    return merge_settings(get_runtime(runtime).busy_wait_options(cfg.busy_wait == "on"), None, opts)[1]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def resolve_weights(model: str, weights: str | None, work: Path) -> tuple[Path, str, str]:
    """(checkpoint path, sha256, label) of the weights every row uses, by the one rule of
    :func:`edgeseg.weights.resolve` (given, else shipped, else random); random weights (seed 0) are saved
    to ``work`` so that every worker process shares them."""
    import torch

    from edgeseg.common.io import atomic_write_bytes, sha256_file
    from edgeseg.weights import CHECKPOINT_FORMAT, resolve

    if weights and not Path(weights).is_file():
        raise FileNotFoundError(f"--weights {weights} not found")  # names the flag; the resolver cannot
    r = resolve(model, weights, seed=0)
    if r.path is not None:
        return r.path, str(r.sha256), str(r.path) if r.source == "given" else f"shipped ({r.path.name})"
    path = work / f"{model}-random-seed0.pt"
    buf = io.BytesIO()  # saved through a buffer: torch.save names the archive after the file, a temp name
    torch.save({"format": CHECKPOINT_FORMAT, "model": model, "state_dict": r.module.state_dict(),
                "note": "random initialisation, torch.manual_seed(0): outputs are meaningless"}, buf)
    atomic_write_bytes(path, buf.getvalue())  # same bytes every run, so cached artifacts are reused
    return path, sha256_file(path), "random (seed 0)"


def checkpoint_preprocessing(weights: Path, mcfg: Any) -> tuple[list[float], list[float], int | None]:
    """(mean, std, trained size) of the input: the checkpoint's pre-processing record when it has one (size
    None when it records none), else the model config's mean/std and no size."""
    from edgeseg.weights import read_checkpoint

    pre = read_checkpoint(weights).get("preprocessing") or {}
    size = pre.get("size")
    trained = int(size[-1]) if isinstance(size, (list, tuple)) and size else None
    if pre.get("mean") is not None and pre.get("std") is not None:
        return [float(m) for m in pre["mean"]], [float(s) for s in pre["std"]], trained
    return list(mcfg.mean), list(mcfg.std), trained


def artifact_path(root: Path, model: str, img: int, weights_sha: str, target: str, precision: str,
                  options: dict[str, Any] | None = None) -> Path:
    """Where the cached artifact of one row lives: ``root/<model>-<img>-<sha12>[-<opts8>]/<model>_<precision>.<ext>``;
    non-default conversion options get their own folder (a hash of them), so they never reuse another's files."""
    folder = f"{model}-{img}-{weights_sha[:12]}"
    if options:
        import hashlib

        folder += "-" + hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return Path(root) / folder / f"{model}_{precision}{FORMATS[target].suffix}"


def artifact_size(path: Path, target: str) -> int:
    """Bytes of the artifact's files (its format's companions included: an OpenVINO .xml with its .bin)."""
    return sum(f.stat().st_size for f in FORMATS[target].files(path))


def _check_available(spec: RowSpec) -> str | None:
    """Why the row cannot run here (missing backend or device), or None."""
    from edgeseg.runtimes import get_runtime

    cls = get_runtime(spec.runtime)
    if not cls.is_available():
        return f"runtime {spec.runtime!r} is not installed: pip install 'edgeseg[{cls.extra}]' -c constraints.txt"
    try:
        devices = [d.lower() for d in cls.devices()]
    except Exception as exc:  # a broken install lists no devices
        return f"runtime {spec.runtime!r} cannot list its devices ({type(exc).__name__}: {exc})"
    if spec.device.lower() not in devices:
        return f"runtime {spec.runtime!r} has no {spec.device} device here (has: {', '.join(devices)})"
    return None


def _valid_cached(path: Path, wsha: str) -> bool:
    """A cached artifact is reused only when its manifest is there, its weights are these, and every file is
    the one the manifest hashed (a truncated or swapped file is converted again)."""
    from edgeseg.runtimes.manifest import check_files, find_manifest

    try:
        man = find_manifest(path)
        if man is None or not path.is_file():
            return False
        check_files(path, man)
    except ValueError:
        return False
    sha = (man.weights or {}).get("sha256")
    return sha in (None, wsha)


@dataclass
class _Plan:
    """What every row of one run shares: decided once, before the first row (stage "plan")."""

    cfg: BenchConfig
    run_id: str
    work: Path
    art_root: Path
    weights: Path
    weights_sha: str
    weights_label: str
    img: int
    cases: Any
    inputs: Path
    env: dict[str, Any]
    macs: int
    num_classes: int
    specs: list[RowSpec]


def _plan(cfg: BenchConfig, say: Callable[[str], None]) -> _Plan:
    """Validate the configuration, resolve the weights, the input size and the cases, and expand the matrix."""
    cfg.validate()
    from edgeseg.models import get_model_cfg

    mcfg = get_model_cfg(cfg.model)
    if mcfg.spatial_dims != 2:
        raise ValueError(f"{cfg.model} is a {mcfg.spatial_dims}D model; edgeseg bench measures 2D models")
    out = Path(cfg.out)
    from edgeseg.common.io import check_writable_dir, clean_stale

    check_writable_dir(out)
    clean_stale(out)  # report temporaries a killed run left (.bench.json.XXXX.json)
    run_id = new_run_id()
    work = out / "work" / run_id
    work.mkdir(parents=True)
    from edgeseg.benchmarks.data import load_cases
    from edgeseg.benchmarks.environment import capture_environment

    wpath, wsha, wlabel = resolve_weights(cfg.model, cfg.weights, work)
    mean, std, trained = checkpoint_preprocessing(wpath, mcfg)
    # default size: what the weights were trained at (shipped checkpoints are smaller than 256), else the model's
    img = cfg.img_size or trained or int(mcfg.input_size[-1])
    if img <= 0 or img % mcfg.divisible_by:
        raise ValueError(f"--img-size must be a positive multiple of {mcfg.divisible_by} for {cfg.model}")
    cases = load_cases(cfg.data, cfg.split, img, mean, std, mcfg.in_channels, cfg.limit)
    inputs_path = work / "inputs.npy"
    np.save(inputs_path, cases.inputs)
    say(f"edgeseg bench {run_id}: {cfg.model} ({wlabel}) at {img}x{img}, {len(cases)} cases from {cfg.data} "
        f"({cfg.split or 'all'}), threads {cfg.threads}")
    env = capture_environment(cfg.threads, measure_peak=True)
    from edgeseg.profiling import profile

    return _Plan(cfg=cfg, run_id=run_id, work=work,
                 art_root=Path(cfg.artifacts) if cfg.artifacts else out / "artifacts", weights=wpath,
                 weights_sha=wsha, weights_label=wlabel, img=img, cases=cases, inputs=inputs_path, env=env,
                 macs=profile(cfg.model, img).macs, num_classes=mcfg.num_classes,
                 specs=expand_matrix(cfg.targets, cfg.precisions, cfg.devices, cfg.runtimes))


def _convert(plan: _Plan, spec: RowSpec, row: Row, stage: StageRunner, say: Callable[[str], None]) -> Path | None:
    """Stage "convert": the row's artifact, reused from the cache or converted (and tuned with ``--tune``);
    None when the row failed (its status says why)."""
    cfg = plan.cfg
    if spec.is_reference:
        row.size_bytes = plan.weights.stat().st_size
        return plan.weights
    options = cfg.convert_options.get(spec.target)
    artifact = artifact_path(plan.art_root, cfg.model, plan.img, plan.weights_sha, spec.target, spec.precision,
                             options)
    if cfg.reuse and _valid_cached(artifact, plan.weights_sha):
        row.reused = True
    else:
        job = ConvertJob(model=cfg.model, weights=str(plan.weights), target=spec.target,
                         precision=spec.precision, out_dir=str(artifact.parent), img_size=plan.img,
                         name=cfg.model, calib=cfg.data, calib_size=cfg.calibration, threads=cfg.threads,
                         options=dict(options or {}))
        say(f"{spec.label}: converting ...")
        res = stage("convert", job)
        if not res.get("ok"):
            row.fail(res.get("status", "convert-failed"), res.get("reason", "conversion failed"))
            say(f"{spec.label}: {row.status} ({row.reason})")
            return None
        artifact = Path(res["artifact"])
        row.reused, row.convert_time_s = False, res.get("convert_time_s")
    row.size_bytes = artifact_size(artifact, spec.target)
    if cfg.tune:
        res = stage("tune", TuneJob(artifact=str(artifact), runtime=spec.runtime, device=spec.device,
                                    threads=cfg.threads))
        if res.get("ok"):
            from edgeseg.runtimes.tuning import settings_label

            chosen = settings_label({k: v for k, v in res["settings"].items() if k != "threads"})
            say(f"{spec.label}: tuned: {chosen or 'defaults'} ({res['speedup']:.2f}x the default, one run)")
        else:  # the row is still measured, with the backend's defaults
            say(f"{spec.label}: tuning failed ({res.get('reason', 'unknown')}); measuring with the defaults")
    return artifact


def _measure(plan: _Plan, spec: RowSpec, row: Row, artifact: Path, stage: StageRunner, n: int,
             say: Callable[[str], None]) -> np.ndarray | None:
    """Stage "measure": load, time and run every case; the logits, or None when the row failed."""
    cfg = plan.cfg
    opts = runtime_options(cfg, spec.runtime)
    if spec.is_reference:
        opts.setdefault("model", cfg.model)
    job = MeasureJob(artifact=str(artifact), runtime=spec.runtime, device=spec.device, threads=cfg.threads,
                     options=opts, inputs=str(plan.inputs), outputs=str(plan.work / f"outputs-{n:03d}.npy"),
                     warmup=cfg.warmup, iters=None if cfg.min_time else cfg.iters, min_time=cfg.min_time)
    res = stage("measure", job)
    if not res.get("ok"):
        row.fail(res.get("status", LOAD_FAILED), res.get("reason", "measurement failed"))
        say(f"{spec.label}: {row.status} ({row.reason})")
        return None
    if "outputs_path" in res:
        logits = np.load(res["outputs_path"])
        Path(res["outputs_path"]).unlink()  # up to tens of MB per row; the figures are what is kept
    else:
        logits = res["outputs"]
    _fill(row, res, logits, plan.cases.masks, plan.num_classes)
    return logits


def _score(plan: _Plan, row: Row, logits: np.ndarray, ref_logits: np.ndarray | None,
           say: Callable[[str], None]) -> None:
    """Stage "score": fidelity against the reference's logits, judged by the run's limits."""
    cfg = plan.cfg
    if not row.reference and ref_logits is not None:
        act = "sigmoid" if logits.shape[1] == 1 else "softmax"
        for k, v in stats.fidelity(logits, ref_logits, act).items():
            if hasattr(row, k):
                setattr(row, k, v)
    judge_fidelity(row, cfg.min_agreement, cfg.max_abs_diff)
    if row.status == OK and ref_logits is None and not row.reference:
        row.reason = "no reference outputs: fidelity not measured"
    say(f"{row.spec.label}: {row.status} p50 {row.p50:.2f} ms, Dice {row.dice:.4f}"
        + (f", agreement {row.agreement:.4f}" if row.agreement is not None else "")
        + (f" ({row.reason})" if row.reason else ""))


def run_benchmark(cfg: BenchConfig, log: Callable[[str], None] | None = None) -> RunResult:
    """Run the whole matrix of ``cfg``; returns the run (not yet stored or reported).

    Stages: plan (once), then per row convert -> measure -> score, each in its own process by default.

    Examples:
        >>> run = run_benchmark(BenchConfig("ultralightunet-s", targets=["onnx"], precisions=["fp32"]))
        >>> [(r.target, r.status, r.p50) for r in run.rows]
    """
    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    plan = _plan(cfg, say)
    stage = StageRunner(plan.work, cfg.isolate, cfg.row_timeout, cfg.threads, cfg.busy_wait)
    rows: list[Row] = []
    ref_logits: np.ndarray | None = None
    for i, spec in enumerate(plan.specs, 1):
        row = Row.from_spec(spec, threads=cfg.threads, isolated=cfg.isolate)
        rows.append(row)
        step = f"[{i}/{len(plan.specs)}]"

        def tell(m: str, step: str = step) -> None:
            say(f"{step} {m}")

        why = _check_available(spec)
        if why:
            row.fail(UNAVAILABLE, why)
            tell(f"{spec.label}: unavailable ({why})")
            continue
        artifact = _convert(plan, spec, row, stage, tell)
        if artifact is None:
            continue
        row.artifact = str(artifact)
        logits = _measure(plan, spec, row, artifact, stage, i, tell)
        if logits is None:
            continue
        _score(plan, row, logits, ref_logits, tell)
        if spec.is_reference:
            ref_logits = logits
    finalize_rows(rows)
    if not cfg.keep_work:
        plan.inputs.unlink(missing_ok=True)
    from edgeseg.benchmarks.environment import compute_floor_ms

    config = asdict(cfg)
    config.update(img_size=plan.img, weights=plan.weights_label, weights_path=str(plan.weights),
                  weights_sha256=plan.weights_sha, cases=len(plan.cases), case_ids=plan.cases.ids,
                  macs=plan.macs, batch=1, compute_floor_ms=compute_floor_ms(plan.macs, plan.env.get("peak_gflops_fp32")))
    return RunResult(run_id=plan.run_id, created=_now(), config=config, environment=plan.env, rows=rows)


def _fill(row: Row, res: dict[str, Any], logits: np.ndarray, masks: np.ndarray, num_classes: int) -> None:
    """Copy a measure result into the row and score its outputs against the labels."""
    samples = [float(s) for s in res["samples_ms"]]
    row.samples_ms = samples
    row.latency_ms = stats.latency_stats(samples)
    row.fps = stats.fps(row.latency_ms["mean"])
    row.load_time_ms = res.get("load_time_ms")
    row.first_inference_ms = res.get("first_inference_ms")
    row.peak_rss_mb = res.get("peak_rss_mb")
    row.rss_before_load_mb = res.get("rss_before_load_mb")
    row.runtime_info = res.get("runtime_info") or {}
    row.warning = res.get("int8_warning") or ""
    act = "sigmoid" if num_classes == 1 else "softmax"
    pred = stats.masks_from_logits(logits, act)
    acc = stats.accuracy(pred, masks)
    row.dice, row.iou, row.recall, row.seg_precision = acc["dice"], acc["iou"], acc["recall"], acc["seg_precision"]
    row.dice_per_case = acc["dice_per_case"]
    if row.reference:
        row.agreement, row.agreement_min, row.max_abs_diff, row.mean_abs_diff = 1.0, 1.0, 0.0, 0.0

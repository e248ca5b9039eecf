"""The flat conversion API used by ``edgeseg convert`` and the benchmarks: :func:`convert_model`.

One call converts one model to one or more targets x precisions. For each artifact it: converts into a
staging folder inside ``out_dir``; writes a manifest there; verifies the artifact through ``runtimes``
against the FP32 torch model on held-back images; moves the artifact's files into place (main file last)
and writes the final manifest last of all. An artifact already there keeps its manifest until the new one
is complete: a failed or refused re-conversion leaves it as it was, and one killed while moving files leaves
files whose hashes the old manifest does not match, which ``runtimes.load`` refuses (never runs silently).

int8 artifacts have an accuracy budget (``QuantOptions.max_dice_drop``, 0.01 by default where the target can
search): :mod:`edgeseg.converters.budget` keeps the most sensitive layers in float until the Dice drop on
half of the held-back images is within it, confirms on the other half, and refuses the artifact (exit 1 in
the CLI, nothing moved into place) when no choice meets it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from edgeseg.converters.base import (
    PRECISIONS,
    Artifact,
    ConvertConfig,
    Converter,
    get_converter,
    get_target,
    list_targets,
)
from edgeseg.converters.calibration import (
    CalibrationSet,
    check_source,
    load_images,
    volume_phantoms,
)
from edgeseg.converters.options import ExportOptions, QuantOptions, VerifyOptions
from edgeseg.converters.provenance import build_manifest, preprocessing_for, weights_record
from edgeseg.converters.verify import Parity, verify_artifact
from edgeseg.runtimes.manifest import Manifest, manifest_path


@dataclass
class ConvertResult:
    """One converted artifact.

    Attributes:
        artifact: what the converter wrote (paths point at the final location).
        manifest_path: the JSON sidecar.
        manifest: its content.
        parity: the verification, or None with ``verify=False``.
    """

    artifact: Artifact
    manifest_path: Path
    manifest: Manifest
    parity: Parity | None
    refused: str | None = None  # why the artifact was not kept (it missed its accuracy budget)
    selection: dict[str, Any] | None = None  # --precision auto: the timings and the choice for its target

    @property
    def counts(self) -> bool:
        """Whether its failure fails the command: with --precision auto, only the chosen artifact's does."""
        return self.selection is None or self.selection.get("chosen") in (None, self.artifact.precision)

    @property
    def passed(self) -> bool:
        return self.refused is None and (self.parity is None or self.parity.passed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.artifact.path),
            "manifest": str(self.manifest_path),
            "target": self.artifact.target,
            "precision": self.artifact.precision,
            "scheme": self.manifest.quantization.get("scheme"),
            "layout": self.manifest.input.layout,
            "size_bytes": self.artifact.size_bytes,
            "convert_time_s": round(self.artifact.convert_time_s, 3),
            "parity": self.manifest.parity,
            "budget": self.manifest.quantization.get("budget"),
            "refused": self.refused,
            "selection": self.selection,
        }


def _expand(value: str | Sequence[str], valid: Sequence[str], kind: str) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        if item == "all":
            out.extend(v for v in valid if v not in out)
        elif item in valid:
            if item not in out:
                out.append(item)
        else:
            import difflib

            close = difflib.get_close_matches(item, list(valid), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown {kind} {item!r}.{hint} Valid: {', '.join([*valid, 'all'])}")
    return out


def _check_backends(targets: list[str], verify: bool) -> None:
    from edgeseg.runtimes import get_runtime

    from edgeseg.common.deps import MissingDependencyError

    for t in targets:
        get_converter(t).check_available()
        spec = get_target(t)
        if verify and not get_runtime(spec.runtime).is_available():
            raise MissingDependencyError(
                f"verifying {t} artifacts needs the {spec.runtime} runtime, which is not installed: "
                f"pip install 'edgeseg[{get_runtime(spec.runtime).extra}]' -c constraints.txt "
                "(or --no-verify)"
            )


def _sizes(img_size: int | Sequence[int] | None, cfg: Any) -> tuple[int, ...]:
    if img_size is None:
        return tuple(cfg.input_size)
    size = (int(img_size),) * len(cfg.input_size) if isinstance(img_size, int) else tuple(map(int, img_size))
    if len(size) != len(cfg.input_size) or any(s <= 0 or s % cfg.divisible_by for s in size):
        raise ValueError(
            f"--img-size must be a positive multiple of {cfg.divisible_by} for {cfg.name} "
            f"({len(cfg.input_size)}D input), got {list(size)}"
        )
    return size


def _file_name(stem: str, cfg: ConvertConfig) -> str:
    parts = [stem, cfg.tag]
    if cfg.layout != cfg.spec.default_layout:
        parts.append(cfg.layout or "")
    if cfg.batch != 1:
        parts.append("bdyn" if cfg.batch is None else f"b{cfg.batch}")
    return "_".join(parts) + cfg.spec.suffix


def convert_model(
    model: Any,
    target: str | Sequence[str] = "onnx",
    precision: str | Sequence[str] = "fp32",
    *,
    weights: str | Path | None = None,
    export: ExportOptions | None = None,
    quant: QuantOptions | None = None,
    verify: VerifyOptions | None = None,
    out_dir: str | Path = "exports",
    model_kwargs: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[ConvertResult]:
    """Convert a registered model to each target x precision, verify each artifact, write its manifest.

    Args:
        model: registry name (or an ``nn.Module`` built by ``create_model``).
        target: "onnx", "openvino", "tflite", "all", or a list.
        precision: "fp32", "fp16", "int8", "all", "auto" (fp32 and int8, both timed here: the faster one
            that passed is chosen, see :mod:`edgeseg.converters.auto`), or a list.
        weights: checkpoint; default the shipped weights, else random weights (with a warning).
        export: input size, batch, layout, ONNX exporter and file-name stem (:class:`ExportOptions`).
        quant: int8 calibration, scheme, tool and target kernels (:class:`QuantOptions`); static int8 needs
            ``quant.calib``, which also supplies the held-back verification images.
        verify: the parity check against the FP32 torch model (:class:`VerifyOptions`); default on, with
            synthetic verification images unless ``quant.calib`` gives real ones.
        out_dir: output folder.
        model_kwargs: builder options (e.g. ``num_classes``).
        log: progress callback (one line per step).

    Returns:
        One :class:`ConvertResult` per artifact (check ``.passed``).

    Examples:
        >>> from edgeseg.converters import QuantOptions, convert_model
        >>> [r] = convert_model("ultralightunet-s", "tflite")
        >>> r.artifact.path, r.parity.figures["mask_agreement"]
        >>> convert_model("ultralightunet-s", "all", "all", quant=QuantOptions(calib="data/kvasir-seg"))
    """
    export = export or ExportOptions()
    quant = quant or QuantOptions()
    verify = verify or VerifyOptions()
    say = log or (lambda _msg: None)
    from edgeseg.common.io import check_writable_dir, clean_stale
    from edgeseg.models import get_model_cfg

    # every check that needs no model weights and no data comes first
    auto = precision == "auto" or (not isinstance(precision, str) and "auto" in precision)
    if auto:  # fp32 and int8, timed here after converting: the faster one that passed is chosen
        if quant.static and quant.calib is None:
            raise ValueError("--precision auto compares fp32 with int8, which needs calibration data: pass --calib "
                             "IMAGE_FOLDER (or synthetic)")
        precision = ["fp32", "int8"]
    targets = _expand(target, list_targets(), "target")
    precisions = _expand(precision, PRECISIONS, "precision")
    needs_calib = "int8" in precisions and quant.static
    calib = quant.calib
    if needs_calib and calib is None:
        raise ValueError(
            "int8 needs calibration data: pass --calib IMAGE_FOLDER or --calib synthetic "
            "(or --int8-scheme dynamic, which needs none)"
        )
    if calib is not None and (needs_calib or verify.enabled):
        check_source(calib)
    kwargs = dict(model_kwargs or {})
    mcfg = get_model_cfg(model) if isinstance(model, str) else getattr(model, "model_cfg", None)
    if mcfg is None:
        raise ValueError(
            "an nn.Module passed to convert_model needs a .model_cfg (build it with create_model)"
        )
    if isinstance(model, str):  # the one weights rule; a bad file fails here, before any work
        from edgeseg.weights import resolve

        resolved = resolve(model, weights, model_kwargs=kwargs)
        net, ckpt, wpath = resolved.module, resolved.checkpoint or None, resolved.path
        wrec = weights_record(wpath, resolved.source, ckpt)
        kwargs = dict(resolved.model_kwargs)  # the checkpoint's builder options (skip_attention, ...) too
    else:  # an nn.Module built by the caller
        net, ckpt, wpath = model.eval(), None, None
        wrec = {"source": "module", "sha256": None}
    if export.tta:  # test-time augmentation in the graph: the wrapped model is exported and verified
        from edgeseg.layers.tta import TestTimeAugmentation

        net = TestTimeAugmentation(net, export.tta).eval()
    if quant.keep_float:  # layer names are module paths of this model: a typo must not pass silently
        import difflib

        names = {n for n, _ in net.named_modules() if n}
        for layer in quant.keep_float:
            if layer not in names:
                close = difflib.get_close_matches(layer, sorted(names), n=3)
                raise ValueError(
                    f"--keep-float: {mcfg.name} has no layer {layer!r}"
                    + (f" (did you mean {', '.join(close)}?)" if close else "")
                    + "; `edgeseg convert ... --explain` lists the layers"
                )
    record = (ckpt or {}).get("preprocessing") or {}
    trained = record.get("size") or record.get("patch_size")  # a 3D checkpoint records its patch size
    # default size: the one the weights were trained at, else the model's
    size = _sizes(export.img_size if export.img_size is not None else (tuple(trained) if trained else None), mcfg)
    asked = [target] if isinstance(target, str) else list(target)
    if "all" in asked:  # "all" means every installed target that can take this model
        from edgeseg.common.deps import MissingDependencyError

        keep = []
        for t in targets:
            if len(size) not in get_target(t).spatial_dims:
                warnings.warn(
                    f"skipping {t}: it cannot convert {len(size)}D models ({get_target(t).notes})", stacklevel=2
                )
                continue
            try:
                get_converter(t).check_available()
            except MissingDependencyError as exc:
                warnings.warn(f"skipping {t}: {exc}", stacklevel=2)
                continue
            keep.append(t)
        targets = keep
    in_ch = int(kwargs.get("in_channels", getattr(model, "in_channels", mcfg.in_channels)))
    base = dict(
        input_size=size,
        in_channels=in_ch,
        batch=export.batch,
        layout=export.layout,
        int8_scheme=quant.scheme,
        calib_method=quant.calib_method,
        quantizer=quant.quantizer,
        int8_isa=quant.isa,
        opset=export.opset,
        exporter=export.exporter,
        simplify=export.simplify,
    )
    # "all" means what each target can make: a precision a target does not offer is skipped, not an error
    any_precision = precision == "all" or (not isinstance(precision, str) and "all" in precision)
    jobs: dict[str, list[str]] = {}
    for t in targets:
        offered = get_target(t).precisions
        jobs[t] = [p for p in precisions if p in offered or not (any_precision or "all" in asked)]
        for p in set(precisions) - set(jobs[t]):
            warnings.warn(f"skipping {t} {p}: {t} converts {', '.join(offered)} only", stacklevel=2)
        for p in jobs[t]:
            static = p == "int8" and quant.static
            ConvertConfig(
                target=t,
                precision=p,
                **base,
                calibration=_placeholder(in_ch, size, False) if static else None,
                max_dice_drop=quant.budget_for(get_target(t), p),
                keep_float=quant.keep_float if p == "int8" and quant.static else (),
            )
    out = check_writable_dir(out_dir)
    clean_stale(out)  # staging folders and temporaries an interrupted conversion left behind
    _check_backends(targets, verify.enabled)

    classes = int(getattr(net, "num_classes", mcfg.num_classes))
    in_ch = base["in_channels"] = int(getattr(net, "in_channels", in_ch))  # a checkpoint may set it
    pre = preprocessing_for(mcfg, size, ckpt, in_ch)
    calibration = load_images(calib, quant.calib_size, pre, "calibration", in_ch) if needs_calib else None
    if calibration is not None:
        say(f"calibration: {len(calibration)} images from {calibration.provenance['source']}")
    if wrec.get("source") == "random" and quant.max_dice_drop is None and quant.budget:
        # a Dice against ground truth means nothing for untrained weights: no default budget for them
        quant = replace(quant, budget=False)
    budgeted = any(quant.budget_for(get_target(t), p) is not None for t in targets for p in jobs[t])
    # a budget splits the held-back images into a search and a confirmation part: at least 16 each
    n_held = max(verify.images, 2 * MIN_BUDGET_IMAGES) if budgeted else verify.images
    held_back = _verification_set(calib, n_held, pre, in_ch, size) if verify.enabled else None
    sample_np = held_back.images[:1] if held_back is not None else np.zeros((1, in_ch, *size), np.float32)
    import torch

    model_cfg = {**mcfg.to_dict(), "model_kwargs": kwargs, "input_size": list(size)}
    if export.tta:
        model_cfg["tta"] = net.spec.to_dict()
    from edgeseg.converters.rewrites import apply as apply_rewrites

    check = sample_np if held_back is not None else np.random.default_rng(0).normal(size=sample_np.shape)
    export_net, rewrites = apply_rewrites(net, torch.from_numpy(check.astype(np.float32)), export.rewrites)
    for rec in rewrites:
        if rec.get("applied"):
            say(f"rewrite {rec['name']}: {rec['count']} place(s), max|d| {rec['max_abs_diff']:.2g} vs the model")
        elif "max_abs_diff" in rec:
            warnings.warn(f"rewrite {rec['name']} not kept: {rec['reason']}", stacklevel=2)
    ctx = _Context(net=net, out=out, model_name=mcfg.name, model_cfg=model_cfg, pre=pre, classes=classes,
                   wrec=wrec, held_back=held_back, threads=verify.threads, say=say, export_net=export_net,
                   rewrites=rewrites)
    results = []
    for t in targets:
        converter = get_converter(t)  # one instance per target: it may reuse work across precisions
        for p in jobs[t]:
            cfg = ConvertConfig(
                target=t,
                precision=p,
                calibration=calibration if p == "int8" else None,
                max_dice_drop=quant.budget_for(get_target(t), p),
                keep_float=quant.keep_float if p == "int8" and quant.static else (),
                **base,
            )
            sample = torch.from_numpy(np.repeat(sample_np, int(export.batch or 1), axis=0))
            if not results and wpath is not None:  # once, after the first config validated
                say(f"weights: {wrec['source']} ({wpath.name})")
            say(f"converting {mcfg.name} -> {t} {cfg.tag} ({cfg.layout}, batch {export.batch or 'dynamic'}) ...")
            res = _convert_one(ctx, converter, sample, cfg, _file_name(export.name or mcfg.name, cfg))
            say(
                f"  {res.artifact.path} ({res.artifact.size_bytes / 1024:.1f} KiB, "
                f"{res.artifact.convert_time_s:.1f} s)" + (f": {res.parity.summary()}" if res.parity else "")
            )
            results.append(res)
    if auto:
        from edgeseg.converters.auto import select

        select(results, sample_np, verify.threads, log=say)
    return results


def _placeholder(in_ch: int, size: tuple[int, ...], labels: bool) -> CalibrationSet:
    """A one-image stand-in used only to validate a config before the real data is loaded."""
    return CalibrationSet(
        images=np.zeros((1, in_ch, *size), np.float32),
        labels=np.zeros((1, *size), np.uint8) if labels else None,
    )


def _verification_set(
    calib: str | Path | None, n: int, pre: Any, in_ch: int, size: tuple[int, ...]
) -> CalibrationSet:
    if len(size) == 3:  # phantoms with lesions, normalised as the manifest says (not noise: no foreground)
        return volume_phantoms(n, pre, in_ch)
    return load_images(calib if calib is not None else "synthetic", n, pre, "verification", in_ch)


def verified_on() -> dict[str, Any]:
    """The CPU a verification ran on, as int8 results depend on it (runtimes warn on another int8 path)."""
    from edgeseg.runtimes.sysinfo import cpu_info, int8_path, isa_summary

    info = cpu_info()
    return {"model": info["model"], "isa": isa_summary(info["isa"]), "int8_path": int8_path(info["isa"])}


@dataclass
class _Context:
    """What every artifact of one ``convert_model`` call shares."""

    net: Any
    out: Path
    model_name: str
    model_cfg: dict[str, Any]
    pre: Any
    classes: int
    wrec: dict[str, Any]
    held_back: CalibrationSet | None
    threads: int | None
    say: Callable[[str], None]
    export_net: Any = None  # the copy that is exported (deploy-time rewrites applied); None: net
    rewrites: list[dict[str, Any]] | None = None
    reference: np.ndarray | None = None  # FP32 logits of the held-back images, computed once

    def reference_logits(self, manifest: Manifest) -> np.ndarray:
        if self.reference is None:
            from edgeseg.runtimes.torch_runtime import TorchRuntime

            assert self.held_back is not None
            ref = TorchRuntime.from_module(self.net, manifest, threads=self.threads)
            try:
                self.reference = ref.infer(np.ascontiguousarray(self.held_back.images, dtype=np.float32))
            finally:
                ref.close()
        return self.reference


def _convert_one(ctx: _Context, converter: Converter, sample: Any, cfg: ConvertConfig, file_name: str) -> ConvertResult:
    """Convert (within the accuracy budget when there is one), write the manifest, verify, move into place.
    The artifact already in ``out`` (and its manifest) stays untouched until the new one is complete."""
    out = ctx.out
    final = out / file_name
    final_manifest = manifest_path(final)
    staging = Path(tempfile.mkdtemp(prefix=f".{file_name}.staging-", dir=out))
    try:

        def make(keep: Sequence[str]) -> tuple[Artifact, Manifest]:
            # the layers asked for (--keep-float) plus those the budget's search adds
            run_cfg = replace(cfg, keep_float=tuple(dict.fromkeys([*cfg.keep_float, *keep]))) if keep else cfg
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                art = converter.convert(ctx.export_net or ctx.net, sample, run_cfg, staging / file_name)
            if ctx.rewrites:
                art.extra = {**art.extra, "rewrites": ctx.rewrites}
            manifest = build_manifest(art, run_cfg, ctx.model_name, ctx.model_cfg, ctx.pre, ctx.classes, ctx.wrec)
            manifest.save(manifest_path(art.path))
            made[:] = [art, manifest]
            return art, manifest

        made: list[Any] = []
        budget = None
        if cfg.max_dice_drop is not None and ctx.held_back is not None:
            from edgeseg.converters.budget import BudgetNotMetError

            t0 = time.perf_counter()
            try:
                (art, manifest), budget = _fit_budget(ctx, make, cfg)
            except BudgetNotMetError as exc:  # refused: nothing is moved into place, an old artifact stays
                ctx.say(f"  {exc.result.summary()}")
                art, manifest = made
                art.path, art.files, art.convert_time_s = final, [], time.perf_counter() - t0
                manifest.quantization["budget"] = exc.result.to_dict()
                parity = Parity(figures={}, tolerance={"max_dice_drop": float(cfg.max_dice_drop)},
                                failures=[str(exc)])
                manifest.parity = {**parity.to_dict(), "refused": True}
                return ConvertResult(artifact=art, manifest_path=final_manifest, manifest=manifest, parity=parity,
                                     refused=str(exc))
            art.convert_time_s = time.perf_counter() - t0
            manifest.quantization["budget"] = budget.to_dict()
            ctx.say(f"  {budget.summary()}")
        else:
            art, manifest = make(())
        parity = None
        if ctx.held_back is not None:
            held = ctx.held_back
            parity = verify_artifact(
                art.path, ctx.net, held.images, cfg.precision, held.labels, ctx.threads,
                reference=ctx.reference_logits(manifest),
            )
            manifest.parity = {**parity.to_dict(), "inputs": held.provenance, "cpu": verified_on()}
            if budget is not None and not budget.confirmed:
                parity.failures.append(
                    f"the accuracy budget held on the search images but not on the confirmation images "
                    f"({budget.metric} drop {budget.confirm['drop'] if budget.confirm else float('nan'):+.4f} > "
                    f"{budget.max_drop})"
                )
                manifest.parity = {**manifest.parity, "passed": False, "failures": list(parity.failures)}
        else:
            manifest.parity = {"verified": False, "reason": "conversion run with --no-verify"}
        # the old artifact is replaced file by file, then its manifest; until the manifest is replaced the old
        # manifest's hashes no longer match and runtimes refuse the mixed files (they never run silently)
        moved = []
        for f in art.files:  # the main file is last in art.files
            dest = out / Path(f).name
            os.replace(f, dest)
            moved.append(dest)
        art.files = moved
        art.path = out / art.path.name
        manifest.save(final_manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ConvertResult(artifact=art, manifest_path=final_manifest, manifest=manifest, parity=parity)


MIN_BUDGET_IMAGES = 16  # per part (search, confirmation) of the held-back images


def _fit_budget(ctx: _Context, make: Callable[[Sequence[str]], Any], cfg: ConvertConfig) -> tuple[Any, Any]:
    from edgeseg.converters.budget import fit
    from edgeseg.converters.layerwise import explain

    from edgeseg import runtimes

    held = ctx.held_back
    assert held is not None and cfg.max_dice_drop is not None

    def run(handle: tuple[Artifact, Manifest], images: np.ndarray) -> np.ndarray:
        with runtimes.load(handle[0].path, threads=ctx.threads) as rt:
            return rt.infer(np.ascontiguousarray(images, dtype=np.float32))

    def rank(handle: tuple[Artifact, Manifest]) -> list[str]:
        # the whole search half: a layer's damage can depend on the image (OpenVINO's CA1 read 16 dB on one
        # set of 4 Kvasir images and 37 dB on another), and the ranking is cheap beside a conversion
        report = explain(handle[0].path, ctx.net, held.images[: max(1, len(held) // 2)], threads=ctx.threads)
        return report.ranked()

    first = make(())
    reference = ctx.reference_logits(first[1])
    built = {"first": first}

    def make_once(keep: Sequence[str]) -> Any:
        if not keep and "first" in built:  # the first trial reuses the conversion made for the reference
            return built.pop("first")
        return make(keep)

    return fit(make_once, run, rank, held.images, reference, held.labels, first[1].postprocessing,
               cfg.max_dice_drop, log=ctx.say)


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

import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from edgeseg.converters.base import (
    PRECISIONS,
    ConvertConfig,
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
from edgeseg.converters.parallel import TargetJob, Workers, default_jobs, run_job, run_jobs
from edgeseg.converters.provenance import preprocessing_for, weights_record
from edgeseg.converters.staging import MIN_BUDGET_IMAGES, Context, ConvertResult


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
    jobs: int | None = 1,
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
        jobs: worker processes converting targets side by side (:mod:`edgeseg.converters.parallel`); None:
            one per target up to the cores (what ``edgeseg convert`` does); default 1: in this process, one
            target after another. The workers are spawned, which re-imports the caller's main module: a script
            that passes ``jobs`` other than 1 needs ``if __name__ == "__main__":``.

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
    todo: dict[str, list[str]] = {}
    for t in targets:
        offered = get_target(t).precisions
        todo[t] = [p for p in precisions if p in offered or not (any_precision or "all" in asked)]
        for p in set(precisions) - set(todo[t]):
            warnings.warn(f"skipping {t} {p}: {t} converts {', '.join(offered)} only", stacklevel=2)
        for p in todo[t]:
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

    workers = default_jobs(len(targets), net) if jobs is None else max(1, min(int(jobs), len(targets)))
    # started now, so that the workers' imports (torch, the converters) overlap the loading of the data below
    pool = Workers(workers) if workers > 1 else None
    try:
        classes = int(getattr(net, "num_classes", mcfg.num_classes))
        in_ch = base["in_channels"] = int(getattr(net, "in_channels", in_ch))  # a checkpoint may set it
        pre = preprocessing_for(mcfg, size, ckpt, in_ch)
        calibration = load_images(calib, quant.calib_size, pre, "calibration", in_ch) if needs_calib else None
        if calibration is not None:
            say(f"calibration: {len(calibration)} images from {calibration.provenance['source']}")
        if wrec.get("source") == "random" and quant.max_dice_drop is None and quant.budget:
            # a Dice against ground truth means nothing for untrained weights: no default budget for them
            quant = replace(quant, budget=False)
        budgeted = any(quant.budget_for(get_target(t), p) is not None for t in targets for p in todo[t])
        # a budget splits the held-back images into a search and a confirmation part: at least 16 each
        n_held = max(verify.images, 2 * MIN_BUDGET_IMAGES) if budgeted else verify.images
        held_back = _verification_set(calib, n_held, pre, in_ch, size) if verify.enabled else None
        sample_np = held_back.images[:1] if held_back is not None else np.zeros((1, in_ch, *size), np.float32)
        import torch

        model_cfg = {**mcfg.to_dict(), "model_kwargs": kwargs, "input_size": list(size)}
        if export.tta:
            model_cfg["tta"] = net.spec.to_dict()
        from edgeseg.converters.rewrites import apply as apply_rewrites
        from edgeseg.converters.rewrites import defaults_for

        check = torch.from_numpy((sample_np if held_back is not None else
                                  np.random.default_rng(0).normal(size=sample_np.shape)).astype(np.float32))
        rewritten: dict[tuple[str, ...], tuple[Any, list[dict[str, Any]]]] = {}  # one copy per distinct set

        def rewritten_for(target: str) -> tuple[Any, list[dict[str, Any]]]:
            names = tuple(export.rewrites) if export.rewrites is not None else defaults_for(target)
            if names not in rewritten:
                rewritten[names] = apply_rewrites(net, check, names)
                for rec in rewritten[names][1]:
                    if rec.get("applied"):
                        say(f"rewrite {rec['name']}: {rec['count']} place(s), max|d| {rec['max_abs_diff']:.2g} "
                            "vs the model")
                    elif "max_abs_diff" in rec:
                        warnings.warn(f"rewrite {rec['name']} not kept: {rec['reason']}", stacklevel=2)
            return rewritten[names]

        ctx = Context(net=net, out=out, model_name=mcfg.name, model_cfg=model_cfg, pre=pre, classes=classes,
                      wrec=wrec, held_back=held_back, threads=verify.threads, say=say)
        plan = []
        for t in targets:
            export_net, rewrites = rewritten_for(t)
            configs = []
            for p in todo[t]:
                cfg = ConvertConfig(
                    target=t,
                    precision=p,
                    calibration=calibration if p == "int8" else None,
                    max_dice_drop=quant.budget_for(get_target(t), p),
                    keep_float=quant.keep_float if p == "int8" and quant.static else (),
                    **base,
                )
                configs.append((cfg, _file_name(export.name or mcfg.name, cfg)))
            plan.append(TargetJob(target=t, export_net=export_net, rewrites=rewrites, configs=configs))
        if wpath is not None and plan:
            say(f"weights: {wrec['source']} ({wpath.name})")
        if pool is not None:
            results = run_jobs(ctx, plan, sample_np, export.batch, pool, say)
        else:
            results = [r for job in plan for r in run_job(ctx, job, sample_np, export.batch)]
        if auto:
            from edgeseg.converters.auto import select

            select(results, sample_np, verify.threads, log=say)
        return results
    finally:
        if pool is not None:
            pool.close()


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

"""Convert a model to ONNX / OpenVINO IR / TFLite (fp32, fp16, int8), verified against the FP32 model.

Examples:
  edgeseg convert --model ultralightunet-s --target tflite
  edgeseg convert --model ultralightunet-s --target all --precision all --calib data/kvasir-seg-256
  edgeseg convert --model ultralightunet-t --target onnx --precision int8 --calib synthetic --calib-size 200
  edgeseg convert --model ultralightunet-s --target openvino --precision int8 --calib DIR --max-dice-drop 0.01

Each artifact gets a JSON manifest beside it (<artifact>.json: input/output, pre-processing, precision,
quantization and calibration provenance, parity figures, versions, sha256). Every artifact is run through
`runtimes` on held-back images and compared with the FP32 torch model; failing parity exits with code 1
(unless --no-verify). --json prints one JSON document on stdout and everything else on stderr.

int8 has an accuracy budget (--max-dice-drop, default 0.01 on onnx, openvino and tflite): the layers that do
the most damage stay in float until the Dice drop on half of the held-back images is within it, the other half
confirms it, and an artifact that cannot meet it is refused (exit 1, an older artifact is kept). --explain
writes every layer's error against the FP32 model (<artifact>.layers.json); --keep-float names layers by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator

from edgeseg.cli._format import add_format_argument, wants_json
from edgeseg.common.args import add_model_arguments, add_runtime_arguments, positive_int
from edgeseg.converters.calibration import DEFAULT_CALIB_SIZE


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p, options=("model", "weights"), required=("model",), title=None,
                        helps={"weights": "checkpoint (default: the shipped weights, else random weights + warning)"})
    p.add_argument("--target", required=True, help="onnx, openvino, tflite or all (comma-separated list ok)")
    p.add_argument(
        "--precision", default="fp32",
        help="fp32, fp16, int8, all (comma-separated ok; default fp32), or auto: fp32 and int8, timed on this "
        "machine, the faster one that passed is chosen"
    )
    p.add_argument(
        "--calib",
        help="int8 calibration data: an image folder or 'synthetic' (also supplies the "
        "held-back verification images; default verification: synthetic)",
    )
    p.add_argument("--calib-size", type=int, default=DEFAULT_CALIB_SIZE,
                   help=f"calibration images (default {DEFAULT_CALIB_SIZE})")
    p.add_argument("--verify-size", type=int, default=16, help="held-back verification images (default 16)")
    p.add_argument("--img-size", type=positive_int, help="square input size (default: the model's)")
    p.add_argument("--batch", default="1", help="fixed batch size or 'dynamic' (ONNX/OpenVINO; default 1)")
    p.add_argument("--layout", help="nchw or nhwc I/O (default: nhwc for tflite, nchw otherwise)")
    p.add_argument("--out", default="exports", help="output folder (default exports/)")
    p.add_argument("--no-verify", action="store_true", help="skip the parity check against the FP32 model")
    p.add_argument("--no-rewrites", action="store_true",
                   help="export the model as it is (default: exact deploy-time rewrites, each verified to "
                   "max|d| < 1e-5, e.g. the MKIR channel shuffle folded into the next pointwise conv)")
    add_format_argument(p)
    q = p.add_argument_group("quantization")
    q.add_argument("--int8-scheme", default="static", help="static (calibrated, default) or dynamic")
    q.add_argument(
        "--int8-isa",
        default="auto",
        help="int8 kernels to quantize for: auto (this CPU, default), portable (no int16 saturation on x86 "
        "CPUs without VNNI) or vnni (full 8-bit range: CPUs with VNNI/AMX or Arm dot products)",
    )
    q.add_argument("--calib-method", help="ONNX: minmax (default), entropy or percentile")
    q.add_argument("--quantizer", help="TFLite int8: pt2e (default for static) or aeq (ai-edge-quantizer)")
    q.add_argument(
        "--max-dice-drop",
        type=float,
        help="int8 accuracy budget: the largest Dice drop against the FP32 model on the held-back images "
        "(default 0.01 on onnx, openvino and tflite); the most sensitive layers stay in float until it holds, "
        "and an artifact that cannot meet it is refused (exit 1)",
    )
    q.add_argument("--no-budget", action="store_true", help="keep int8 whatever its Dice drop (parity still runs)")
    q.add_argument(
        "--keep-float",
        default="",
        help="comma-separated layers (module paths, as --explain names them) that int8 leaves in float",
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="compare every layer of each int8/fp16 artifact with the FP32 model (relative error, SQNR, CKA) "
        "and write <artifact>.layers.json",
    )
    o = p.add_argument_group("ONNX")
    o.add_argument("--exporter", default="torchscript", help="torchscript (default) or dynamo")
    o.add_argument("--opset", type=int, default=17, help="opset (default 17)")
    o.add_argument("--no-simplify", action="store_true", help="keep the exported graph as it is")
    p.add_argument("--name", help="file-name stem of the artifacts (default: the model name)")
    p.add_argument("--tta", metavar="MODE", help="carry test-time augmentation in the graph: hflip (2 passes) or "
                   "flips (4); +scales adds 0.75x/1.25x views (see `edgeseg evaluate --tta`)")
    add_runtime_arguments(p, options=("threads",), threads_default="the backend's, for verification", title=None)
    p.add_argument("--jobs", type=positive_int, default=None,
                   help="targets converted side by side in worker processes (default: one per target, up to the "
                        "cores; 1: one after another in this process)")
    p.add_argument("--tune", action="store_true",
                   help="after conversion, search this machine's fastest runtime settings for each verified "
                        "artifact and record them in its manifest (as `edgeseg tune`; run that on the device)")


def _batch(value: str) -> int | None:
    if value.lower() == "dynamic":
        return None
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"--batch must be a positive integer or 'dynamic', got {value!r}") from None
    if n < 1:
        raise ValueError(f"--batch must be a positive integer or 'dynamic', got {value!r}")
    return n


def _list(value: str) -> list[str]:
    return [v.strip().lower() for v in value.split(",") if v.strip()]


@contextlib.contextmanager
def _stdout_to_stderr(enabled: bool) -> Iterator[None]:
    """Send everything written to stdout (also by C++ libraries and progress bars) to stderr."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _human(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def _float_layers(r) -> str:
    """The int8 budget's outcome for the table: layers kept in float (0 = all int8), or "-" without one."""
    budget = r.manifest.quantization.get("budget")
    if not budget:
        return "-"
    if budget.get("keep_float") is None:
        return "none met"
    return str(len(r.manifest.quantization.get("keep_float") or []))  # asked for (--keep-float) + found


def _explain(results, args: argparse.Namespace, log) -> None:
    """--explain: the layer-wise comparison of each quantized artifact, printed and written beside it."""
    import json

    from edgeseg.common.io import atomic_write_text
    from edgeseg.converters.calibration import load_images
    from edgeseg.converters.layerwise import explain
    from edgeseg.weights import resolve

    net = resolve(args.model, args.weights).module.eval()
    for r in results:
        if r.refused or r.artifact.precision == "fp32":
            continue
        pre = r.manifest.preprocessing
        images = load_images(args.calib or "synthetic", 8, pre, "verification").images
        try:
            report = explain(r.artifact.path, net, images, threads=args.threads)
        except NotImplementedError as exc:
            log(f"explain {r.artifact.path.name}: {exc}")
            continue
        path = r.artifact.path.with_name(r.artifact.path.name + ".layers.json")
        atomic_write_text(path, json.dumps(report.to_dict(), indent=1))
        log(f"\nlayers of {r.artifact.path.name} ({report.n_images} images; {path.name}):")
        log(report.table())
        log(f"first layer under {report.to_dict()['damage_db']:g} dB: {report.first_damaged or 'none'}; "
            f"largest single-layer drop: {report.worst_step}")


def _next_steps(first, args: argparse.Namespace) -> list[str]:
    """The "next:" hint: only commands that take this artifact. predict, bench and demo take 2D images; a 3D
    artifact is scored on whole volumes by ``evaluate --artifact`` (sliding windows of its patch size), and
    runs from Python one patch per call."""
    path = first.artifact.path
    if len(first.manifest.input.nchw_shape()) == 5:
        size = "x".join(str(s) for s in first.manifest.preprocessing.size)
        return [
            f"next: edgeseg evaluate --artifact {path} --data MSD_FOLDER    (whole volumes, {size} windows)",
            f"      from Python: rt = runtimes.load('{path}'); x = edgeseg.runtimes.processing."
            "preprocess_volume(volume, rt.manifest.preprocessing), one patch per rt.infer",
            "      (predict, bench and demo take 2D images)",
        ]
    weights = f" --weights {args.weights}" if args.weights else ""
    return [
        f"next: edgeseg predict --artifact {path} --input IMAGES --out preds/",
        f"      edgeseg demo --artifact {path}",
        f"      edgeseg bench --model {args.model}{weights} --targets {args.target} --precisions "
        f"{args.precision.replace('auto', 'fp32,int8')}",
    ]


def _tune(results: list, log) -> None:
    from edgeseg.runtimes.tuning import record, settings_label, tune

    for r in results:
        if not r.passed or not r.artifact.files:  # refused or failed: nothing on disk to tune
            continue
        t = tune(r.artifact.path)
        record(r.artifact.path, t)
        log(f"tuned {r.artifact.path.name} ({t.runtime}): {settings_label(t.settings)}; {t.p50_ms:.2f} ms against the default's "
            f"{t.default_p50_ms:.2f} ms ({t.speedup:.2f}x)")


def main(args: argparse.Namespace) -> int:
    import warnings

    from edgeseg.cli._format import print_json, table

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"edgeseg: warning: {str(message).strip().splitlines()[0]}", file=sys.stderr, flush=True)

    warnings.showwarning = one_line_warning
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    with _stdout_to_stderr(wants_json(args)):
        from edgeseg.converters import ExportOptions, QuantOptions, VerifyOptions, convert_model

        results = convert_model(
            args.model,
            _list(args.target),
            _list(args.precision),
            weights=args.weights,
            export=ExportOptions(
                img_size=args.img_size,
                batch=_batch(args.batch),
                layout=args.layout,
                exporter=args.exporter,
                opset=args.opset,
                simplify=not args.no_simplify,
                name=args.name,
                rewrites=() if args.no_rewrites else None,
                tta=args.tta,
            ),
            quant=QuantOptions(
                calib=args.calib,
                calib_size=args.calib_size,
                scheme=args.int8_scheme,
                calib_method=args.calib_method,
                quantizer=args.quantizer,
                isa=args.int8_isa,
                max_dice_drop=args.max_dice_drop,
                budget=not args.no_budget,
                keep_float=tuple(k.strip() for k in args.keep_float.split(",") if k.strip()),
            ),
            verify=VerifyOptions(enabled=not args.no_verify, images=args.verify_size, threads=args.threads),
            out_dir=args.out,
            log=log,
            jobs=args.jobs,
        )
        if args.explain:
            _explain(results, args, log)
        if args.tune:
            _tune(results, log)
    failed = [r for r in results if not r.passed and r.counts]
    if wants_json(args):
        print_json({"artifacts": [r.to_dict() for r in results], "passed": not failed})
    else:
        rows = []
        for r in results:
            par = r.manifest.parity
            rows.append(
                [
                    r.artifact.path,
                    r.artifact.target,
                    r.manifest.quantization.get("scheme", "-")
                    if r.artifact.precision == "int8"
                    else r.artifact.precision,
                    _human(r.artifact.size_bytes),
                    f"{r.artifact.convert_time_s:.1f}",
                    f"{par['max_abs_diff']:.2g}" if "max_abs_diff" in par else "-",
                    f"{par['mask_agreement']:.4f}" if "mask_agreement" in par else "-",
                    _float_layers(r),
                    "REFUSED" if r.refused else "ok" if r.parity is None or r.parity.passed else "FAIL",
                ]
            )
        print(
            table(
                rows,
                ["artifact", "target", "precision", "size", "time s", "max|d|", "agreement", "float layers",
                 "parity"],
            )
        )
        for r in results:  # --precision auto: one line per target
            sel = r.selection
            if sel and sel.get("this") == "fp32":
                print(f"auto: {r.artifact.target}: {sel['chosen']} ({sel['reason']})")
        if results:
            print("\nmanifests: <artifact>.json beside each file")
            chosen = [r for r in results if r.selection and r.selection.get("chosen") == r.artifact.precision]
            for line in _next_steps((chosen or results)[0], args):
                print(line)
    if failed:
        worst = "; ".join(
            f"{r.artifact.path.name}: {'; '.join(r.parity.failures)}" for r in failed if r.parity
        )
        what = "refused or failed parity" if any(r.refused for r in failed) else "parity check failed"
        print(f"edgeseg: error: {what} for {len(failed)} artifact(s): {worst}", file=sys.stderr)
        return 1
    return 0

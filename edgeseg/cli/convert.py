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
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator

from edgeseg.cli._format import add_format_argument, wants_json
from edgeseg.common.args import positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="registered model name (see `edgeseg models`)")
    p.add_argument(
        "--weights", help="checkpoint (default: the shipped weights, else random weights + warning)"
    )
    p.add_argument("--target", required=True, help="onnx, openvino, tflite or all (comma-separated list ok)")
    p.add_argument(
        "--precision", default="fp32", help="fp32, fp16, int8 or all (comma-separated ok; default fp32)"
    )
    p.add_argument(
        "--calib",
        help="int8 calibration data: an image folder or 'synthetic' (also supplies the "
        "held-back verification images; default verification: synthetic)",
    )
    p.add_argument("--calib-size", type=int, default=300, help="calibration images (default 300)")
    p.add_argument("--verify-size", type=int, default=16, help="held-back verification images (default 16)")
    p.add_argument("--img-size", type=positive_int, help="square input size (default: the model's)")
    p.add_argument("--batch", default="1", help="fixed batch size or 'dynamic' (ONNX/OpenVINO; default 1)")
    p.add_argument("--layout", help="nchw or nhwc I/O (default: nhwc for tflite, nchw otherwise)")
    p.add_argument("--out", default="exports", help="output folder (default exports/)")
    p.add_argument("--no-verify", action="store_true", help="skip the parity check against the FP32 model")
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
        help="OpenVINO int8: NNCF accuracy control on the labelled "
        "calibration folder, largest Dice drop allowed",
    )
    o = p.add_argument_group("ONNX")
    o.add_argument("--exporter", default="torchscript", help="torchscript (default) or dynamo")
    o.add_argument("--opset", type=int, default=17, help="opset (default 17)")
    o.add_argument("--no-simplify", action="store_true", help="keep the exported graph as it is")
    p.add_argument("--name", help="file-name stem of the artifacts (default: the model name)")
    p.add_argument("--threads", type=positive_int, help="runtime threads for verification")


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
            ),
            quant=QuantOptions(
                calib=args.calib,
                calib_size=args.calib_size,
                scheme=args.int8_scheme,
                calib_method=args.calib_method,
                quantizer=args.quantizer,
                isa=args.int8_isa,
                max_dice_drop=args.max_dice_drop,
            ),
            verify=VerifyOptions(enabled=not args.no_verify, images=args.verify_size, threads=args.threads),
            out_dir=args.out,
            log=log,
        )
    failed = [r for r in results if not r.passed]
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
                    "ok" if r.parity is None or r.parity.passed else "FAIL",
                ]
            )
        print(
            table(
                rows, ["artifact", "target", "precision", "size", "time s", "max|d|", "agreement", "parity"]
            )
        )
        if results:
            first = results[0].artifact.path
            print("\nmanifests: <artifact>.json beside each file")
            print(f"next: edgeseg predict --artifact {first} --input IMAGES --out preds/")
            print(
                f"      edgeseg bench --model {args.model} --targets {args.target} "
                f"--precisions {args.precision}"
            )
    if failed:
        worst = "; ".join(
            f"{r.artifact.path.name}: {'; '.join(r.parity.failures)}" for r in failed if r.parity
        )
        print(f"edgeseg: error: parity check failed for {len(failed)} artifact(s): {worst}", file=sys.stderr)
        return 1
    return 0

"""How int8 artifacts hold up on this CPU's int8 kernels: mask agreement and Dice against the FP32 model.

Everything runs in this one process (no worker subprocesses), so under ``../shared/tools/as-avx2-cpu`` the
whole measurement sees the emulated AVX2-only CPU. Convert the artifacts first, natively
(``edgeseg convert ... --precision int8 --int8-isa portable|vnni --out DIR``), then run this on each CPU:

    python -m edgeseg.benchmarks.int8_isa --artifacts DIR --data ../shared/data/kvasir-seg-256 --n 32
    ../shared/tools/as-avx2-cpu "$(python -c 'import sys; print(sys.executable)')" \\
        -m edgeseg.benchmarks.int8_isa --artifacts DIR --data ../shared/data/kvasir-seg-256 --n 32

It prints one row per artifact: the CPU's int8 path, the artifact's int8 scheme, mask agreement with the
FP32 torch model (mean per-image Dice between the masks), the artifact's Dice against the labels, and the
reference's.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from edgeseg.common.args import add_data_argument


def measure(artifacts: list[Path], data: str, n: int) -> list[dict]:
    from edgeseg.converters.calibration import load_images
    from edgeseg.converters.verify import compare
    from edgeseg.runtimes.sysinfo import int8_path

    from edgeseg import runtimes

    first = runtimes.find_manifest(artifacts[0])
    held = load_images(data, n, first.preprocessing, "verification")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with runtimes.load(first.model, runtime="torch", threads=2) as ref:
            want = np.concatenate([ref.infer(held.images[i:i + 1]) for i in range(len(held))])
    rows = []
    for path in artifacts:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with runtimes.load(path, threads=2) as rt:
                got = np.concatenate([rt.infer(held.images[i:i + 1]) for i in range(len(held))])
        m = rt.manifest
        fig = compare(want, got, m.postprocessing, m.precision, held.labels).figures  # the converters' parity
        row = {"artifact": path.name, "target": m.target, "int8_path": int8_path(),
               "int8_isa": m.quantization.get("int8_isa", "-"), "n": len(held),
               "agreement": fig["mask_agreement"], "max_abs_diff": fig["max_abs_diff"]}
        if "dice_candidate" in fig:
            row["dice"], row["dice_reference"] = fig["dice_candidate"], fig["dice_reference"]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgeseg.benchmarks.int8_isa", description=__doc__.split("\n")[0])
    p.add_argument("--artifacts", required=True, help="folder of converted artifacts (every file with a manifest)")
    add_data_argument(p, what="labelled image (its val split)")
    p.add_argument("--n", type=int, default=32, help="held-back images (default 32)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from edgeseg.runtimes import find_manifest

    folder = Path(args.artifacts)
    arts = sorted(f for f in folder.iterdir() if f.suffix in (".onnx", ".xml", ".tflite", ".pte")
                  and find_manifest(f) is not None)
    if not arts:
        print(f"edgeseg: error: no artifacts with manifests in {folder}", file=sys.stderr)
        return 2
    rows = measure(arts, args.data, args.n)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'artifact':40s} {'target':9s} {'CPU int8':8s} {'scheme':8s} {'agreement':>9s} {'Dice':>7s} {'ref':>7s}")
    for r in rows:
        print(f"{r['artifact']:40s} {r['target']:9s} {r['int8_path']:8s} {r['int8_isa']:8s} {r['agreement']:9.4f} "
              f"{r.get('dice', float('nan')):7.4f} {r.get('dice_reference', float('nan')):7.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

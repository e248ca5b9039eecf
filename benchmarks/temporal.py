"""Steadiness on video with ground truth: flicker, ghost regions and Dice of the demo's masks, raw and stabilised.

Clips come from :func:`edgeseg.common.camera.camera_clip` over real images (Kvasir-SEG val by default), so
every frame has its true mask. For each clip the model runs once per frame (in this process, through
``edgeseg.runtimes``); every stabiliser setting then sees the same per-frame masks. Per setting it reports:

- ``dice``: mean Dice of the shown mask against the truth;
- ``ghosts_per_100``: shown regions that touch no true polyp, per 100 frames;
- ``count_changes_per_100``: frames whose shown region count differs from the previous frame's;
- ``wrong_count``: share of frames whose region count differs from the truth's (one polyp per image here);
- ``ms``: the stabiliser's cost per frame.

Examples:
    python -m edgeseg.benchmarks.temporal --data ../shared/data/kvasir-seg-256 --clips 8 --frames 90
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

SETTINGS: dict[str, dict[str, Any]] = {
    "raw": {"ema": 1.0, "on": 0.5, "off": 0.5, "min_area": 0.0, "show_after": 1, "keep_for": 0},
    "min-area": {"ema": 1.0, "on": 0.5, "off": 0.5, "min_area": 0.005, "show_after": 1, "keep_for": 0},
    "ema": {"ema": 0.6, "on": 0.5, "off": 0.3, "min_area": 0.0, "show_after": 1, "keep_for": 0},
    "default": {},  # StabilizerConfig's defaults
    "strong": {"ema": 0.4, "show_after": 3, "keep_for": 5},
}


def _pairs(data: str, clips: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from edgeseg.data.folder import SegmentationFolder

    if data.startswith("synthetic"):
        from edgeseg.common.phantoms import synthetic_sample

        return [synthetic_sample(seed + i, 256, max_polyps=1) for i in range(clips)]
    ds = SegmentationFolder(data, split="val")
    idx = np.random.default_rng(seed).permutation(len(ds))[:clips]
    return [ds.load(int(i), resize=False) for i in idx]


def measure(artifact: str, data: str, clips: int, frames: int, seed: int = 0,
            settings: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, float]]:
    from edgeseg.apps.endoscopy.inference import Segmenter
    from edgeseg.apps.endoscopy.stabilize import Stabilizer, StabilizerConfig

    from edgeseg import runtimes
    from edgeseg.common.camera import camera_clip
    from edgeseg.metrics import dice

    settings = settings or SETTINGS
    acc: dict[str, dict[str, list[float]]] = {k: {"dice": [], "ghosts": [], "changes": [], "wrong": [], "ms": []}
                                             for k in settings}
    with runtimes.load(artifact, threads=2) as rt:
        seg = Segmenter(rt)
        for c, (image, mask) in enumerate(_pairs(data, clips, seed)):
            clip = list(camera_clip(image, mask, frames, seed=seed + c))
            raw = [seg(f).mask for f, _, _ in clip]
            for name, over in settings.items():
                stab = Stabilizer(StabilizerConfig(**over))
                prev = None
                for (_, truth, _), m in zip(clip, raw):
                    out = stab(m)
                    n = len(out.tracks)
                    a = acc[name]
                    a["dice"].append(dice(out.mask > 0, truth > 0))
                    a["ghosts"].append(sum(1 for t in out.tracks if not np.any(t.mask & truth)))
                    a["changes"].append(float(prev is not None and n != prev))
                    a["wrong"].append(float(n != (1 if truth.any() else 0)))
                    a["ms"].append(out.ms)
                    prev = n
    return {name: {"dice": float(np.mean(a["dice"])), "ghosts_per_100": 100 * float(np.mean(a["ghosts"])),
                   "count_changes_per_100": 100 * float(np.mean(a["changes"])),
                   "wrong_count": float(np.mean(a["wrong"])), "ms": float(np.mean(a["ms"])),
                   "frames": len(a["dice"])} for name, a in acc.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgeseg.benchmarks.temporal", description=__doc__.split("\n")[0])
    p.add_argument("--artifact", default="ultralightunet-s",
                   help="artifact path, or a model name with a shipped artifact (default ultralightunet-s)")
    p.add_argument("--data", default="synthetic", help="labelled image folder (its val split) or synthetic")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--frames", type=int, default=90)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not args.data.startswith("synthetic") and not Path(args.data).is_dir():
        print(f"edgeseg: error: no such folder: {args.data}", file=sys.stderr)
        return 2
    res = measure(args.artifact, args.data, args.clips, args.frames, args.seed)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{'setting':10s} {'Dice':>7s} {'ghosts/100':>11s} {'changes/100':>12s} {'wrong count':>12s} {'ms':>6s}")
    for name, r in res.items():
        print(f"{name:10s} {r['dice']:7.4f} {r['ghosts_per_100']:11.2f} {r['count_changes_per_100']:12.2f} "
              f"{r['wrong_count']:12.3f} {r['ms']:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

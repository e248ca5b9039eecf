"""Evaluate a checkpoint (or a model's shipped weights) on a dataset: Dice, IoU, recall, precision, HD95.

Means over cases are printed (or, with --json, one JSON object on stdout); --out writes per_case.csv and
summary.json. HD95 is averaged over the cases where it is defined (hd95_undefined counts the others:
exactly one of prediction and ground truth empty). Metrics are computed at the masks' own resolution.

--artifact scores a converted model (ONNX, OpenVINO, LiteRT, ...) through `runtimes` on the same data, resizing
and metrics as a checkpoint, so the two figures differ only by the artifact's numerics. 3D models (checkpoints
and artifacts alike) predict whole volumes by overlapping windows of their input size. --tta averages flipped
(and resized) views of each input (see `edgeseg.common.tta`).

Examples:
  edgeseg evaluate --model ultralightunet-s --data data/kvasir-seg --split val --json
  edgeseg evaluate --weights runs/uls/best.pt --data synthetic --out reports/uls
  edgeseg evaluate --model ultralightunet-s --data data/kvasir-seg --split val --shift brightness=0.7
  edgeseg evaluate --model ultralightunet-s --data data/kvasir-seg --split val --tta flips
  edgeseg evaluate --artifact exports/ultralightunet3d-s_fp32.onnx --data Task09_Spleen
  edgeseg evaluate --model ultralightunet-s --video clips/      (clip folders: see --video)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from edgeseg.cli._format import add_format_argument, wants_json
from edgeseg.common.args import add_data_argument, add_model_arguments, add_runtime_arguments, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p, options=("weights", "model", "artifact"), title="weights")
    add_data_argument(p)
    p.add_argument("--split", default=None,
                   help="split to evaluate (default: val when the data has one, else every pair; 'all' for every pair)")
    p.add_argument("--img-size", type=positive_int, default=None, help="input size (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=8)
    add_runtime_arguments(p, torch_device=True, threads_default="torch's, or the artifact's backend's")
    p.add_argument("--out", default=None, help="folder for per_case.csv and summary.json")
    p.add_argument("--shift", default=None, metavar="KIND=FACTOR",
                   help="evaluate on re-lit or re-framed images, a robustness check: brightness, contrast, "
                        "saturation or zoom (e.g. brightness=0.7, zoom=0.75); 2D only")
    p.add_argument("--tta", default=None, metavar="MODE",
                   help="test-time augmentation: hflip (2 passes), flips (4: both mirrors and both), or "
                        "hflip+scales / flips+scales (also at 0.75x and 1.25x, 2D only); logits are averaged")
    v = p.add_argument_group("video (clips with a true mask per frame)")
    v.add_argument("--video", nargs="+", default=None, metavar="CLIP_DIR",
                   help="score on clip folders (frames/ + masks/ + clip.json, or a folder of them; write some with "
                        "`python -m edgeseg.benchmarks.temporal --data DATA --write DIR`): Dice per frame, "
                        "frame-to-frame IoU against the truth's own, region-count changes per second, false-positive "
                        "regions per frame and the delay from a polyp coming into view to its first box, with the "
                        "demo's smoothing off and on. Runs --artifact, or --model's shipped artifact")
    v.add_argument("--video-settings", default="raw,default", metavar="NAMES",
                   help="stabiliser settings to compare: raw (smoothing off), default (on, as the demo), min-area, "
                        "ema, strong, or all (default: raw,default)")
    add_format_argument(p)


def resolve_model(weights: str | None, model: str | None):
    """(model, checkpoint dict or None, weights description) for --weights / --model."""
    from edgeseg.weights import model_card, resolve

    if weights is None and model is None:
        raise ValueError("give --weights CKPT or --model NAME (which uses the weights shipped for it)")
    r = resolve(model, weights)
    if r.source == "random":
        print(f"WARNING: {r.model} has no shipped weights: evaluating RANDOM weights", file=sys.stderr)
        return r.module, None, "random"
    if r.source == "shipped":
        dice = (model_card(r.model) or {}).get("val_dice")
        print(f"using the weights shipped for {r.model} ({r.path.name}"
              + (f", card val Dice {dice:.4f}" if isinstance(dice, float) else "") + ")", file=sys.stderr)
        return r.module, r.checkpoint, f"shipped:{r.path.name}"
    return r.module, r.checkpoint, str(weights)


def main(args: argparse.Namespace) -> int:
    from edgeseg.common.io import check_writable_dir

    if args.video:
        return _evaluate_video(args, check_writable_dir(args.out) if args.out else None)
    import torch

    from edgeseg.data.transforms import parse_shift, preprocessing_dict

    if args.threads:
        torch.set_num_threads(args.threads)
    shift = parse_shift(args.shift) if args.shift else None
    if args.tta:
        from edgeseg.common.tta import parse_tta

        parse_tta(args.tta)  # an unknown mode fails before any work
    out = check_writable_dir(args.out) if args.out else None
    if args.artifact:
        return _evaluate_artifact(args, shift, out)
    if args.runtime:
        raise ValueError("--runtime goes with --artifact; checkpoints (--weights/--model) run on torch")
    net, ckpt, wdesc = resolve_model(args.weights, args.model)
    cfg = net.model_cfg
    if args.tta:
        from edgeseg.layers.tta import TestTimeAugmentation

        net = TestTimeAugmentation(net, args.tta)
    if cfg.spatial_dims == 3:
        if shift is not None:
            raise ValueError("--shift is for 2D images; drop it for 3D checkpoints")
        return _evaluate_volumes(args, net, ckpt, wdesc, out)
    pre = dict((ckpt or {}).get("preprocessing") or preprocessing_dict(cfg.input_size, cfg.mean, cfg.std))
    if args.img_size:
        if args.img_size % cfg.divisible_by:
            raise ValueError(f"--img-size must be a multiple of {cfg.divisible_by}, got {args.img_size}")
        pre["size"] = [args.img_size, args.img_size]
    num_classes = int(((ckpt or {}).get("model_kwargs") or {}).get("num_classes", cfg.num_classes))
    return _evaluate_images(args, net, cfg.name, pre, num_classes, wdesc, shift, out)


def _evaluate_images(args, net, name: str, pre: dict, num_classes: int, wdesc: str, shift, out) -> int:
    """2D: every pair at its own size (the model input resized), means printed or as JSON."""
    import torch

    from edgeseg.common.io import atomic_write_json, atomic_write_text
    from edgeseg.data.sources import _has_split, _is_synthetic, open_split
    from edgeseg.train.evaluate import evaluate_pairs

    split = args.split
    if split is None:
        split = "val" if _is_synthetic(args.data) or _has_split_safe(args.data, _has_split) else None
    elif split == "all":
        split = None
    ds = open_split(args.data, split, pre["size"][0], "binary" if num_classes == 1 else "labels",
                    pre.get("color", "rgb"))
    pairs = _NativeSize(ds, shift)
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    net.to(device)
    t0 = time.perf_counter()
    res = evaluate_pairs(net, pairs, pre, num_classes, args.batch_size, device, ids=ds.ids)
    summary = {**res.summary(), "model": name, "weights": wdesc, "data": args.data, "split": split,
               "img_size": pre["size"], **_run_facts(args, t0, res.n)}
    if shift is not None:
        summary["shift"] = f"{shift[0]}={shift[1]:g}"
    if out is not None:
        atomic_write_text(out / "per_case.csv", res.to_csv())
        atomic_write_json(out / "summary.json", summary)
    if wants_json(args):
        from edgeseg.cli._format import print_json

        print_json(summary)
    else:
        m = res.mean
        print(f"{name} on {args.data} (split {split}, n={res.n}, input {pre['size'][0]}x{pre['size'][1]}"
              + (f", shift {summary['shift']}" if shift else "") + (f", tta {args.tta}" if args.tta else "")
              + "):")
        print(f"  Dice {m['dice']:.4f}  IoU {m['iou']:.4f}  recall {m['recall']:.4f}  "
              f"precision {m['precision']:.4f}  HD95 {m['hd95']:.2f} px ({m['hd95_undefined']} undefined)")
        if out is not None:
            print(f"  per-case: {out / 'per_case.csv'}")
    return 0


def _run_facts(args, t0: float, n: int) -> dict:
    """What the figures cost and were made with: TTA mode, threads, seconds per case."""
    import torch

    facts = {"seconds_per_case": round((time.perf_counter() - t0) / max(1, n), 4),
             "threads": args.threads or torch.get_num_threads()}
    if args.tta:
        from edgeseg.common.tta import parse_tta

        facts["tta"] = parse_tta(args.tta).to_dict()
    return facts


def _evaluate_artifact(args, shift, out) -> int:
    """A converted model through `runtimes`: the checkpoint's evaluation code with the artifact inside."""
    from edgeseg import runtimes
    from edgeseg.cli._inference import is_volume_model, runner_module, with_tta

    if args.weights or args.model:
        raise ValueError("pass one of --artifact, --weights or --model")
    if args.img_size:
        raise ValueError("--img-size is fixed by the artifact (its manifest's size); drop it")
    device = {"auto": "cpu", "cuda": "gpu"}.get(args.device, args.device)
    with runtimes.load(args.artifact, runtime=args.runtime, device=device, threads=args.threads) as rt:
        runner = with_tta(rt, args.tta)
        m = rt.manifest
        wdesc = f"artifact:{Path(args.artifact).name} ({m.target} {m.precision})"
        num_classes = int(m.postprocessing.num_classes)
        if is_volume_model(m):
            if shift is not None:
                raise ValueError("--shift is for 2D images; drop it for 3D artifacts")
            pre = m.preprocessing
            ckpt = {"preprocessing": {"kind": "volume", "patch_size": list(pre.size),
                                      "intensity_clip": pre.intensity_clip}, "model_kwargs":
                    {"num_classes": num_classes}}
            return _evaluate_volumes(args, runner, ckpt, wdesc, out, name=m.model)
        pre = m.preprocessing
        if pre.resize != "stretch":
            raise ValueError(f"{args.artifact} takes {pre.resize} input and evaluate stretches images to the "
                             "model size; score it with `edgeseg bench --artifact`")
        pre_dict = {"size": list(pre.size), "mean": list(pre.mean), "std": list(pre.std), "color": pre.color,
                    "resize": pre.resize}
        return _evaluate_images(args, runner_module(runner), m.model, pre_dict, num_classes, wdesc, shift, out)


def _evaluate_volumes(args, net, ckpt, wdesc: str, out, name: str | None = None) -> int:
    """3D models: whole volumes by sliding windows (the training's validation, see volume_loop); ``net`` is a
    torch module or a runner of a 3D artifact (whose input size is the window)."""
    import torch

    from edgeseg.common.io import atomic_write_json, atomic_write_text
    from edgeseg.train.volume_loop import eval_volumes, evaluate_volumes

    pre = (ckpt or {}).get("preprocessing") or {}
    recipe = (ckpt or {}).get("recipe") or {}
    if isinstance(net, torch.nn.Module):
        cfg = net.model_cfg
        name = cfg.name
        patch = int(args.img_size or (pre.get("patch_size") or cfg.input_size)[0])
        if patch % cfg.divisible_by:
            raise ValueError(f"--img-size must be a multiple of {cfg.divisible_by}, got {patch}")
        window: tuple[int, ...] = (patch,) * 3
        num_classes = int(((ckpt or {}).get("model_kwargs") or {}).get("num_classes", cfg.num_classes))
        device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
        net.to(device)
    else:  # a runner: the window is the artifact's input size
        from edgeseg.common.sliding import window_of

        window = window_of(net.manifest)
        patch, device = int(window[0]), "cpu"
        num_classes = int(ckpt["model_kwargs"]["num_classes"])
    clip = tuple(pre["intensity_clip"]) if pre.get("intensity_clip") else None
    split = {None: "val", "all": None}.get(args.split, args.split)
    cases, ids, split = eval_volumes(args.data, split, patch, int(recipe.get("seed", 0)), clip)
    t0 = time.perf_counter()
    res = evaluate_volumes(net, cases, ids, window, num_classes, device, float(recipe.get("sw_overlap", 0.25)),
                           args.batch_size)
    summary = {**res.summary(), "model": name, "weights": wdesc, "data": args.data, "split": split,
               "img_size": list(window), **_run_facts(args, t0, res.n)}
    if out is not None:
        atomic_write_text(out / "per_case.csv", res.to_csv())
        atomic_write_json(out / "summary.json", summary)
    if wants_json(args):
        from edgeseg.cli._format import print_json

        print_json(summary)
    else:
        m = res.mean
        print(f"{name} on {args.data} (split {split}, n={res.n}, sliding {'x'.join(map(str, window))} windows"
              + (f", tta {args.tta}" if args.tta else "") + "):")
        print(f"  Dice {m['dice']:.4f}  IoU {m['iou']:.4f}  recall {m['recall']:.4f}  "
              f"precision {m['precision']:.4f}  HD95 {m['hd95']:.2f} voxels ({m['hd95_undefined']} undefined)")
    return 0


def _evaluate_video(args, out) -> int:
    """Clip folders: the model once per frame, then every stabiliser setting on the same masks
    (edgeseg.benchmarks.temporal)."""
    from edgeseg.benchmarks import temporal
    from edgeseg.common.io import atomic_write_json, atomic_write_text

    if args.weights:
        raise ValueError("--video runs a converted model: convert the checkpoint first (`edgeseg convert`) and pass "
                         "--artifact, or --model NAME for the artifact shipped with it")
    if args.artifact and args.model:
        raise ValueError("pass one of --artifact or --model with --video")
    for flag, given in (("--shift", args.shift), ("--tta", args.tta), ("--img-size", args.img_size)):
        if given:
            raise ValueError(f"{flag} is for still images; drop it with --video")
    names = list(temporal.SETTINGS) if args.video_settings == "all" else [
        n.strip() for n in args.video_settings.split(",") if n.strip()]
    unknown = [n for n in names if n not in temporal.SETTINGS]
    if unknown or not names:
        raise ValueError(f"unknown --video-settings {', '.join(unknown) or '(none)'}; choose from "
                         f"{', '.join(temporal.SETTINGS)} or all")
    target = args.artifact or args.model
    if target is None:
        raise ValueError("give --artifact PATH (a converted model) or --model NAME (runs the artifact shipped for it)")
    settings = {n: temporal.SETTINGS[n] for n in names}
    per_clip: list[tuple[str, dict]] = []
    t0 = time.perf_counter()
    res = temporal.measure_folders(target, args.video, settings, threads=args.threads or 2, runtime=args.runtime,
                                   on_clip=lambda path, r: per_clip.append((str(path), r)))
    facts = {"model": str(target), "clips": [c for c, _ in per_clip], "threads": args.threads or 2,
             "seconds": round(time.perf_counter() - t0, 2)}
    summary = {**facts, "settings": res}
    if all(k in res for k in temporal.OFF_ON):
        summary["off_vs_on"] = temporal.off_vs_on(res)
    if out is not None:
        cols = [k for k, _, _ in temporal.COLUMNS]
        lines = ["clip,setting," + ",".join(cols)]
        lines += [f"{c},{n}," + ",".join("" if r[n][k] is None else f"{r[n][k]:.6g}" for k in cols)
                  for c, r in per_clip for n in r]
        atomic_write_text(out / "per_clip.csv", "\n".join(lines) + "\n")
        atomic_write_json(out / "summary.json", summary)
    if wants_json(args):
        from edgeseg.cli._format import print_json

        print_json(summary)
        return 0
    print(f"{target} on {len(per_clip)} clip(s) ({', '.join(args.video)}), {facts['threads']} threads:")
    print(temporal.table(res))
    if "off_vs_on" in summary:
        print("smoothing on vs off: " + temporal.off_vs_on_line(summary["off_vs_on"]))
    if out is not None:
        print(f"  per-clip: {out / 'per_clip.csv'}")
    return 0


def _has_split_safe(data: str, has_split) -> bool:
    from pathlib import Path

    root = Path(data)
    return root.is_dir() and has_split(root, "val")


class _NativeSize:
    """Pairs at the files' own size (the model input is resized; metrics use the original mask), optionally
    shifted (``--shift``)."""

    def __init__(self, ds, shift: tuple[str, float] | None = None):
        self.ds = ds
        self.shift = shift

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        image, mask = self.ds.load(i, resize=False)
        if self.shift is None:
            return image, mask
        from edgeseg.data.transforms import shift_pair

        return shift_pair(image, mask, *self.shift)

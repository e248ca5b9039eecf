"""Evaluate a checkpoint (or a model's shipped weights) on a dataset: Dice, IoU, recall, precision, HD95.

Means over cases are printed (or, with --json, one JSON object on stdout); --out writes per_case.csv and
summary.json. HD95 is averaged over the cases where it is defined (hd95_undefined counts the others:
exactly one of prediction and ground truth empty). Metrics are computed at the masks' own resolution.

Examples:
  edgeseg evaluate --model ultralightunet-s --data data/kvasir-seg --split val --json
  edgeseg evaluate --weights runs/uls/best.pt --data synthetic --out reports/uls
  edgeseg evaluate --model ultralightunet-s --data data/kvasir-seg --split val --shift brightness=0.7
"""

from __future__ import annotations

import argparse
import sys

from edgeseg.cli._format import add_format_argument, wants_json
from edgeseg.common.args import positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("weights")
    src.add_argument("--weights", default=None, help="checkpoint file (edgeseg checkpoint or state_dict)")
    src.add_argument("--model", default=None, help="registry name; without --weights its shipped weights are used")
    p.add_argument("--data", default="synthetic", help="dataset folder or synthetic[:N]")
    p.add_argument("--split", default=None,
                   help="split to evaluate (default: val when the data has one, else every pair; 'all' for every pair)")
    p.add_argument("--img-size", type=positive_int, default=None, help="input size (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--out", default=None, help="folder for per_case.csv and summary.json")
    p.add_argument("--shift", default=None, metavar="KIND=FACTOR",
                   help="evaluate on re-lit or re-framed images, a robustness check: brightness, contrast, "
                        "saturation or zoom (e.g. brightness=0.7, zoom=0.75); 2D only")
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
    import torch

    from edgeseg.common.io import atomic_write_json, atomic_write_text, check_writable_dir
    from edgeseg.data.sources import _has_split, _is_synthetic, open_split
    from edgeseg.data.transforms import parse_shift, preprocessing_dict
    from edgeseg.train.evaluate import evaluate_pairs

    if args.threads:
        torch.set_num_threads(args.threads)
    shift = parse_shift(args.shift) if args.shift else None
    out = check_writable_dir(args.out) if args.out else None
    net, ckpt, wdesc = resolve_model(args.weights, args.model)
    cfg = net.model_cfg
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
    res = evaluate_pairs(net, pairs, pre, num_classes, args.batch_size, device, ids=ds.ids)
    summary = {**res.summary(), "model": cfg.name, "weights": wdesc, "data": args.data, "split": split,
               "img_size": pre["size"]}
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
        print(f"{cfg.name} on {args.data} (split {split}, n={res.n}, input {pre['size'][0]}x{pre['size'][1]}"
              + (f", shift {summary['shift']}" if shift else "") + "):")
        print(f"  Dice {m['dice']:.4f}  IoU {m['iou']:.4f}  recall {m['recall']:.4f}  "
              f"precision {m['precision']:.4f}  HD95 {m['hd95']:.2f} px ({m['hd95_undefined']} undefined)")
        if out is not None:
            print(f"  per-case: {out / 'per_case.csv'}")
    return 0


def _evaluate_volumes(args, net, ckpt, wdesc: str, out) -> int:
    """3D checkpoints: whole volumes by sliding windows (the training's validation, see volume_loop)."""
    import torch

    from edgeseg.common.io import atomic_write_json, atomic_write_text
    from edgeseg.train.volume_loop import eval_volumes, evaluate_volumes

    cfg = net.model_cfg
    pre = (ckpt or {}).get("preprocessing") or {}
    recipe = (ckpt or {}).get("recipe") or {}
    patch = int(args.img_size or (pre.get("patch_size") or cfg.input_size)[0])
    if patch % cfg.divisible_by:
        raise ValueError(f"--img-size must be a multiple of {cfg.divisible_by}, got {patch}")
    clip = tuple(pre["intensity_clip"]) if pre.get("intensity_clip") else None
    split = {None: "val", "all": None}.get(args.split, args.split)
    cases, ids, split = eval_volumes(args.data, split, patch, int(recipe.get("seed", 0)), clip)
    num_classes = int(((ckpt or {}).get("model_kwargs") or {}).get("num_classes", cfg.num_classes))
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    net.to(device)
    res = evaluate_volumes(net, cases, ids, patch, num_classes, device, float(recipe.get("sw_overlap", 0.25)),
                           args.batch_size)
    summary = {**res.summary(), "model": cfg.name, "weights": wdesc, "data": args.data, "split": split,
               "img_size": [patch] * 3}
    if out is not None:
        atomic_write_text(out / "per_case.csv", res.to_csv())
        atomic_write_json(out / "summary.json", summary)
    if wants_json(args):
        from edgeseg.cli._format import print_json

        print_json(summary)
    else:
        m = res.mean
        print(f"{cfg.name} on {args.data} (split {split}, n={res.n}, sliding {patch}^3 windows):")
        print(f"  Dice {m['dice']:.4f}  IoU {m['iou']:.4f}  recall {m['recall']:.4f}  "
              f"precision {m['precision']:.4f}  HD95 {m['hd95']:.2f} voxels ({m['hd95_undefined']} undefined)")
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

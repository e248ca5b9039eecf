"""Train a model on an image/mask folder or synthetic data; keeps the best-by-val-Dice checkpoint.

Writes OUT/best.pt (weights + model, pre-processing, metrics, recipe), OUT/last.pt (+ the state --resume
needs) and OUT/history.json|csv. Multi-process: torchrun --nproc_per_node N -m edgeseg train ...

Examples:
  edgeseg train --model ultralightunet-s --data data/kvasir-seg --epochs 100 --out runs/uls
  edgeseg train --model ultralightunet-t --data synthetic --epochs 5 --img-size 96 --out runs/t
  edgeseg train --model ultralightunet3d-s --data Task09_Spleen --intensity-clip=-100,240 --img-size 96
  edgeseg train --model ultralightunet-s --data data/CVC-ClinicDB --skip-attention ag --clip 1.0 --amp on

Image folders: Kvasir-SEG's images/ + masks/, the official CVC-ClinicDB (Original/ + Ground Truth/, TIFF) and
CVC-ColonDB (<n>.tiff + p<n>.tiff) releases, <stem>_mask naming; see edgeseg.data.folder.

3D models train on cubic patches of side --img-size drawn from a Medical Segmentation Decathlon folder
(dataset.json, imagesTr/, labelsTr/), from NIfTI image/label folders paired by name (imagesTr/ + labelsTr/ or
images/ + labels/, no dataset.json), or from synthetic CT-like phantoms (--data synthetic[:N]), and are
validated on whole volumes by sliding windows.

--skip-attention, --clip and --amp are declared once, on edgeseg.train.config.TrainConfig: the flag, the
checkpoint's recipe and the model card follow from that declaration.
"""

from __future__ import annotations

import argparse

from edgeseg.common.args import positive_int
from edgeseg.train.config import add_declared_arguments, declared_values


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="registry name (see `edgeseg models`)")
    p.add_argument("--data", default="synthetic",
                   help="dataset folder (images/ + masks/, Original/ + 'Ground Truth'/, <n> + p<n>, <stem>_mask.png, "
                        "train.txt/val.txt; 3D: an MSD folder or imagesTr/ + labelsTr/) or synthetic[:N]")
    p.add_argument("--val", default=None, help="validation folder or synthetic[:N] (default: the data's val "
                                               "split, else a fixed 10%% hold-out)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--img-size", type=positive_int, default=None,
                   help="square training size; for 3D models the cubic patch side (default: the model's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up epochs")
    p.add_argument("--out", default=None, help="run folder (default: runs/MODEL)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--workers", type=int, default=1,
                   help="threads decoding data; >= 1 also prepares batches in the background (0: inline)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-classes", type=int, default=1, help="1 = binary; K > 1 needs integer label masks")
    p.add_argument("--no-multiscale", action="store_true", help="train at --img-size only")
    p.add_argument("--no-augment", action="store_true", help="no flips/rotations")
    p.add_argument("--zoom", type=float, default=0.0, metavar="Z",
                   help="random zoom in [1-Z, 1+Z] per image (e.g. 0.2; default 0 = off)")
    p.add_argument("--color-jitter", type=float, default=0.0, metavar="C",
                   help="random brightness/contrast/saturation factors in [1-C, 1+C] (e.g. 0.2; default 0 = off)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (slow first step)")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--init", default=None, help="start from this checkpoint (fine-tuning)")
    p.add_argument("--loss", choices=["bce-iou", "wbce-wiou", "ce-dice", "dice-ce"], default=None,
                   help="default by task: bce-iou (binary), ce-dice (multi-class), dice-ce (3D); wbce-wiou is "
                        "the boundary-weighted binary loss of the UltraLightUNet paper")
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="validate and save a moving average of the weights with this decay (e.g. 0.998; "
                        "default 0 = off)")
    p.add_argument("--max-steps", type=int, default=None, help="cap steps per epoch (quick checks)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_declared_arguments(p)  # --skip-attention, --clip, --amp: declared once, on TrainConfig
    vol = p.add_argument_group("3D models")
    vol.add_argument("--patches-per-case", type=int, default=4, help="patches drawn from each volume per epoch")
    vol.add_argument("--fg-ratio", type=float, default=0.5, help="share of patches centred on foreground")
    vol.add_argument("--intensity-clip", default=None, metavar="LO,HI",
                     help="fixed intensity window, e.g. --intensity-clip=-100,240 for abdominal CT (default: 0.5-99.5 percentiles)")
    vol.add_argument("--sw-overlap", type=float, default=0.25, help="sliding-window overlap for validation")


def _window(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--intensity-clip wants LO,HI (e.g. -100,240), got {text!r}") from None
    if not lo < hi:
        raise ValueError(f"--intensity-clip: LO must be below HI, got {text!r}")
    return lo, hi


def main(args: argparse.Namespace) -> int:
    import sys

    from edgeseg.models import get_model_cfg
    from edgeseg.train.loop import TrainConfig, train

    mcfg = get_model_cfg(args.model)
    cfg = TrainConfig(
        model=args.model, data=args.data, val=args.val, epochs=args.epochs,
        img_size=args.img_size or mcfg.input_size[-1], batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, warmup_epochs=args.warmup, out=args.out or f"runs/{args.model}",
        resume=args.resume, device=args.device, workers=args.workers, threads=args.threads, seed=args.seed,
        num_classes=args.num_classes, mask_mode="binary" if args.num_classes == 1 else "labels",
        multiscale=not args.no_multiscale, augment=not args.no_augment, zoom=args.zoom,
        color_jitter=args.color_jitter, compile=args.compile,
        channels_last=not args.no_channels_last, init=args.init, ema=args.ema, loss=args.loss,
        max_steps_per_epoch=args.max_steps,
        progress=not args.no_progress, patches_per_case=args.patches_per_case, fg_ratio=args.fg_ratio,
        intensity_clip=_window(args.intensity_clip), sw_overlap=args.sw_overlap, **declared_values(args),
    )
    res = train(cfg)
    b = res.best
    if b.get("val_dice", -1) >= 0:
        print(f"best val Dice {b['val_dice']:.4f} (IoU {b['val_iou']:.4f}) at epoch {b['epoch']}: {res.best_path}",
              file=sys.stderr)
    return 0

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

Every option is declared once, on edgeseg.train.config.TrainConfig (and its VolumeOptions): the flag, its
default and help, the Python API, the checkpoint's recipe and the model card follow from that declaration.
"""

from __future__ import annotations

import argparse

from edgeseg.train.config import add_declared_arguments, config_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_declared_arguments(p)


def main(args: argparse.Namespace) -> int:
    import sys

    from edgeseg.train.loop import train

    res = train(config_from_args(args))
    b = res.best
    if b.get("val_dice", -1) >= 0:
        print(f"best val Dice {b['val_dice']:.4f} (IoU {b['val_iou']:.4f}) at epoch {b['epoch']}: {res.best_path}",
              file=sys.stderr)
    return 0

"""Patch-based training of 3D models (``edgeseg train --model ultralightunet3d-s --data MSD_FOLDER``).

The recipe is the 2D one (AdamW, warm-up + cosine, ``--clip``, ``--amp``, ``--skip-attention``,
best-by-val-Dice checkpoint, exact ``--resume``, DDP under torchrun) with volume data:

- ``--data`` is a Medical Segmentation Decathlon folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``;
  a deterministic 20% hold-out validates unless ``--val`` names another MSD folder) or ``synthetic[:N]``
  (CT-like phantoms, :func:`edgeseg.data.volumes.synthetic_volume`).
- Volumes are normalised once (fixed ``intensity_clip`` window, else 0.5-99.5 percentiles; z-score) and held
  in memory. Each epoch draws ``patches_per_case`` cubic patches of side ``img_size`` from every training
  case, a ``fg_ratio`` share centred on foreground, with random flips on the three axes.
- Validation predicts whole volumes by overlapping sliding windows (MONAI, gaussian blending) and reports the
  case-mean of Dice, IoU, recall, precision and HD95 (in voxels) over the foreground classes.
- ``num_classes`` counts background (softmax logits): the MSD ``labels`` table sets it (2 for one organ).
  The loss is Dice + cross-entropy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from edgeseg.data.sources import DataSpec, _is_synthetic, _synthetic_n
from edgeseg.train.evaluate import case_metrics, summarise
from edgeseg.train.loop import (
    TrainConfig,
    TrainResult,
    _end_epoch,
    _epoch_seed,
    _finish,
    _log,
    _prepare,
    _progress,
    _recipe,
    _start_process,
    _step,
    model_options,
)

SYNTHETIC_TRAIN_VOLUMES = 16
SYNTHETIC_VAL_VOLUMES = 4
SYNTHETIC_VAL_SEED = 424_242
PERCENTILES = (0.5, 99.5)


def volume_preprocessing(patch: int, intensity_clip: tuple[float, float] | None) -> dict[str, Any]:
    """The pre-processing a 3D checkpoint records (what inference must repeat)."""
    return {"kind": "volume", "patch_size": [patch] * 3,
            "intensity_clip": list(intensity_clip) if intensity_clip else None,
            "percentiles": None if intensity_clip else list(PERCENTILES), "zscore": True,
            "inference": "sliding-window, gaussian blending"}


def synthetic_cases(n: int, base_seed: int, patch: int, intensity_clip: tuple[float, float] | None
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` normalised phantom cases, 1.5 patches on a side (patches are crops; validation slides)."""
    from edgeseg.data.volumes import normalize_intensity, synthetic_volume

    out = []
    for i in range(n):
        vol, lab = synthetic_volume(base_seed * 100_003 + i, patch + patch // 2)
        out.append((normalize_intensity(vol[None], intensity_clip, None if intensity_clip else PERCENTILES), lab))
    return out


def eval_volumes(data: str, split: str | None, patch: int, seed: int,
                 intensity_clip: tuple[float, float] | None):
    """(cases, ids, split) to evaluate: an MSD folder's ``split`` ("val": the training hold-out for ``seed``;
    None: every case) or the synthetic validation phantoms."""
    from edgeseg.data.volumes import MSDVolumes

    if _is_synthetic(data):
        n = _synthetic_n(data, SYNTHETIC_VAL_VOLUMES)
        return synthetic_cases(n, SYNTHETIC_VAL_SEED, patch, intensity_clip), [f"case{i}" for i in range(n)], "val"
    ds = MSDVolumes(data, split=split, seed=seed, clip=intensity_clip)
    return [ds[i][:2] for i in range(len(ds))], ds.ids, split


def open_volumes(data: str, val: str | None, patch: int, seed: int,
                 intensity_clip: tuple[float, float] | None):
    """(train cases, val cases, val ids, train spec, val spec, number of classes incl. background).

    Cases are ``(image float32 (C, D, H, W), label uint8 (D, H, W))`` already normalised.
    """
    from edgeseg.data.volumes import MSDVolumes

    def synthetic(n: int, base_seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return synthetic_cases(n, base_seed, patch, intensity_clip)

    def cases_of(ds) -> list[tuple[np.ndarray, np.ndarray]]:
        return [ds[i][:2] for i in range(len(ds))]

    if _is_synthetic(data):
        n = _synthetic_n(data, SYNTHETIC_TRAIN_VOLUMES)
        train = synthetic(n, seed)
        tspec, n_classes = DataSpec("synthetic", None, n), 2
    else:
        ds = MSDVolumes(data, split=None if val else "train", seed=seed, clip=intensity_clip)
        train, tspec, n_classes = cases_of(ds), DataSpec(str(data), None if val else "train", len(ds)), \
            ds.num_classes
    if val is None and _is_synthetic(data):
        val_cases, vids = synthetic(SYNTHETIC_VAL_VOLUMES, SYNTHETIC_VAL_SEED), None
        vspec = DataSpec("synthetic", None, SYNTHETIC_VAL_VOLUMES)
    elif val is None:
        vds = MSDVolumes(data, split="val", seed=seed, clip=intensity_clip)
        val_cases, vids, vspec = cases_of(vds), vds.ids, DataSpec(str(data), "val", len(vds))
    elif _is_synthetic(val):
        n = _synthetic_n(val, SYNTHETIC_VAL_VOLUMES)
        val_cases, vids, vspec = synthetic(n, SYNTHETIC_VAL_SEED), None, DataSpec("synthetic", None, n)
    else:
        vds = MSDVolumes(val, split=None, seed=seed, clip=intensity_clip)
        val_cases, vids, vspec = cases_of(vds), vds.ids, DataSpec(str(val), None, len(vds))
    if not val_cases:
        raise ValueError(f"{data}: no validation volumes (the dataset needs at least 2 cases, or give --val)")
    vids = vids or [f"case{i}" for i in range(len(val_cases))]
    return train, val_cases, vids, tspec, vspec, n_classes


def _patch_batches(cases, cfg: TrainConfig, epoch: int, rank: int, world: int, steps: int):
    """``steps`` batches of (patches (N, C, p, p, p) float32, labels (N, p, p, p) int64) for one epoch."""
    from edgeseg.data.volumes import sample_patches

    g = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch))
    order = torch.randperm(len(cases), generator=g)[rank::world].tolist()
    rng = np.random.default_rng(_epoch_seed(cfg.seed, epoch, rank + 1))
    patches = []
    for i in order:
        image, label = cases[i]
        patches += sample_patches(image, label, (cfg.img_size,) * 3, cfg.patches_per_case, cfg.fg_ratio, rng)
    perm = rng.permutation(len(patches))
    bs = cfg.batch_size
    for s in range(min(steps, len(patches) // bs)):
        chunk = [patches[j] for j in perm[s * bs:(s + 1) * bs]]
        xs, ys = [], []
        for img, lab in chunk:
            if cfg.augment:
                for axis in range(3):
                    if rng.random() < 0.5:
                        img, lab = np.flip(img, axis + 1), np.flip(lab, axis)
            xs.append(np.ascontiguousarray(img, dtype=np.float32))
            ys.append(np.ascontiguousarray(lab, dtype=np.int64))
        yield torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def evaluate_volumes(model, cases, ids, patch: int | tuple[int, ...], num_classes: int,
                     device: torch.device | str = "cpu", overlap: float = 0.25, sw_batch_size: int = 2):
    """Sliding-window predictions of whole volumes -> :class:`edgeseg.train.evaluate.EvalResult`.

    ``model`` is a torch module (windows on ``device``, by MONAI) or anything with numpy windows in and
    logits out: a :class:`edgeseg.runtimes.Runtime` of an exported 3D artifact, or a callable (windows by
    :func:`edgeseg.common.sliding.sliding_window`). ``patch`` is the window side (or its three sides).
    """
    from edgeseg.data.volumes import sliding_window_predict

    roi = (patch,) * 3 if isinstance(patch, int) else tuple(patch)
    is_module = isinstance(model, torch.nn.Module)
    was_training = model.training if is_module else False
    if is_module:
        model.eval()
    per_case = []
    try:
        for image, label in cases:
            if is_module:
                x = torch.from_numpy(np.ascontiguousarray(image))[None].to(device)
                with torch.autocast("cuda", enabled=str(device).startswith("cuda")):
                    logits = sliding_window_predict(model, x, roi, overlap=overlap,
                                                    sw_batch_size=sw_batch_size)[0].float().cpu()
            else:
                x = np.ascontiguousarray(image, dtype=np.float32)[None]
                logits = torch.from_numpy(sliding_window_predict(model, x, roi, overlap=overlap,
                                                                 sw_batch_size=sw_batch_size)[0])
            pred = (torch.sigmoid(logits[0]) > 0.5) if logits.shape[0] == 1 else logits.argmax(0)
            per_case.append(case_metrics(pred.numpy().astype(np.uint8), label, max(num_classes, 1)))
    finally:
        if is_module:
            model.train(was_training)
    return summarise(ids, per_case)


def train_volumes(cfg: TrainConfig, mcfg, on_epoch: Callable[[dict[str, Any]], None] | None = None
                  ) -> TrainResult:
    """Train a 3D model on volume patches (see the module docstring); called by :func:`edgeseg.train.train`."""
    proc = _start_process(cfg)
    world, rank = proc[0], proc[1]
    main_proc = rank == 0
    t0 = time.perf_counter()
    train_cases, val_cases, vids, tspec, vspec, n_classes = open_volumes(
        cfg.data, cfg.val, cfg.img_size, cfg.seed, cfg.intensity_clip)
    if cfg.num_classes == 1 and n_classes > 2:
        raise ValueError(f"{tspec.source} has {n_classes - 1} foreground labels; train with "
                         f"--num-classes {n_classes}")
    if cfg.num_classes > 1 and cfg.num_classes != n_classes:
        raise ValueError(f"{tspec.source} has {n_classes} classes (background included); use --num-classes "
                         f"{n_classes}" + (" or 1 (binary)" if n_classes == 2 else ""))
    channels = train_cases[0][0].shape[0]
    if channels != mcfg.in_channels and main_proc:
        _log(f"{cfg.model}: {channels} input channel(s) in the data (the model's default is {mcfg.in_channels})")
    if main_proc:
        _log(f"data: {len(train_cases)} train volumes ({tspec.source}, split {tspec.split}), {len(val_cases)} "
             f"val ({vspec.source}, split {vspec.split}), loaded in {time.perf_counter() - t0:.1f} s")
    model_kwargs: dict[str, Any] = {"num_classes": cfg.num_classes, "in_channels": channels, **model_options(cfg)}
    if "img_size" in mcfg.options:  # ViT encoders are built for one patch size
        model_kwargs["img_size"] = cfg.img_size
    n_items = len(train_cases) * cfg.patches_per_case
    if n_items < cfg.batch_size * world:
        raise ValueError(f"{tspec.source}: {len(train_cases)} volumes x {cfg.patches_per_case} patches is fewer "
                         f"than one batch ({cfg.batch_size} x {world} processes); raise --patches-per-case or "
                         "lower --batch-size")
    run = _prepare(cfg, mcfg, model_kwargs, n_items, proc, channels_last=False)
    preprocessing = volume_preprocessing(cfg.img_size, cfg.intensity_clip)
    recipe = _recipe(run, tspec, vspec, patch_size=[cfg.img_size] * 3, multiscale=False, channels_last=False,
                     workers=0)

    for epoch in range(run.start_epoch, cfg.epochs):
        run.model.train()
        t_ep = time.perf_counter()
        bar = _progress(run.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress and main_proc)
        loss_sum, seen = 0.0, 0
        for x, y in _patch_batches(train_cases, cfg, epoch, rank, world, run.steps_per_epoch):
            x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
            loss_sum += _step(run, x, y, epoch) * x.shape[0]
            seen += x.shape[0]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", refresh=False)
        if bar is not None:
            bar.close()
        train_s = time.perf_counter() - t_ep
        row: dict[str, Any] = {"epoch": epoch + 1, "loss": loss_sum / max(1, seen),
                               "lr": run.sched.get_last_lr()[0], "train_s": round(train_s, 2),
                               "images_per_s": round(seen * world / train_s, 2), "unit": "patch"}
        if main_proc:
            t_val = time.perf_counter()
            res = evaluate_volumes(run.eval_model, val_cases, vids, cfg.img_size, cfg.num_classes, run.device,
                                   cfg.sw_overlap, max(1, cfg.batch_size))
            row["val_s"] = round(time.perf_counter() - t_val, 2)
            _end_epoch(run, epoch, row, res, t_ep, len(val_cases), preprocessing, recipe, on_epoch)
        if run.distributed:
            torch.distributed.barrier()
    return _finish(run)

"""Patch-based training of 3D models (``edgeseg train --model ultralightunet3d-s --data MSD_FOLDER``).

The 3D front end of the training engine: the run is :class:`edgeseg.train.engine.Trainer`'s, as for 2D (AdamW,
warm-up + cosine, ``--clip``, ``--amp``, ``--skip-attention``, best-by-val-Dice checkpoint, exact ``--resume``,
DDP under torchrun); this module supplies volume data and a sliding-window validator. The options only 3D
reads are :class:`edgeseg.train.config.VolumeOptions` (``cfg.volume``):

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
from edgeseg.train.config import TrainConfig
from edgeseg.train.engine import TrainData, Trainer, TrainResult, model_options, steps_per_epoch
from edgeseg.train.evaluate import case_metrics, summarise
from edgeseg.train.process import epoch_seed, log, start_processes

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


class PatchBatches:
    """An epoch's batches of random patches from volumes held in memory: ``(patches (N, C, p, p, p) float32,
    labels (N, p, p, p) int64)``, a ``fg_ratio`` share centred on foreground, flipped on random axes.

    ``batches(epoch)`` draws this process's share (``rank`` of ``world``), at most ``steps`` batches; the
    draw is a pure function of (seed, epoch, rank).
    """

    def __init__(self, cases, cfg: TrainConfig, rank: int, world: int, steps: int):
        self.cases, self.cfg, self.rank, self.world, self.steps = cases, cfg, rank, world, steps

    def __call__(self, epoch: int):
        from edgeseg.data.volumes import sample_patches

        cfg, vol, cases = self.cfg, self.cfg.volume, self.cases
        g = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        order = torch.randperm(len(cases), generator=g)[self.rank::self.world].tolist()
        rng = np.random.default_rng(epoch_seed(cfg.seed, epoch, self.rank + 1))
        patches = []
        for i in order:
            image, label = cases[i]
            patches += sample_patches(image, label, (cfg.img_size,) * 3, vol.patches_per_case, vol.fg_ratio, rng)
        perm = rng.permutation(len(patches))
        bs = cfg.batch_size
        for s in range(min(self.steps, len(patches) // bs)):
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


def train_volumes(cfg: TrainConfig, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train a 3D model on volume patches (see the module docstring); called by :func:`edgeseg.train.train`,
    which checks ``cfg`` first."""
    from edgeseg.models import get_model_cfg

    mcfg, vol = get_model_cfg(cfg.model), cfg.volume
    proc = start_processes(cfg)
    t0 = time.perf_counter()
    train_cases, val_cases, vids, tspec, vspec, n_classes = open_volumes(
        cfg.data, cfg.val, cfg.img_size, cfg.seed, vol.intensity_clip)
    if cfg.num_classes == 1 and n_classes > 2:
        raise ValueError(f"{tspec.source} has {n_classes - 1} foreground labels; train with "
                         f"--num-classes {n_classes}")
    if cfg.num_classes > 1 and cfg.num_classes != n_classes:
        raise ValueError(f"{tspec.source} has {n_classes} classes (background included); use --num-classes "
                         f"{n_classes}" + (" or 1 (binary)" if n_classes == 2 else ""))
    channels = train_cases[0][0].shape[0]
    if channels != mcfg.in_channels and proc.main:
        log(f"{cfg.model}: {channels} input channel(s) in the data (the model's default is {mcfg.in_channels})")
    if proc.main:
        log(f"data: {len(train_cases)} train volumes ({tspec.source}, split {tspec.split}), {len(val_cases)} "
            f"val ({vspec.source}, split {vspec.split}), loaded in {time.perf_counter() - t0:.1f} s")
    model_kwargs: dict[str, Any] = {"num_classes": cfg.num_classes, "in_channels": channels, **model_options(cfg)}
    if "img_size" in mcfg.options:  # ViT encoders are built for one patch size
        model_kwargs["img_size"] = cfg.img_size
    n_items = len(train_cases) * vol.patches_per_case
    if n_items < cfg.batch_size * proc.world:
        raise ValueError(f"{tspec.source}: {len(train_cases)} volumes x {vol.patches_per_case} patches is fewer "
                         f"than one batch ({cfg.batch_size} x {proc.world} processes); raise --patches-per-case "
                         "or lower --batch-size")
    steps = steps_per_epoch(n_items, cfg, proc.world)
    data = TrainData(PatchBatches(train_cases, cfg, proc.rank, proc.world, steps), n_items, tspec, vspec,
                     volume_preprocessing(cfg.img_size, vol.intensity_clip),
                     recipe={"patch_size": [cfg.img_size] * 3, "multiscale": False, "channels_last": False,
                             "workers": 0}, unit="patch")

    def validate(model: torch.nn.Module):
        return evaluate_volumes(model, val_cases, vids, cfg.img_size, cfg.num_classes, proc.device,
                                vol.sw_overlap, max(1, cfg.batch_size))

    trainer = Trainer(cfg, data, validate if proc.main else None, model_kwargs=model_kwargs, proc=proc)
    return trainer.fit(on_epoch)

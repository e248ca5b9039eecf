"""``edgeseg train``: :func:`train`, and the 2D front end of the training engine (:mod:`edgeseg.train.engine`).

Recipe: AdamW, linear warm-up then cosine decay (per step), gradient-norm clipping (``--clip``, 0.5), mixed
precision (``--amp``: fp16 with loss scaling on CUDA, bf16 on CPUs with native bf16; by default on CUDA only),
the skip attention of ``--skip-attention`` (recorded in the checkpoint's ``model_kwargs``), loss by task (see
:mod:`edgeseg.train.losses`), optionally a moving average of the weights (``--ema``, see
:mod:`edgeseg.train.ema`), per-epoch validation, the best-by-val-Dice checkpoint kept. The settings are
:class:`edgeseg.train.config.TrainConfig`; the engine that runs them is :class:`edgeseg.train.engine.Trainer`.

What this module supplies to the engine for 2D models is only the data and the validator. The training set is
decoded once and held in memory at the training size (uint8), and batches are assembled and augmented on
tensors (optionally in a background thread), so the step never waits on per-sample Python code. Randomness
is a pure function of (seed, epoch, rank): a resumed run draws exactly the batches the uninterrupted run
would have. Multi-process training (``torchrun --nproc_per_node N -m edgeseg train ...``) uses
DistributedDataParallel (gloo on CPU, NCCL on CUDA); rank 0 validates and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from edgeseg.data.sources import open_train_val
from edgeseg.data.transforms import MULTISCALE, BatchAugment, preprocessing_dict
from edgeseg.train.config import TrainConfig
from edgeseg.train.engine import TrainData, Trainer, TrainResult, amp_dtype, lr_lambda, model_options
from edgeseg.train.evaluate import evaluate_pairs
from edgeseg.train.process import Processes, epoch_seed, log, start_processes

# the training API as it was before the engine moved out (``from edgeseg.train.loop import ...``)
__all__ = ["TrainConfig", "TrainResult", "Trainer", "amp_dtype", "lr_lambda", "model_options", "train",
           "train_images", "ImageBatches", "prefetch", "to_memory"]


def to_memory(ds, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a dataset once: uint8 images (N, H, W, C) and masks (N, H, W)."""
    n = len(ds)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            items = list(pool.map(ds.load, range(n)))
    else:
        items = [ds.load(i) for i in range(n)]
    imgs = np.stack([im if im.ndim == 3 else im[..., None] for im, _ in items])
    masks = np.stack([m for _, m in items])
    return torch.from_numpy(imgs), torch.from_numpy(masks)


class _MemoryPairs:
    def __init__(self, imgs: torch.Tensor, masks: torch.Tensor):
        self.imgs, self.masks = imgs, masks

    def __len__(self) -> int:
        return self.imgs.shape[0]

    def __getitem__(self, i: int):
        im = self.imgs[i].numpy()
        return (im[..., 0] if im.shape[-1] == 1 else im), self.masks[i].numpy()


def prefetch(it: Iterator, depth: int = 3) -> Iterator:
    """Run ``it`` in a background thread, ``depth`` items ahead."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    err: list[BaseException] = []

    def work():
        try:
            for item in it:
                q.put(item)
        except BaseException as exc:  # re-raised in the consumer
            err.append(exc)
        finally:
            q.put(done)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    while (item := q.get()) is not done:
        yield item
    t.join()
    if err:
        raise err[0]


def _augmentation(cfg: TrainConfig) -> BatchAugment | None:
    if cfg.augment:
        return BatchAugment(scales=MULTISCALE if cfg.multiscale else (1.0,), zoom=cfg.zoom, color=cfg.color_jitter)
    return BatchAugment(0, 0, 0, 0, MULTISCALE) if cfg.multiscale else None


@contextlib.contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads in this thread (None: leave them), then restore them."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ImageBatches:
    """An epoch's batches of a 2D training set held in memory: normalised, augmented ``(x, y)`` tensors.

    ``batches(epoch)`` draws this process's share of the epoch (``proc.rank`` of ``proc.world``); the order
    and the augmentation are pure functions of (seed, epoch, rank). With ``cfg.workers >= 1`` a background
    thread prepares them, a few batches ahead. ``x`` comes in the model's memory format (channels_last with
    ``cfg.channels_last``), so the step does not copy it again.

    A batch is prepared with ``prep_threads`` intra-op threads (default 1, as PyTorch's DataLoader workers
    run). Its ops are small and memory-bound: on two cores that the training step or other processes share, a
    two-thread team mostly waits for its slower thread (docs/notes/issue-18.md, session 7). Of those ops only
    the bilinear multi-scale resize depends on the thread count (up to 2e-7, the difference between
    ``--threads 1`` and ``--threads 2`` as well). None prepares on the training's threads, as before session 7.
    """

    def __init__(self, imgs: torch.Tensor, masks: torch.Tensor, cfg: TrainConfig, proc: Processes,
                 mean: tuple[float, ...], std: tuple[float, ...], prep_threads: int | None = 1):
        self.imgs, self.masks, self.cfg, self.proc, self.prep_threads = imgs, masks, cfg, proc, prep_threads
        channels = imgs.shape[-1]
        self.mean = torch.tensor(mean[:channels]).view(1, -1, 1, 1)
        self.std = torch.tensor(std[:channels]).view(1, -1, 1, 1)
        self.augment = _augmentation(cfg)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format

    def __call__(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        it = self._draw(epoch)
        return prefetch(it) if self.cfg.workers >= 1 else it

    def _draw(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        cfg, rank, world = self.cfg, self.proc.rank, self.proc.world
        g_order = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        g_aug = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, rank + 1))
        order = torch.randperm(self.imgs.shape[0], generator=g_order)[rank::world]
        bs = cfg.batch_size
        steps = max(1, len(order) // bs)  # drop the last incomplete batch (BatchNorm on 1 image is noise)
        if cfg.max_steps_per_epoch:
            steps = min(steps, cfg.max_steps_per_epoch)
        for s in range(steps):
            with intra_op_threads(self.prep_threads):  # not across the yield: the step keeps its threads
                batch = self._batch(order[s * bs:(s + 1) * bs], g_aug)
            yield batch

    def _batch(self, idx: torch.Tensor, g_aug: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        augment = self.augment
        x = self.imgs[idx].permute(0, 3, 1, 2).float().div_(255.0)  # NCHW shape, NHWC (channels_last) layout
        if augment is not None:
            x = augment.jitter_colors(x, g_aug)
        # the flips, rotations and resampling below are several times faster on a contiguous NCHW tensor than
        # on the channels_last view, and exact either way
        x = (x.contiguous() - self.mean) / self.std
        y = self.masks[idx].long()
        if augment is not None:
            x, y = augment(x, y, g_aug)
        return x.contiguous(memory_format=self.memory_format), y


def train(cfg: TrainConfig, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ``cfg.model`` as ``cfg`` says; returns where the checkpoints are and the best metrics.

    2D models train on images (:func:`train_images`), 3D models (``spatial_dims == 3``) on volume patches
    (:func:`edgeseg.train.volume_loop.train_volumes`); both run on :class:`edgeseg.train.engine.Trainer`.

    Raises:
        ValueError / FileNotFoundError: bad settings or data (one-line messages), or ``--resume`` of a run
            of another model.

    Examples:
        >>> res = train(TrainConfig("ultralightunet-t", data="synthetic", epochs=3, img_size=96, out="runs/t"))
        >>> res.best["val_dice"]
    """
    from edgeseg.models import get_model_cfg

    cfg.check()
    mcfg = get_model_cfg(cfg.model)
    if cfg.img_size % mcfg.divisible_by:
        raise ValueError(f"--img-size {cfg.img_size} does not suit {cfg.model}: it must be a multiple of "
                         f"{mcfg.divisible_by}")
    if mcfg.spatial_dims == 3:
        from edgeseg.train.volume_loop import train_volumes

        if cfg.zoom or cfg.color_jitter:
            raise ValueError(f"--zoom and --color-jitter are 2D augmentations; {cfg.model} trains on volumes "
                             "(flips only): drop them")
        return train_volumes(cfg, on_epoch)
    return train_images(cfg, on_epoch)


def train_images(cfg: TrainConfig, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train a 2D model on an image/mask folder or synthetic images (see the module docstring); called by
    :func:`train`, which checks ``cfg`` first."""
    from edgeseg.models import get_model_cfg

    mcfg = get_model_cfg(cfg.model)
    proc = start_processes(cfg)
    color = "gray" if mcfg.in_channels == 1 else "rgb"
    t0 = time.perf_counter()
    train_ds, val_ds, tspec, vspec = open_train_val(cfg.data, cfg.val, cfg.img_size, cfg.mask_mode, color,
                                                    cfg.seed, cfg.synthetic_train)
    if len(train_ds) < cfg.batch_size * proc.world:
        raise ValueError(f"{tspec.source}: {len(train_ds)} training pairs is fewer than one batch "
                         f"({cfg.batch_size} x {proc.world} processes); lower --batch-size")
    imgs, masks = to_memory(train_ds, cfg.workers)
    val_pairs = _MemoryPairs(*to_memory(val_ds, cfg.workers)) if proc.main else None
    if proc.main:
        from edgeseg.data.folder import warn_if_no_foreground

        warn_if_no_foreground(masks, f"{tspec.source} (train)", log)
        warn_if_no_foreground(val_pairs.masks, f"{vspec.source} (val)", log)
        log(f"data: {len(train_ds)} train ({tspec.source}, split {tspec.split}), {len(val_ds)} val "
            f"({vspec.source}, split {vspec.split}), loaded in {time.perf_counter() - t0:.1f} s")

    preprocessing = preprocessing_dict((cfg.img_size, cfg.img_size), mcfg.mean, mcfg.std, color)
    data = TrainData(ImageBatches(imgs, masks, cfg, proc, mcfg.mean, mcfg.std), imgs.shape[0], tspec, vspec,
                     preprocessing, recipe={"scales": list(MULTISCALE) if cfg.multiscale else [1.0]})

    def validate(model: torch.nn.Module):
        return evaluate_pairs(model, val_pairs, preprocessing, cfg.num_classes, batch_size=16, device=proc.device,
                              ids=val_ds.ids, channels_last=cfg.channels_last)

    model_kwargs = {"num_classes": cfg.num_classes, "in_channels": mcfg.in_channels, **model_options(cfg)}
    trainer = Trainer(cfg, data, validate if proc.main else None, model_kwargs=model_kwargs, proc=proc,
                      channels_last=cfg.channels_last)
    return trainer.fit(on_epoch)

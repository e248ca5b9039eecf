"""The training loop behind ``edgeseg train``.

Recipe: AdamW, linear warm-up then cosine decay (per step), gradient clipping at 0.5, AMP on CUDA, loss by
task (see :mod:`edgeseg.train.losses`), per-epoch validation, the best-by-val-Dice checkpoint kept.

The training set is decoded once and held in memory at the training size (uint8), and batches are assembled
and augmented on tensors (optionally in a background thread), so the step never waits on per-sample Python
code. Randomness is a pure function of (seed, epoch, rank): a resumed run draws exactly the batches the
uninterrupted run would have. Multi-process training (``torchrun --nproc_per_node N -m edgeseg train ...``)
uses DistributedDataParallel (gloo on CPU, NCCL on CUDA); rank 0 validates and writes checkpoints.
"""

from __future__ import annotations

import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeseg._io import atomic_write_json, atomic_write_text
from edgeseg.data.sources import open_train_val
from edgeseg.data.transforms import MULTISCALE, BatchAugment, preprocessing_dict
from edgeseg.train.checkpoint import build_checkpoint, load_resume_state, save_checkpoint
from edgeseg.train.evaluate import evaluate_pairs
from edgeseg.train.losses import attention_regularizer, compute_loss, default_loss, get_loss


@dataclass
class TrainConfig:
    """Everything that defines a training run (recorded in the checkpoint as its recipe).

    Attributes:
        model: registry name.
        data: dataset folder or "synthetic[:N]".
        val: validation folder or "synthetic[:N]" (default: the data's val split or a 10% hold-out).
        epochs: training epochs.
        img_size: square training size (a multiple of 32).
        batch_size: images per step and process.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        warmup_epochs: linear warm-up length in epochs (may be fractional).
        min_lr_ratio: the cosine ends at ``lr * min_lr_ratio``.
        clip: gradient-norm clipping (0 disables).
        out: run folder (best.pt, last.pt, history.json).
        resume: continue from ``out/last.pt``.
        device: "cpu", "cuda" or "auto".
        workers: threads decoding the dataset; >= 1 also prepares batches in a background thread.
        threads: torch intra-op threads (None keeps torch's default).
        seed: seed of every random choice.
        num_classes: output channels (1 = binary).
        mask_mode: "binary" or "labels".
        loss: loss name (default by task).
        multiscale: train at {0.75, 1, 1.25} x img_size.
        augment: flips and rotations.
        channels_last: channels_last memory format (faster convolutions on CPU).
        compile: ``torch.compile`` the model for training.
        amp: mixed precision on CUDA.
        init: a checkpoint to start from (fine-tuning), or None for random initialisation.
        synthetic_train: synthetic training samples when data is "synthetic".
        progress: show a progress bar.
        max_steps_per_epoch: cap on steps per epoch (for quick checks; None = full epochs).
    """

    model: str
    data: str = "synthetic"
    val: str | None = None
    epochs: int = 50
    img_size: int = 256
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    clip: float = 0.5
    out: str = "runs/model"
    resume: bool = False
    device: str = "auto"
    workers: int = 0
    threads: int | None = None
    seed: int = 0
    num_classes: int = 1
    mask_mode: str = "binary"
    loss: str | None = None
    multiscale: bool = True
    augment: bool = True
    channels_last: bool = True
    compile: bool = False
    amp: bool = True
    init: str | None = None
    synthetic_train: int = 400
    progress: bool = True
    max_steps_per_epoch: int | None = None

    def check(self) -> None:
        """Raise ValueError for settings that cannot work, saying what to use instead."""
        if self.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.img_size < 32 or self.img_size % 32:
            raise ValueError(f"--img-size must be a positive multiple of 32, got {self.img_size}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"--device must be cpu, cuda or auto, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")


@dataclass
class TrainResult:
    """What a run produced."""

    out: Path
    best_path: Path
    last_path: Path
    best: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def _to_memory(ds, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
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


def _epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2**63)


def _batches(imgs: torch.Tensor, masks: torch.Tensor, cfg: TrainConfig, epoch: int, rank: int, world: int,
             mean: torch.Tensor, std: torch.Tensor, augment: BatchAugment | None) -> Iterator[tuple]:
    g_order = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch))
    g_aug = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch, rank + 1))
    order = torch.randperm(imgs.shape[0], generator=g_order)[rank::world]
    bs = cfg.batch_size
    steps = max(1, len(order) // bs)  # drop the last incomplete batch (BatchNorm on 1 image is noise)
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    for s in range(steps):
        idx = order[s * bs:(s + 1) * bs]
        x = imgs[idx].permute(0, 3, 1, 2).float().div_(255.0)
        x = (x - mean) / std
        y = masks[idx].long()
        if augment is not None:
            x, y = augment(x, y, g_aug)
        yield x.contiguous(), y


def _prefetch(it: Iterator, depth: int = 3) -> Iterator:
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


def lr_lambda(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the peak lr at ``step``: linear warm-up, then cosine down to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True, leave=False,
                mininterval=0.5 if sys.stderr.isatty() else 30.0)


def train(cfg: TrainConfig, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ``cfg.model`` as ``cfg`` says; returns where the checkpoints are and the best metrics.

    Raises:
        ValueError / FileNotFoundError: bad settings or data (one-line messages), or ``--resume`` of a run
            of another model.

    Examples:
        >>> res = train(TrainConfig("ultralightunet-t", data="synthetic", epochs=3, img_size=96, out="runs/t"))
        >>> res.best["val_dice"]
    """
    from edgeseg.models import create_model, get_model_cfg

    cfg.check()
    mcfg = get_model_cfg(cfg.model)
    if mcfg.spatial_dims != 2:
        raise ValueError(f"{cfg.model} is a 3D model; `edgeseg train` trains 2D image models "
                         "(use edgeseg.data.volumes for NIfTI patch training from Python)")
    world, rank, local_rank = _dist_info()
    distributed = world > 1
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if distributed:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    main_proc = rank == 0
    out = Path(cfg.out)
    if main_proc:
        out.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out / "last.pt", out / "best.pt"

    resume_ckpt = load_resume_state(last_path, cfg.model) if cfg.resume else None
    color = "gray" if mcfg.in_channels == 1 else "rgb"
    t0 = time.perf_counter()
    train_ds, val_ds, tspec, vspec = open_train_val(cfg.data, cfg.val, cfg.img_size, cfg.mask_mode, color,
                                                    cfg.seed, cfg.synthetic_train)
    if len(train_ds) < cfg.batch_size * world:
        raise ValueError(f"{tspec.source}: {len(train_ds)} training pairs is fewer than one batch "
                         f"({cfg.batch_size} x {world} processes); lower --batch-size")
    imgs, masks = _to_memory(train_ds, cfg.workers)
    val_pairs = _MemoryPairs(*_to_memory(val_ds, cfg.workers)) if main_proc else None
    if main_proc:
        _log(f"data: {len(train_ds)} train ({tspec.source}, split {tspec.split}), {len(val_ds)} val "
             f"({vspec.source}, split {vspec.split}), loaded in {time.perf_counter() - t0:.1f} s")

    model_kwargs = {"num_classes": cfg.num_classes, "in_channels": mcfg.in_channels}
    model = create_model(cfg.model, **model_kwargs)
    if cfg.init:
        from edgeseg.weights import load_weights

        load_weights(model, cfg.init, expected_model=cfg.model)
        if main_proc:
            _log(f"initialised from {cfg.init}")
    elif main_proc and resume_ckpt is None:
        _log(f"{cfg.model}: starting from random initialisation")
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    loss_name = cfg.loss or default_loss(cfg.num_classes, mcfg.spatial_dims)
    loss_fn = get_loss(loss_name)
    steps_per_epoch = max(1, (imgs.shape[0] // world) // cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_lambda(s, total_steps, warmup, cfg.min_lr_ratio))
    scaler = torch.amp.GradScaler("cuda", enabled=use_cuda and cfg.amp)

    preprocessing = preprocessing_dict((cfg.img_size, cfg.img_size), mcfg.mean, mcfg.std, color)
    recipe = {**asdict(cfg), "loss": loss_name, "optimizer": "AdamW", "schedule": "warmup+cosine",
              "train_data": tspec.to_dict(), "val_data": vspec.to_dict(), "world_size": world,
              "scales": list(MULTISCALE) if cfg.multiscale else [1.0],
              "attention_regularizer": attention_regularizer(model) is not None}
    recipe.pop("resume", None)
    start_epoch, history, best, elapsed = 0, [], {"val_dice": -1.0}, 0.0
    if resume_ckpt is not None:
        st = resume_ckpt["train_state"]
        model.load_state_dict(resume_ckpt["state_dict"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        if st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        torch.set_rng_state(st["torch_rng"])
        start_epoch, history, best, elapsed = st["epoch"], st["history"], st["best"], st["elapsed_s"]
        if main_proc:
            _log(f"resuming {last_path} after epoch {start_epoch} (best val Dice {best['val_dice']:.4f})")
        if start_epoch >= cfg.epochs and main_proc:
            _log(f"nothing to do: the run already has {start_epoch} epochs (raise --epochs to train longer)")

    train_model = model
    if cfg.compile:
        train_model = torch.compile(model)
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        # find_unused_parameters: heads that the forward pass skips (e.g. deep-supervision heads) get no
        # gradient, which DDP otherwise treats as an error
        train_model = DistributedDataParallel(train_model, device_ids=[local_rank] if use_cuda else None,
                                              find_unused_parameters=True)
    mean = torch.tensor(mcfg.mean[: mcfg.in_channels]).view(1, -1, 1, 1)
    std = torch.tensor(mcfg.std[: mcfg.in_channels]).view(1, -1, 1, 1)
    augment = None
    if cfg.augment or cfg.multiscale:
        augment = BatchAugment(scales=MULTISCALE if cfg.multiscale else (1.0,)) if cfg.augment else \
            BatchAugment(0, 0, 0, 0, MULTISCALE)

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        t_ep = time.perf_counter()
        it = _batches(imgs, masks, cfg, epoch, rank, world, mean, std, augment)
        if cfg.workers >= 1:
            it = _prefetch(it)
        bar = _progress(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress and main_proc)
        loss_sum, seen = 0.0, 0
        for x, y in it:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", enabled=use_cuda and cfg.amp):
                loss, _ = compute_loss(train_model, x, y, loss_fn)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            if not math.isfinite(loss.item()):
                raise ValueError(f"training diverged at epoch {epoch + 1} (loss {loss.item()}); lower --lr")
            loss_sum += loss.item() * x.shape[0]
            seen += x.shape[0]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}",
                                img_s=f"{seen * world / (time.perf_counter() - t_ep):.1f}")
        if bar is not None:
            bar.close()
        train_s = time.perf_counter() - t_ep
        row: dict[str, Any] = {"epoch": epoch + 1, "loss": loss_sum / max(1, seen),
                               "lr": sched.get_last_lr()[0], "train_s": round(train_s, 2),
                               "images_per_s": round(seen * world / train_s, 2)}
        if main_proc:
            t_val = time.perf_counter()
            res = evaluate_pairs(model, val_pairs, preprocessing, cfg.num_classes, batch_size=16,
                                 device=device, ids=val_ds.ids, channels_last=cfg.channels_last)
            row.update({f"val_{k}": v for k, v in res.mean.items()})
            row["val_s"] = round(time.perf_counter() - t_val, 2)
            elapsed += time.perf_counter() - t_ep
            row["elapsed_s"] = round(elapsed, 1)
            history.append(row)
            metrics = {"val_dice": row["val_dice"], "val_iou": row["val_iou"], "epoch": epoch + 1,
                       "val_n": len(val_ds), "elapsed_s": row["elapsed_s"]}
            improved = row["val_dice"] > best["val_dice"]
            if improved:
                best = metrics
                save_checkpoint(build_checkpoint(model, cfg.model, model_kwargs, preprocessing, best, recipe),
                                best_path)
            ckpt = build_checkpoint(model, cfg.model, model_kwargs, preprocessing, metrics, recipe)
            ckpt["train_state"] = {"epoch": epoch + 1, "optimizer": opt.state_dict(),
                                   "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                                   "torch_rng": torch.get_rng_state(), "history": history, "best": best,
                                   "elapsed_s": elapsed}
            save_checkpoint(ckpt, last_path)
            atomic_write_json(out / "history.json", history)
            atomic_write_text(out / "history.csv", _history_csv(history))
            _log(f"epoch {epoch + 1}/{cfg.epochs}  loss {row['loss']:.4f}  val Dice {row['val_dice']:.4f}  "
                 f"IoU {row['val_iou']:.4f}  {row['images_per_s']:.1f} img/s  {train_s:.0f}+{row['val_s']:.0f} s"
                 + ("  *best" if improved else ""))
            if on_epoch is not None:
                on_epoch(row)
        if distributed:
            torch.distributed.barrier()
    if distributed:
        torch.distributed.destroy_process_group()
    return TrainResult(out, best_path, last_path, best, history)


def _history_csv(history: list[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for row in history for k in row))
    lines = [",".join(keys)] + [",".join(str(row.get(k, "")) for k in keys) for row in history]
    return "\n".join(lines) + "\n"

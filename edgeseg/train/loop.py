"""The training loop behind ``edgeseg train``.

Recipe: AdamW, linear warm-up then cosine decay (per step), gradient-norm clipping (``--clip``, 0.5), mixed
precision (``--amp``: fp16 with loss scaling on CUDA, bf16 on CPUs with native bf16; by default on CUDA only),
the skip attention of ``--skip-attention`` (recorded in the checkpoint's ``model_kwargs``), loss by task (see
:mod:`edgeseg.train.losses`), optionally a moving average of the weights (``--ema``, see
:mod:`edgeseg.train.ema`), per-epoch validation, the best-by-val-Dice checkpoint kept. The settings are
:class:`edgeseg.train.config.TrainConfig`.

The training set is decoded once and held in memory at the training size (uint8), and batches are assembled
and augmented on tensors (optionally in a background thread), so the step never waits on per-sample Python
code. Randomness is a pure function of (seed, epoch, rank): a resumed run draws exactly the batches the
uninterrupted run would have. Multi-process training (``torchrun --nproc_per_node N -m edgeseg train ...``)
uses DistributedDataParallel (gloo on CPU, NCCL on CUDA); rank 0 validates and writes checkpoints.
"""

from __future__ import annotations

import contextlib
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

from edgeseg.common.errors import first_line
from edgeseg.common.io import atomic_write_json, atomic_write_text
from edgeseg.data.sources import open_train_val
from edgeseg.data.transforms import MULTISCALE, BatchAugment, preprocessing_dict
from edgeseg.train.checkpoint import build_checkpoint, cpu_state_dict, load_resume_state, save_checkpoint
from edgeseg.train.config import TrainConfig
from edgeseg.train.ema import WeightEMA
from edgeseg.train.evaluate import evaluate_pairs
from edgeseg.train.losses import attention_regularizer, check_loss, compute_loss, default_loss, get_loss


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
        if augment is not None:
            x = augment.jitter_colors(x, g_aug)
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
    """A per-step bar on a terminal only: redirected to a file or a CI log, the run prints its epoch lines
    and nothing per step (a bar there writes a carriage-return line per refresh)."""
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True, leave=False,
                mininterval=0.5)


@dataclass
class _Run:
    """The pieces every training loop (2D images, 3D volumes) shares: process layout, model, optimiser,
    schedule, restored state and where checkpoints go."""

    cfg: TrainConfig
    device: torch.device
    use_cuda: bool
    world: int
    rank: int
    distributed: bool
    out: Path
    model: torch.nn.Module
    model_kwargs: dict[str, Any]
    train_model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    scaler: Any
    loss_fn: Callable
    loss_name: str
    steps_per_epoch: int
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"val_dice": -1.0})
    elapsed: float = 0.0
    # None until the first step of a --compile run has gone through; then "" (compiled fine) or the error that
    # made the run fall back to eager mode
    compile_error: str | None = None
    ema: WeightEMA | None = None
    amp_dtype: torch.dtype | None = None  # autocast dtype of --amp (None: fp32)

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are validated and saved: the moving average under ``--ema``, else the model."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def main_proc(self) -> bool:
        return self.rank == 0

    @property
    def best_path(self) -> Path:
        return self.out / "best.pt"

    @property
    def last_path(self) -> Path:
        return self.out / "last.pt"


def _start_process(cfg: TrainConfig) -> tuple[int, int, int, bool, bool, torch.device]:
    """(world, rank, local_rank, distributed, use_cuda, device); joins the process group under torchrun."""
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
    return world, rank, local_rank, distributed, use_cuda, device


def amp_dtype(cfg: TrainConfig, use_cuda: bool) -> torch.dtype | None:
    """The autocast dtype ``--amp`` means on this device: fp16 on CUDA, bf16 on a CPU with native bf16, None for
    fp32 ("off", or "auto" on CPU).

    Raises:
        ValueError: ``--amp on`` on a CPU without native bf16 (emulated bf16 is slower than fp32).
    """
    from edgeseg.train.config import cpu_has_native_bf16

    mode = cfg.amp_mode
    if mode == "off" or (mode == "auto" and not use_cuda):
        return None
    if use_cuda:
        return torch.float16
    if not cpu_has_native_bf16():
        raise ValueError("--amp on: this CPU has no native bf16 (AVX512-BF16, AMX or Arm BF16), so bf16 autocast "
                         "would be emulated and slower than fp32; use --amp off (or train on a GPU)")
    return torch.bfloat16


def model_options(cfg: TrainConfig) -> dict[str, Any]:
    """The builder options a run sets beyond classes and channels (``--skip-attention``); they go into the
    checkpoint's ``model_kwargs``, from which :func:`edgeseg.weights.resolve` rebuilds the same model."""
    return {"skip_attention": cfg.skip_attention} if cfg.skip_attention is not None else {}


def _check_resume_model(path: Path, saved: dict[str, Any], asked: dict[str, Any]) -> None:
    diff = sorted(k for k in set(saved) | set(asked) if saved.get(k) != asked.get(k))
    if diff:
        raise ValueError(f"{path}: the run's model was built with "
                         f"{', '.join(f'{k}={saved.get(k)!r}' for k in diff)}; resume it with the same settings "
                         f"(asked for {', '.join(f'{k}={asked.get(k)!r}' for k in diff)})")


def _prepare(cfg: TrainConfig, mcfg, model_kwargs: dict[str, Any], n_train_items: int, proc: tuple,
             channels_last: bool) -> _Run:
    """Build the model (optionally from ``--init``), optimiser, schedule, AMP scaler; restore ``--resume``."""
    from edgeseg.models import create_model

    world, rank, _, distributed, use_cuda, device = proc
    main_proc = rank == 0
    out = Path(cfg.out)
    if main_proc:
        out.mkdir(parents=True, exist_ok=True)
        from edgeseg.common.io import clean_stale

        clean_stale(out)  # checkpoint temporaries a killed run left (.last.pt.XXXX.pt)
    resume_ckpt = load_resume_state(out / "last.pt", cfg.model) if cfg.resume else None
    model = create_model(cfg.model, **model_kwargs)
    if cfg.init:
        from edgeseg.weights import load_weights

        load_weights(model, cfg.init, expected_model=cfg.model)
        if main_proc:
            _log(f"initialised from {cfg.init}")
    elif main_proc and resume_ckpt is None:
        _log(f"{cfg.model}: starting from random initialisation")
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last if mcfg.spatial_dims == 2 else torch.channels_last_3d)
    loss_name = cfg.loss or default_loss(cfg.num_classes, mcfg.spatial_dims)
    check_loss(loss_name, cfg.num_classes, mcfg.spatial_dims)
    steps_per_epoch = max(1, (n_train_items // world) // cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_lambda(s, total_steps, warmup, cfg.min_lr_ratio))
    dtype = amp_dtype(cfg, use_cuda)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)  # bf16 needs no loss scaling
    run = _Run(cfg, device, use_cuda, world, rank, distributed, out, model, model_kwargs, model, opt, sched,
               scaler, get_loss(loss_name), loss_name, steps_per_epoch, amp_dtype=dtype)
    if cfg.ema:
        run.ema = WeightEMA(model, cfg.ema)
    if resume_ckpt is not None:
        _check_resume_model(run.last_path, resume_ckpt.get("model_kwargs") or {}, model_kwargs)
        st = resume_ckpt["train_state"]
        saved_ema = resume_ckpt.get("recipe", {}).get("ema", 0.0)
        if saved_ema != cfg.ema:
            raise ValueError(f"{run.last_path}: the run was trained with --ema {saved_ema}; resume it with the "
                             f"same --ema (asked for {cfg.ema})")
        if run.ema is not None:  # last.pt's weights are the average; the trained ones are in its state
            model.load_state_dict(st["model_state_dict"])
            run.ema.load(resume_ckpt["state_dict"], st["ema"])
        else:
            model.load_state_dict(resume_ckpt["state_dict"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        if st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        torch.set_rng_state(st["torch_rng"])
        run.start_epoch, run.history, run.best, run.elapsed = (st["epoch"], st["history"], st["best"],
                                                               st["elapsed_s"])
        if main_proc:
            _log(f"resuming {run.last_path} after epoch {run.start_epoch} "
                 f"(best val Dice {run.best['val_dice']:.4f})")
        if run.start_epoch >= cfg.epochs and main_proc:
            _log(f"nothing to do: the run already has {run.start_epoch} epochs (raise --epochs to train longer)")
    run.train_model = _wrap(run, torch.compile(model) if cfg.compile else model)
    return run


def _wrap(run: _Run, model: torch.nn.Module) -> torch.nn.Module:
    """``model`` as the training step calls it: under DDP when the run is distributed."""
    if not run.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    # find_unused_parameters: heads that the forward pass skips (e.g. deep-supervision heads) get no
    # gradient, which DDP otherwise treats as an error
    return DistributedDataParallel(model, device_ids=[run.device.index] if run.use_cuda else None,
                                   find_unused_parameters=True)


def _forward_backward(run: _Run, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    amp = (torch.autocast(run.device.type, dtype=run.amp_dtype) if run.amp_dtype is not None
           else contextlib.nullcontext())
    with amp:
        loss, _ = compute_loss(run.train_model, x, y, run.loss_fn)
    run.opt.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    return loss


def _step(run: _Run, x: torch.Tensor, y: torch.Tensor, epoch: int) -> float:
    """One optimisation step (forward, loss, backward, clip, AdamW, schedule); returns the loss."""
    cfg = run.cfg
    if cfg.compile and run.compile_error is None:
        # torch.compile builds the kernels on the first forward and backward; an inductor failure there (e.g.
        # torch 2.13's CPU codegen bug "cannot access local variable 'bufNN'" that this model hits with 2
        # threads) should cost the speed-up, not the run. Nothing has been stepped yet, so retrying eager is
        # safe (only BatchNorm's running statistics saw this batch once more).
        try:
            loss = _forward_backward(run, x, y)
            run.compile_error = ""
        except Exception as e:  # noqa: BLE001 - inductor/dynamo failures have many types; memory is not one
            if isinstance(e, torch.cuda.OutOfMemoryError):
                raise
            msg = f"{type(e).__name__}: {first_line(e)}"
            run.compile_error = msg
            if run.rank == 0:
                _log(f"WARNING: torch.compile failed on the first training step ({msg}); "
                     "training continues without --compile (eager mode)")
            run.train_model = _wrap(run, run.model)
            loss = _forward_backward(run, x, y)
    else:
        loss = _forward_backward(run, x, y)
    if cfg.clip > 0:
        run.scaler.unscale_(run.opt)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.clip)
    run.scaler.step(run.opt)
    run.scaler.update()
    run.sched.step()
    if run.ema is not None:
        run.ema.update(run.model)
    value = loss.item()
    if not math.isfinite(value):
        raise ValueError(f"training diverged at epoch {epoch + 1} (loss {value}); lower --lr")
    return value


def _recipe(run: _Run, tspec, vspec, **extra: Any) -> dict[str, Any]:
    recipe = {**asdict(run.cfg), "loss": run.loss_name, "optimizer": "AdamW", "schedule": "warmup+cosine",
              "train_data": tspec.to_dict(), "val_data": vspec.to_dict(), "world_size": run.world,
              "attention_regularizer": attention_regularizer(run.model) is not None, "amp": run.cfg.amp_mode,
              "amp_dtype": {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[run.amp_dtype],
              "skip_attention": run.model_kwargs.get("skip_attention", _default_option(run.cfg.model,
                                                                                         "skip_attention")),
              **extra}
    recipe.pop("resume", None)
    return recipe


def _default_option(model: str, name: str) -> Any:
    from edgeseg.models import get_model_cfg

    return get_model_cfg(model).options.get(name)


def _end_epoch(run: _Run, epoch: int, row: dict[str, Any], res, t_ep: float, n_val: int,
               preprocessing: dict[str, Any], recipe: dict[str, Any],
               on_epoch: Callable[[dict[str, Any]], None] | None) -> None:
    """Rank 0: record validation ``res``, write best.pt (if improved), last.pt and the history; log a line."""
    row.update({f"val_{k}": v for k, v in res.mean.items()})
    run.elapsed += time.perf_counter() - t_ep
    row["elapsed_s"] = round(run.elapsed, 1)
    run.history.append(row)
    metrics = {"val_dice": row["val_dice"], "val_iou": row["val_iou"], "epoch": epoch + 1,
               "val_n": n_val, "elapsed_s": row["elapsed_s"]}
    if run.compile_error:  # the recipe says what the run really did
        recipe.update(compile=False, compile_error=run.compile_error)
    improved = row["val_dice"] > run.best["val_dice"]
    if improved:
        run.best = metrics
        save_checkpoint(build_checkpoint(run.eval_model, run.cfg.model, run.model_kwargs, preprocessing, metrics,
                                         recipe), run.best_path)
    ckpt = build_checkpoint(run.eval_model, run.cfg.model, run.model_kwargs, preprocessing, metrics, recipe)
    ckpt["train_state"] = {"epoch": epoch + 1, "optimizer": run.opt.state_dict(),
                           "scheduler": run.sched.state_dict(), "scaler": run.scaler.state_dict(),
                           "torch_rng": torch.get_rng_state(), "history": run.history, "best": run.best,
                           "elapsed_s": run.elapsed}
    if run.ema is not None:
        ckpt["train_state"].update(model_state_dict=cpu_state_dict(run.model), ema=run.ema.state())
    save_checkpoint(ckpt, run.last_path)
    atomic_write_json(run.out / "history.json", run.history)
    atomic_write_text(run.out / "history.csv", _history_csv(run.history))
    _log(f"epoch {epoch + 1}/{run.cfg.epochs}  loss {row['loss']:.4f}  val Dice {row['val_dice']:.4f}  "
         f"IoU {row['val_iou']:.4f}  {row['images_per_s']:.1f} {row.get('unit', 'img')}/s  "
         f"{row['train_s']:.0f}+{row['val_s']:.0f} s" + ("  *best" if improved else ""))
    if on_epoch is not None:
        on_epoch(row)


def _finish(run: _Run) -> TrainResult:
    if run.distributed:
        torch.distributed.destroy_process_group()
    return TrainResult(run.out, run.best_path, run.last_path, run.best, run.history)


def train(cfg: TrainConfig, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ``cfg.model`` as ``cfg`` says; returns where the checkpoints are and the best metrics.

    3D models (``spatial_dims == 3``) train on volume patches (see :mod:`edgeseg.train.volume_loop`).

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

        return train_volumes(cfg, mcfg, on_epoch)
    proc = _start_process(cfg)
    world, rank = proc[0], proc[1]
    main_proc = rank == 0
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
        from edgeseg.data.folder import warn_if_no_foreground

        warn_if_no_foreground(masks, f"{tspec.source} (train)", _log)
        warn_if_no_foreground(val_pairs.masks, f"{vspec.source} (val)", _log)
        _log(f"data: {len(train_ds)} train ({tspec.source}, split {tspec.split}), {len(val_ds)} val "
             f"({vspec.source}, split {vspec.split}), loaded in {time.perf_counter() - t0:.1f} s")

    model_kwargs = {"num_classes": cfg.num_classes, "in_channels": mcfg.in_channels, **model_options(cfg)}
    run = _prepare(cfg, mcfg, model_kwargs, imgs.shape[0], proc, cfg.channels_last)
    preprocessing = preprocessing_dict((cfg.img_size, cfg.img_size), mcfg.mean, mcfg.std, color)
    recipe = _recipe(run, tspec, vspec, scales=list(MULTISCALE) if cfg.multiscale else [1.0])
    mean = torch.tensor(mcfg.mean[: mcfg.in_channels]).view(1, -1, 1, 1)
    std = torch.tensor(mcfg.std[: mcfg.in_channels]).view(1, -1, 1, 1)
    augment = None
    if cfg.augment or cfg.multiscale:
        augment = BatchAugment(scales=MULTISCALE if cfg.multiscale else (1.0,), zoom=cfg.zoom,
                               color=cfg.color_jitter) if cfg.augment else \
            BatchAugment(0, 0, 0, 0, MULTISCALE)

    for epoch in range(run.start_epoch, cfg.epochs):
        run.model.train()
        t_ep = time.perf_counter()
        it = _batches(imgs, masks, cfg, epoch, rank, world, mean, std, augment)
        if cfg.workers >= 1:
            it = _prefetch(it)
        bar = _progress(run.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress and main_proc)
        loss_sum, seen = 0.0, 0
        for x, y in it:
            x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss_sum += _step(run, x, y, epoch) * x.shape[0]
            seen += x.shape[0]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}",
                                img_s=f"{seen * world / (time.perf_counter() - t_ep):.1f}", refresh=False)
        if bar is not None:
            bar.close()
        train_s = time.perf_counter() - t_ep
        row: dict[str, Any] = {"epoch": epoch + 1, "loss": loss_sum / max(1, seen),
                               "lr": run.sched.get_last_lr()[0], "train_s": round(train_s, 2),
                               "images_per_s": round(seen * world / train_s, 2)}
        if main_proc:
            t_val = time.perf_counter()
            res = evaluate_pairs(run.eval_model, val_pairs, preprocessing, cfg.num_classes, batch_size=16,
                                 device=run.device, ids=val_ds.ids, channels_last=cfg.channels_last)
            row["val_s"] = round(time.perf_counter() - t_val, 2)
            _end_epoch(run, epoch, row, res, t_ep, len(val_ds), preprocessing, recipe, on_epoch)
        if run.distributed:
            torch.distributed.barrier()
    return _finish(run)


def _history_csv(history: list[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for row in history for k in row))
    lines = [",".join(keys)] + [",".join(str(row.get(k, "")) for k in keys) for row in history]
    return "\n".join(lines) + "\n"

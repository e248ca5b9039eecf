"""The one training engine: :class:`Trainer` runs every training run, 2D images and 3D volumes alike.

What differs between kinds of data is injected, the way MONAI's ``SupervisedTrainer`` takes ``prepare_batch``
and an ``inferer``:

- :class:`TrainData`: the batches of an epoch (for this process), how many items an epoch has, the data's
  provenance, the pre-processing inference must repeat, and what the data adds to the checkpoint's recipe;
- a validator: ``validate(model) -> EvalResult``, run by rank 0 after every epoch;
- ``prepare_batch(batch, device) -> (x, y)``: moves a batch onto the device in the model's memory format.

The engine owns everything else: the model (random, ``--init`` or ``--resume``), AdamW, the per-step warm-up +
cosine schedule, ``--clip``, ``--amp``, ``--ema``, ``--compile`` with its eager fallback, DDP under torchrun,
the per-epoch history and the atomic best.pt / last.pt / history.json|csv. The 2D front end is
:mod:`edgeseg.train.loop`, the 3D one :mod:`edgeseg.train.volume_loop`.

Examples:
    >>> proc = start_processes(cfg)  # before the data: rank 0 alone reads the validation set
    >>> data = TrainData(batches=my_batches, n_items=len(ds), train_spec=tspec, val_spec=vspec,
    ...                  preprocessing=pre)  # my_batches(epoch) yields (x, y) pairs
    >>> trainer = Trainer(cfg, data, lambda model: evaluate_pairs(model, val, pre), proc=proc,
    ...                   model_kwargs={"num_classes": 1, "in_channels": 3}, prepare_batch=my_prepare)
    >>> result = trainer.fit()
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgeseg.common.errors import first_line
from edgeseg.common.io import atomic_write_json, atomic_write_text
from edgeseg.data.sources import DataSpec
from edgeseg.train.checkpoint import build_checkpoint, cpu_state_dict, load_resume_state, save_checkpoint
from edgeseg.train.config import TrainConfig, cpu_has_native_bf16
from edgeseg.train.ema import WeightEMA
from edgeseg.train.evaluate import EvalResult
from edgeseg.train.losses import attention_regularizer, check_loss, compute_loss, default_loss, get_loss
from edgeseg.train.process import Processes, epoch_seed, log, start_processes

__all__ = ["Trainer", "TrainData", "TrainResult", "Processes", "start_processes", "epoch_seed", "log", "lr_lambda",
           "amp_dtype", "model_options", "steps_per_epoch", "to_device", "history_csv"]

Batch = Any
PrepareBatch = Callable[[Batch, torch.device], "tuple[torch.Tensor, torch.Tensor]"]
Validator = Callable[[torch.nn.Module], EvalResult]
_DTYPE_NAMES = {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
_ADAMW_FLAGS = {"foreach": {"foreach": True, "fused": None}, "loop": {"foreach": False, "fused": None},
                "fused": {"foreach": None, "fused": True}}


@dataclass
class TrainResult:
    """What a run produced."""

    out: Path
    best_path: Path
    last_path: Path
    best: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainData:
    """What a data front end gives the :class:`Trainer`.

    Attributes:
        batches: ``batches(epoch)`` yields this process's batches of that epoch (any objects that
            ``prepare_batch`` understands; by default ``(x, y)`` tensor pairs).
        n_items: training items (images, patches) per epoch over all processes; sets the steps per epoch.
        train_spec: provenance of the training data (for the recipe).
        val_spec: provenance of the validation data.
        preprocessing: what inference must repeat (the checkpoint's ``preprocessing``).
        recipe: what this kind of data adds to (or overrides in) the checkpoint's recipe.
        unit: what an item is, for the logs ("img", "patch"); a non-default unit is recorded in the history.
    """

    batches: Callable[[int], Iterable[Batch]]
    n_items: int
    train_spec: DataSpec
    val_spec: DataSpec
    preprocessing: dict[str, Any]
    recipe: dict[str, Any] = field(default_factory=dict)
    unit: str = "img"


def lr_lambda(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the peak lr at ``step``: linear warm-up, then cosine down to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def steps_per_epoch(n_items: int, cfg: TrainConfig, world: int) -> int:
    """Optimisation steps per epoch and process: whole batches of ``n_items / world``, at least one, at most
    ``--max-steps``."""
    steps = max(1, (n_items // world) // cfg.batch_size)
    return min(steps, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else steps


def amp_dtype(cfg: TrainConfig, use_cuda: bool) -> torch.dtype | None:
    """The autocast dtype ``--amp`` means on this device: fp16 on CUDA, bf16 on a CPU with native bf16, None for
    fp32 ("off", or "auto" on CPU).

    Raises:
        ValueError: ``--amp on`` on a CPU without native bf16 (emulated bf16 is slower than fp32).
    """
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


def to_device(batch: Batch, device: torch.device, memory_format: torch.memory_format | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The default ``prepare_batch``: an ``(x, y)`` pair on ``device``, ``x`` in ``memory_format`` if given."""
    x, y = batch
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if memory_format is not None:
        x = x.contiguous(memory_format=memory_format)
    return x, y


def history_csv(history: list[dict[str, Any]]) -> str:
    """The per-epoch rows as CSV (the union of their keys, in order of appearance)."""
    keys = list(dict.fromkeys(k for row in history for k in row))
    lines = [",".join(keys)] + [",".join(str(row.get(k, "")) for k in keys) for row in history]
    return "\n".join(lines) + "\n"


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


def _check_resume_model(path: Path, saved: dict[str, Any], asked: dict[str, Any]) -> None:
    diff = sorted(k for k in set(saved) | set(asked) if saved.get(k) != asked.get(k))
    if diff:
        raise ValueError(f"{path}: the run's model was built with "
                         f"{', '.join(f'{k}={saved.get(k)!r}' for k in diff)}; resume it with the same settings "
                         f"(asked for {', '.join(f'{k}={asked.get(k)!r}' for k in diff)})")


class Trainer:
    """Trains ``cfg.model`` on injected data, validating with an injected validator after every epoch.

    Args:
        cfg: the run's settings.
        data: the batches and what the checkpoint records about them.
        validate: ``validate(model) -> EvalResult`` on the validation data; rank 0 calls it (None elsewhere).
        model_kwargs: the builder options (classes, channels, ``model_options(cfg)``), recorded in checkpoints.
        proc: this process's place (:func:`start_processes`, called before the data is loaded).
        prepare_batch: ``prepare_batch(batch, device) -> (x, y)``; default :func:`to_device` (in channels_last
            when the model is).
        channels_last: keep the model (and, by default, the inputs) in the channels_last memory format.

    Raises:
        ValueError / FileNotFoundError: a loss that does not suit the task, an ``--init`` that does not fit,
            or a ``--resume`` whose checkpoint was trained with other settings.
    """

    def __init__(self, cfg: TrainConfig, data: TrainData, validate: Validator | None, *,
                 model_kwargs: dict[str, Any], proc: Processes, prepare_batch: PrepareBatch | None = None,
                 channels_last: bool = False):
        from edgeseg.models import get_model_cfg

        self.cfg, self.data, self.validate, self.proc = cfg, data, validate, proc
        self.model_kwargs = dict(model_kwargs)
        mcfg = get_model_cfg(cfg.model)
        memory_format = None
        if channels_last:
            memory_format = torch.channels_last if mcfg.spatial_dims == 2 else torch.channels_last_3d
        self.prepare_batch: PrepareBatch = prepare_batch or (
            lambda batch, device: to_device(batch, device, memory_format))
        self.out = Path(cfg.out)
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"val_dice": -1.0}
        self.start_epoch, self.elapsed = 0, 0.0
        # None until the first step of a --compile run has gone through; then "" (compiled fine) or the error that
        # made the run fall back to eager mode
        self.compile_error: str | None = None
        if proc.main:
            from edgeseg.common.io import clean_stale

            self.out.mkdir(parents=True, exist_ok=True)
            clean_stale(self.out)  # checkpoint temporaries a killed run left (.last.pt.XXXX.pt)
        resume_ckpt = load_resume_state(self.last_path, cfg.model) if cfg.resume else None
        self.model = self._build_model(memory_format, fresh=resume_ckpt is None)
        self.loss_name = cfg.loss or default_loss(cfg.num_classes, mcfg.spatial_dims)
        check_loss(self.loss_name, cfg.num_classes, mcfg.spatial_dims)
        self.loss_fn = get_loss(self.loss_name)
        self.steps_per_epoch = steps_per_epoch(data.n_items, cfg, proc.world)
        total, warmup = self.steps_per_epoch * cfg.epochs, int(round(cfg.warmup_epochs * self.steps_per_epoch))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     **_ADAMW_FLAGS[cfg.adamw])
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_lambda(s, total, warmup, cfg.min_lr_ratio))
        self.amp_dtype = amp_dtype(cfg, proc.use_cuda)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)  # bf16: no scaling
        self.ema = WeightEMA(self.model, cfg.ema) if cfg.ema else None
        if resume_ckpt is not None:
            self._restore(resume_ckpt)
        self.train_model = self._wrap(torch.compile(self.model) if cfg.compile else self.model)
        self.recipe = self._recipe()

    # ------------------------------------------------------------------------------------------ set-up

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are validated and saved: the moving average under ``--ema``, else the model."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def best_path(self) -> Path:
        return self.out / "best.pt"

    @property
    def last_path(self) -> Path:
        return self.out / "last.pt"

    def _build_model(self, memory_format: torch.memory_format | None, fresh: bool) -> torch.nn.Module:
        """The model, from ``--init`` or random weights, on the device in its memory format."""
        from edgeseg.models import create_model

        cfg = self.cfg
        model = create_model(cfg.model, **self.model_kwargs)
        if cfg.init:
            from edgeseg.weights import load_weights

            load_weights(model, cfg.init, expected_model=cfg.model)
            if self.proc.main:
                log(f"initialised from {cfg.init}")
        elif self.proc.main and fresh:
            log(f"{cfg.model}: starting from random initialisation")
        model.to(self.proc.device)
        if memory_format is not None:
            model.to(memory_format=memory_format)
        return model

    def _restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from ``last.pt``: weights, optimiser, schedule, scaler, RNG, history and best."""
        cfg = self.cfg
        _check_resume_model(self.last_path, ckpt.get("model_kwargs") or {}, self.model_kwargs)
        st = ckpt["train_state"]
        saved_ema = ckpt.get("recipe", {}).get("ema", 0.0)
        if saved_ema != cfg.ema:
            raise ValueError(f"{self.last_path}: the run was trained with --ema {saved_ema}; resume it with the "
                             f"same --ema (asked for {cfg.ema})")
        if self.ema is not None:  # last.pt's weights are the average; the trained ones are in its state
            self.model.load_state_dict(st["model_state_dict"])
            self.ema.load(ckpt["state_dict"], st["ema"])
        else:
            self.model.load_state_dict(ckpt["state_dict"])
        self.opt.load_state_dict(st["optimizer"])
        for group in self.opt.param_groups:  # the kernels asked for now, not those saved (same numbers but fused)
            group.update(_ADAMW_FLAGS[cfg.adamw])
        self.sched.load_state_dict(st["scheduler"])
        if st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        torch.set_rng_state(st["torch_rng"])
        self.start_epoch, self.history, self.best, self.elapsed = (st["epoch"], st["history"], st["best"],
                                                                   st["elapsed_s"])
        if self.proc.main:
            log(f"resuming {self.last_path} after epoch {self.start_epoch} "
                f"(best val Dice {self.best['val_dice']:.4f})")
            if self.start_epoch >= cfg.epochs:
                log(f"nothing to do: the run already has {self.start_epoch} epochs (raise --epochs to train longer)")

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` as the training step calls it: under DDP when the run is distributed."""
        if not self.proc.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        # find_unused_parameters: heads that the forward pass skips (e.g. deep-supervision heads) get no
        # gradient, which DDP otherwise treats as an error
        return DistributedDataParallel(model, device_ids=[self.proc.device.index] if self.proc.use_cuda else None,
                                       find_unused_parameters=True)

    def _recipe(self) -> dict[str, Any]:
        """The checkpoint's recipe: every option, then what the run did with them, then the data's entries."""
        from edgeseg.models import get_model_cfg

        cfg = self.cfg
        default_skip = get_model_cfg(cfg.model).options.get("skip_attention")
        return {**cfg.record(), "loss": self.loss_name, "optimizer": "AdamW", "schedule": "warmup+cosine",
                "train_data": self.data.train_spec.to_dict(), "val_data": self.data.val_spec.to_dict(),
                "world_size": self.proc.world, "attention_regularizer": attention_regularizer(self.model) is not None,
                "amp": cfg.amp_mode, "amp_dtype": _DTYPE_NAMES[self.amp_dtype],
                "skip_attention": self.model_kwargs.get("skip_attention", default_skip), **self.data.recipe}

    # ------------------------------------------------------------------------------------------ training

    def _compiler_settings(self) -> contextlib.AbstractContextManager:
        """Inductor settings of a ``--compile`` run on CPU: with kernels on 2+ threads, torch 2.13's in-place
        buffers free a buffer that a later kernel of this model's backward still reads (``UnboundLocalError:
        cannot access local variable 'buf88'``); without in-place buffers it compiles and runs
        (docs/notes/issue-18.md, session 7). Kernels compile on the first step of each input size, which the
        patch covers."""
        if not self.cfg.compile or self.compile_error or self.proc.use_cuda:
            return contextlib.nullcontext()
        import torch._inductor.config as inductor

        return inductor.patch(inplace_buffers=False)

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        amp = (torch.autocast(self.proc.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
               else contextlib.nullcontext())
        with self._compiler_settings():
            with amp:
                loss, _ = compute_loss(self.train_model, x, y, self.loss_fn)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
        return loss

    def step(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> float:
        """One optimisation step (forward, loss, backward, clip, AdamW, schedule, EMA); returns the loss.

        Raises:
            ValueError: the loss is not finite (the run diverged).
        """
        if self.cfg.compile and self.compile_error is None:
            # torch.compile builds the kernels on the first forward and backward; an inductor failure there (e.g.
            # torch 2.13's CPU codegen bug "cannot access local variable 'bufNN'" that this model hit with 2
            # threads before _compiler_settings) should cost the speed-up, not the run. Nothing has been stepped yet, so retrying eager is
            # safe (only BatchNorm's running statistics saw this batch once more).
            try:
                loss = self._forward_backward(x, y)
                self.compile_error = ""
            except Exception as e:  # noqa: BLE001 - inductor/dynamo failures have many types; memory is not one
                if isinstance(e, torch.cuda.OutOfMemoryError):
                    raise
                self.compile_error = f"{type(e).__name__}: {first_line(e)}"
                if self.proc.main:
                    log(f"WARNING: torch.compile failed on the first training step ({self.compile_error}); "
                        "training continues without --compile (eager mode)")
                self.train_model = self._wrap(self.model)
                loss = self._forward_backward(x, y)
        else:
            loss = self._forward_backward(x, y)
        if self.cfg.clip > 0:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        if self.ema is not None:
            self.ema.update(self.model)
        value = loss.item()
        if not math.isfinite(value):
            raise ValueError(f"training diverged at epoch {epoch + 1} (loss {value}); lower --lr")
        return value

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """Every step of one epoch; returns its history row (loss, lr, time, throughput)."""
        cfg, world, unit = self.cfg, self.proc.world, self.data.unit
        self.model.train()
        t0 = time.perf_counter()
        bar = _progress(self.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress and self.proc.main)
        loss_sum, seen = 0.0, 0
        for batch in self.data.batches(epoch):
            x, y = self.prepare_batch(batch, self.proc.device)
            loss_sum += self.step(x, y, epoch) * x.shape[0]
            seen += x.shape[0]
            if bar is not None:
                bar.update(1)
                bar.set_postfix({"loss": f"{loss_sum / seen:.4f}",
                                 f"{unit}_s": f"{seen * world / (time.perf_counter() - t0):.1f}"}, refresh=False)
        if bar is not None:
            bar.close()
        train_s = time.perf_counter() - t0
        row: dict[str, Any] = {"epoch": epoch + 1, "loss": loss_sum / max(1, seen),
                               "lr": self.sched.get_last_lr()[0], "train_s": round(train_s, 2),
                               "images_per_s": round(seen * world / train_s, 2)}
        if unit != "img":
            row["unit"] = unit
        return row

    def end_epoch(self, epoch: int, row: dict[str, Any], res: EvalResult, t_epoch: float) -> bool:
        """Rank 0: record validation ``res`` in ``row``, write best.pt (if improved), last.pt and the history,
        log a line; returns whether the epoch improved on the best val Dice."""
        row.update({f"val_{k}": v for k, v in res.mean.items()})
        self.elapsed += time.perf_counter() - t_epoch
        row["elapsed_s"] = round(self.elapsed, 1)
        self.history.append(row)
        metrics = {"val_dice": row["val_dice"], "val_iou": row["val_iou"], "epoch": epoch + 1,
                   "val_n": res.n, "elapsed_s": row["elapsed_s"]}
        if self.compile_error:  # the recipe says what the run really did
            self.recipe.update(compile=False, compile_error=self.compile_error)
        improved = row["val_dice"] > self.best["val_dice"]
        pre, name = self.data.preprocessing, self.cfg.model
        if improved:
            self.best = metrics
            save_checkpoint(build_checkpoint(self.eval_model, name, self.model_kwargs, pre, metrics, self.recipe),
                            self.best_path)
        ckpt = build_checkpoint(self.eval_model, name, self.model_kwargs, pre, metrics, self.recipe)
        ckpt["train_state"] = {"epoch": epoch + 1, "optimizer": self.opt.state_dict(),
                               "scheduler": self.sched.state_dict(), "scaler": self.scaler.state_dict(),
                               "torch_rng": torch.get_rng_state(), "history": self.history, "best": self.best,
                               "elapsed_s": self.elapsed}
        if self.ema is not None:
            ckpt["train_state"].update(model_state_dict=cpu_state_dict(self.model), ema=self.ema.state())
        save_checkpoint(ckpt, self.last_path)
        atomic_write_json(self.out / "history.json", self.history)
        atomic_write_text(self.out / "history.csv", history_csv(self.history))
        log(f"epoch {epoch + 1}/{self.cfg.epochs}  loss {row['loss']:.4f}  val Dice {row['val_dice']:.4f}  "
            f"IoU {row['val_iou']:.4f}  {row['images_per_s']:.1f} {self.data.unit}/s  "
            f"{row['train_s']:.0f}+{row['val_s']:.0f} s" + ("  *best" if improved else ""))
        return improved

    def fit(self, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
        """Train the remaining epochs (validate and checkpoint each); ``on_epoch(row)`` after each on rank 0."""
        for epoch in range(self.start_epoch, self.cfg.epochs):
            t0 = time.perf_counter()
            row = self.train_epoch(epoch)
            if self.proc.main:
                t_val = time.perf_counter()
                res = self.validate(self.eval_model)
                row["val_s"] = round(time.perf_counter() - t_val, 2)
                self.end_epoch(epoch, row, res, t0)
                if on_epoch is not None:
                    on_epoch(row)
            if self.proc.distributed:
                torch.distributed.barrier()
        if self.proc.distributed:
            torch.distributed.destroy_process_group()
        return TrainResult(self.out, self.best_path, self.last_path, self.best, self.history)

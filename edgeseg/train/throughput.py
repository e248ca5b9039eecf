"""Measure CPU training throughput (images/s) of one model under several settings, alternating them.

``python -m edgeseg.train.throughput --model ultralightunet-s --img-size 256 --threads 2`` times the training
step of :class:`edgeseg.train.engine.Trainer` (the one ``edgeseg train`` runs: forward, loss, backward,
``--clip``, AdamW, schedule) on the batches of :class:`edgeseg.train.loop.ImageBatches`, including the batch
preparation (inline, or overlapped with ``+prefetch``). A setting is a data source plus modifiers:

- ``decode``: JPEG files decoded, resized and normalised per sample in the training thread, NCHW (the
  pipeline before the in-memory cache);
- ``memory``: the in-memory uint8 cache with batch-level augmentation, NCHW;
- ``+cl``: channels_last model and inputs (``edgeseg train``'s default);
- ``+prefetch``: batches prepared by a background thread (``--workers 1``);
- ``+s6prep``: the batch preparation as it was up to session 6: with the training's threads (now one), the
  augmentation on the channels_last view (now contiguous NCHW) and one more copy;
- ``+loop``: AdamW one parameter at a time (``--adamw loop``, before session 7; default ``foreach``);
- ``+fused``: AdamW's fused kernel (``--adamw fused``); ``+bf16``: bf16 autocast (``--amp on``);
- ``+compile``: ``torch.compile`` (the first step, which compiles, is reported separately).

Like every ``edgeseg`` command, the tool sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment chooses a
policy (``OMP_WAIT_POLICY=ACTIVE python -m edgeseg.train.throughput ...`` measures spinning threads). The
settings run in turns (``--rounds``), so that a shared machine's load falls on all of them alike. Each
line gives the median img/s over the timed steps, images per CPU-second, and the median over the rounds of
the ratio to the first setting. ``--profile`` prints torch.profiler's breakdown of the first setting's steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # what every `edgeseg` command does (edgeseg/cli/__init__.py): OpenMP reads it once,
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # when torch loads, so before the imports below

import numpy as np  # noqa: E402
import torch  # noqa: E402

from edgeseg.common.args import add_data_argument, add_model_arguments, add_runtime_arguments
from edgeseg.train.config import TrainConfig  # noqa: E402
from edgeseg.train.engine import TrainData, Trainer  # noqa: E402
from edgeseg.train.loop import ImageBatches  # noqa: E402
from edgeseg.train.process import Processes  # noqa: E402

MODIFIERS = {"cl": {"channels_last": True}, "prefetch": {"workers": 1}, "loop": {"adamw": "loop"},
             "fused": {"adamw": "fused"}, "bf16": {"amp": "on"}, "compile": {"compile": True}, "s6prep": {}}


def _decode_batches(files: list[tuple[Path, Path]], batch: int, size: int):
    from edgeseg.data.folder import read_image, read_mask, resize_pair
    from edgeseg.data.transforms import normalize

    i = 0
    while True:
        xs, ys = [], []
        for _ in range(batch):
            img_p, mask_p = files[i % len(files)]
            i += 1
            img, mask = resize_pair(read_image(img_p), read_mask(mask_p), (size, size))
            if np.random.rand() < 0.5:
                img, mask = img[:, ::-1], mask[:, ::-1]
            xs.append(normalize(img))
            ys.append(mask.astype(np.int64))
        yield torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(np.stack(ys))


@dataclass
class _Setting:
    name: str
    trainer: Trainer
    batches: Any
    rates: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    images: int = 0
    first_s: float = 0.0
    epoch: int = 0
    it: Iterator | None = None

    def next_batch(self):
        while True:
            if self.it is None:
                self.it = iter(self.batches(self.epoch))
            try:
                return next(self.it)
            except StopIteration:
                self.it, self.epoch = None, self.epoch + 1

    def run(self, steps: int, timed: bool = True) -> None:
        tr = self.trainer
        for _ in range(steps):
            t0, c0 = time.perf_counter(), time.process_time()
            x, y = tr.prepare_batch(self.next_batch(), tr.proc.device)
            tr.step(x, y, 0)
            if timed:
                self.rates.append(x.shape[0] / (time.perf_counter() - t0))
                self.cpu_s += time.process_time() - c0
                self.images += x.shape[0]


class _Session6Batches(ImageBatches):
    """The batch preparation of sessions 1-6, to measure against: the training's threads, the augmentation on
    the channels_last view of the uint8 cache, and a contiguous copy that the step copied again."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs, prep_threads=None)

    def _batch(self, idx: torch.Tensor, g_aug: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        augment = self.augment
        x = self.imgs[idx].permute(0, 3, 1, 2).float().div_(255.0)
        if augment is not None:
            x = augment.jitter_colors(x, g_aug)
        x = (x - self.mean) / self.std
        y = self.masks[idx].long()
        if augment is not None:
            x, y = augment(x, y, g_aug)
        return x.contiguous(), y


def _setting(name: str, base: TrainConfig, imgs, masks, files, out: Path) -> _Setting:
    from edgeseg.models import get_model_cfg

    source, *mods = name.split("+")
    unknown = [m for m in mods if m not in MODIFIERS] + ([source] if source not in ("decode", "memory") else [])
    if unknown:
        raise ValueError(f"unknown setting part {unknown[0]!r} in {name!r}; a setting is decode or memory, then "
                         f"+ any of {', '.join(MODIFIERS)} (e.g. memory+cl+prefetch)")
    over: dict[str, Any] = {"channels_last": False, "workers": 0}
    for m in mods:
        over.update(MODIFIERS[m])
    cfg = dataclasses.replace(base, **over, out=str(out / name.replace("+", "_")))
    mcfg = get_model_cfg(cfg.model)
    proc = Processes(1, 0, 0, torch.device("cpu"))
    if source == "decode":
        batches: Any = lambda epoch: _decode_batches(files, cfg.batch_size, cfg.img_size)  # noqa: E731
    else:
        kind = _Session6Batches if "s6prep" in mods else ImageBatches
        batches = kind(imgs, masks, cfg, proc, mcfg.mean, mcfg.std)
    from edgeseg.data.sources import DataSpec

    spec = DataSpec("throughput", None, int(imgs.shape[0]))
    data = TrainData(batches, int(imgs.shape[0]), spec, spec, {})
    torch.manual_seed(cfg.seed)
    trainer = Trainer(cfg, data, None, model_kwargs={}, proc=proc, channels_last=cfg.channels_last)
    return _Setting(name, trainer, batches)


def _profile(s: _Setting, steps: int, rows: int) -> None:
    from torch.profiler import ProfilerActivity, profile, record_function

    tr = s.trainer
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            with record_function("1 batch preparation"):
                x, y = tr.prepare_batch(s.next_batch(), tr.proc.device)
            with record_function("2 forward + loss"):
                from edgeseg.train.losses import compute_loss

                loss, _ = compute_loss(tr.train_model, x, y, tr.loss_fn)
            with record_function("3 backward"):
                tr.opt.zero_grad(set_to_none=True)
                loss.backward()
            with record_function("4 clip + AdamW + schedule"):
                torch.nn.utils.clip_grad_norm_(tr.model.parameters(), tr.cfg.clip)
                tr.opt.step()
                tr.sched.step()
    table = prof.key_averages()
    stages = sorted((e for e in table if e.key[:2] in ("1 ", "2 ", "3 ", "4 ")), key=lambda e: e.key)
    total = sum(e.cpu_time_total for e in stages)
    print(f"\nprofile of {s.name}, {steps} steps (torch.profiler, wall time per stage):")
    for e in stages:
        print(f"  {e.key:28s} {e.cpu_time_total / steps / 1e3:8.1f} ms/step  {100 * e.cpu_time_total / total:5.1f}%")
    print(table.table(sort_by="self_cpu_time_total", row_limit=rows))


def main(argv: list[str] | None = None) -> None:
    from edgeseg.data.sources import open_train_val
    from edgeseg.train.loop import to_memory

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(p, options=("model",), defaults={"model": "ultralightunet-s"}, title=None)
    add_data_argument(p, default="synthetic:64")
    p.add_argument("--img-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    add_runtime_arguments(p, options=("threads",), threads_default="2", title=None)
    p.add_argument("--steps", type=int, default=8, help="timed steps per setting and round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per setting before the first round")
    p.add_argument("--rounds", type=int, default=3, help="turns over the settings")
    p.add_argument("--settings", default="memory+cl+s6prep,memory+cl,memory+cl+prefetch",
                   help="comma-separated, the first is the reference of the ratios (see the module docstring)")
    p.add_argument("--multiscale", action="store_true", help="multi-scale batches as training has them")
    p.add_argument("--profile", type=int, default=0, metavar="STEPS", help="profile the first setting too")
    args = p.parse_args(argv)
    args.threads = args.threads or 2
    torch.set_num_threads(args.threads)
    train_ds, _, _, _ = open_train_val(args.data, "synthetic:1", args.img_size)
    imgs, masks = to_memory(train_ds, 1)
    files = [(pr.image, pr.masks[0]) for pr in getattr(train_ds, "pairs", [])]
    names = args.settings.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="edgeseg-throughput-"))
    if not files and any(n.startswith("decode") for n in names):  # synthetic: write JPEGs to decode
        from edgeseg.common.phantoms import write_synthetic_folder
        from edgeseg.data.folder import find_pairs

        write_synthetic_folder(tmp / "jpeg", imgs.shape[0], args.img_size)
        files = [(pr.image, pr.masks[0]) for pr in find_pairs(tmp / "jpeg")]
    base = TrainConfig(args.model, img_size=args.img_size, batch_size=args.batch_size, threads=args.threads,
                       multiscale=args.multiscale, progress=False)
    load0 = os.getloadavg()
    settings = [_setting(n, base, imgs, masks, files, tmp) for n in names]
    for s in settings:
        t0 = time.perf_counter()
        s.run(1, timed=False)
        s.first_s = time.perf_counter() - t0
        s.run(max(0, args.warmup - 1), timed=False)
    ratios: dict[str, list[float]] = {s.name: [] for s in settings}
    for _ in range(args.rounds):
        for s in settings:
            s.rates.append(float("nan"))  # round marker
            s.run(args.steps)
        per_round = {s.name: statistics.median(_rounds(s.rates)[-1]) for s in settings}
        for s in settings:
            ratios[s.name].append(per_round[s.name] / per_round[settings[0].name])
    load1 = os.getloadavg()
    print(f"{args.model} {args.img_size}x{args.img_size} batch {args.batch_size} threads {args.threads}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset: active)')}, {args.rounds} rounds x "
          f"{args.steps} steps, load {load0[0]:.2f} -> {load1[0]:.2f}")
    for s in settings:
        rates = [r for r in s.rates if r == r]
        note = ""
        if s.trainer.compile_error:
            note = f"  compile FAILED, ran eager: {s.trainer.compile_error[:100]}"
        print(f"  {s.name:28s} {statistics.median(rates):6.2f} img/s wall  {s.images / s.cpu_s:6.2f} img/CPU-s  "
              f"x{statistics.median(ratios[s.name]):.3f} vs {settings[0].name}  (first step {s.first_s:.1f} s)"
              f"{note}", flush=True)
    if args.profile:
        _profile(settings[0], args.profile, 25)


def _rounds(rates: list[float]) -> list[list[float]]:
    out: list[list[float]] = []
    for r in rates:
        if r != r:
            out.append([])
        else:
            out[-1].append(r)
    return out


if __name__ == "__main__":
    main()

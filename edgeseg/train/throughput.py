"""Measure CPU training throughput (images/s) of one model under several settings.

``python -m edgeseg.train.throughput --model ultralightunet-s --img-size 256 --threads 2`` prints one line per
setting: the full training step (forward, BCE+IoU loss, backward, clipping, AdamW) on batches that come from

- ``decode``: JPEG files decoded, resized and normalised per sample in the training thread (a plain
  Dataset/DataLoader with ``num_workers=0``), NCHW: the "before" pipeline;
- ``memory``: the in-memory uint8 tensor cache with batch-level augmentation (what ``edgeseg train`` does);
- ``memory+cl``: the same with channels_last model and inputs;
- ``memory+cl+prefetch``: batches prepared by a background thread;
- ``memory+cl+compile``: ``torch.compile`` of the model (compile time excluded, reported separately).

The median over timed steps after warm-up steps is reported, with the thread count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from edgeseg.common.errors import first_line
from edgeseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, BatchAugment, normalize
from edgeseg.train.losses import bce_iou_loss


def _decode_batches(files: list[tuple[Path, Path]], batch: int, size: int):
    from edgeseg.data.folder import read_image, read_mask, resize_pair

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
        yield torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def _memory_batches(imgs: torch.Tensor, masks: torch.Tensor, batch: int):
    g = torch.Generator().manual_seed(0)
    aug = BatchAugment(scales=(1.0,))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    while True:
        idx = torch.randint(imgs.shape[0], (batch,), generator=g)
        x = (imgs[idx].permute(0, 3, 1, 2).float() / 255.0 - mean) / std
        yield aug(x, masks[idx].long(), g)


def measure(model_name: str, batches, steps: int, warmup: int, channels_last: bool, compile: bool = False
            ) -> tuple[float, float, float]:
    """(images/s median wall, images per CPU-second, seconds of the first step) over ``steps`` timed steps.

    Images per CPU-second (process CPU time, all threads) is the figure to compare on a shared machine, where
    wall-clock throughput depends on what else runs.
    """
    from edgeseg.models import create_model

    torch.manual_seed(0)
    model = create_model(model_name)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times, first, cpu, n_img = [], 0.0, 0.0, 0
    for s in range(warmup + steps):
        t0, c0 = time.perf_counter(), time.process_time()
        x, y = next(batches)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = bce_iou_loss(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        dt = time.perf_counter() - t0
        if s == 0:
            first = dt
        if s >= warmup:
            times.append(x.shape[0] / dt)
            cpu += time.process_time() - c0
            n_img += x.shape[0]
    return statistics.median(times), n_img / cpu, first


def main(argv: list[str] | None = None) -> None:
    from edgeseg.data.sources import open_train_val
    from edgeseg.train.loop import _prefetch, _to_memory

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="ultralightunet-s")
    p.add_argument("--data", default="synthetic:64", help="folder with JPEG images, or synthetic:N")
    p.add_argument("--img-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--settings", default="decode,memory,memory+cl,memory+cl+prefetch",
                   help="comma-separated; add memory+cl+compile to try torch.compile")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train_ds, _, _, _ = open_train_val(args.data, "synthetic:1", args.img_size)
    imgs, masks = _to_memory(train_ds, 1)
    files = [(pr.image, pr.masks[0]) for pr in getattr(train_ds, "pairs", [])]
    if not files:  # synthetic: write JPEGs so that "decode" really decodes
        import tempfile

        from edgeseg.common.phantoms import write_synthetic_folder

        tmp = Path(tempfile.mkdtemp())
        write_synthetic_folder(tmp, imgs.shape[0], args.img_size)
        from edgeseg.data.folder import find_pairs

        files = [(pr.image, pr.masks[0]) for pr in find_pairs(tmp)]
    for setting in args.settings.split(","):
        cl = "+cl" in setting
        if setting == "decode":
            it = _decode_batches(files, args.batch_size, args.img_size)
        else:
            it = _memory_batches(imgs, masks, args.batch_size)
            if "prefetch" in setting:
                it = _prefetch(it)
        load = os.getloadavg()[0]
        try:
            ips, ipc, first = measure(args.model, it, args.steps, args.warmup, cl, "compile" in setting)
        except Exception as e:  # noqa: BLE001 - a compiler failure is a result to report, not a crash
            if "compile" not in setting:
                raise
            print(f"{args.model} {args.img_size}x{args.img_size} batch {args.batch_size} threads {args.threads} "
                  f"{setting:22s} FAILED: {type(e).__name__}: {first_line(e, 160)}",
                  flush=True)
            continue
        print(f"{args.model} {args.img_size}x{args.img_size} batch {args.batch_size} threads {args.threads} "
              f"{setting:22s} {ips:6.2f} img/s wall  {ipc:6.2f} img/CPU-s  (first step {first:.1f} s, "
              f"load {load:.1f})", flush=True)


if __name__ == "__main__":
    main()

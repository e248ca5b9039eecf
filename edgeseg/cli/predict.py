"""Segment images, a folder of images, or a video; write masks and overlays.

Examples:
  edgeseg predict --artifact exports/ultralightunet-s_fp32.onnx --input frames/ --out preds/
  edgeseg predict --artifact model.xml --input clip.mp4 --out preds/ --device cpu --threads 2
  edgeseg predict --weights runs/exp1/best.pt --input polyp.jpg --out preds/      (torch reference)

For each image: <name>_mask.png (0/255; class labels spread over 0-255 for multi-class) and
<name>_overlay.jpg; for a video: <name>_overlay.mp4 (or .avi); for a NIfTI volume (3D models: a .nii/.nii.gz
file or a folder of them), <name>_label.nii.gz, predicted by overlapping windows of the model's input size. predictions.json lists every output with
its foreground fraction and inference time. --artifact runs through the device-side `runtimes` package
only (no torch); --weights/--model use the torch reference runtime.

An artifact without its manifest is refused (its pre-processing cannot be read from the model file): re-convert
it, or give the pre-processing with --preprocessing JSON_OR_FILE, e.g.
  edgeseg predict --artifact third_party.onnx --input frames/ --out preds/ \
      --preprocessing '{"size": [256, 256], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}'
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from edgeseg.cli._format import add_format_argument, print_json, wants_json
from edgeseg.common.args import add_artifact_arguments, add_model_arguments, add_runtime_arguments

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
_FOURCC = {".avi": "MJPG", ".mp4": "mp4v", ".mov": "mp4v", ".m4v": "mp4v", ".mkv": "mp4v"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p, options=("artifact", "weights", "model"), title="model (one of)",
                        helps={"weights": "edgeseg checkpoint (.pt), run with the torch reference runtime"})
    p.add_argument("--input", required=True, help="an image, a folder of images, or a video file")
    p.add_argument("--out", required=True, help="output folder (created)")
    add_runtime_arguments(p)
    add_artifact_arguments(p, checkpoints=True)
    p.add_argument("--batch", type=int, default=1, help="images per inference call (default 1)")
    p.add_argument("--alpha", type=float, default=0.4, help="overlay opacity (default 0.4)")
    p.add_argument("--overlay-format", choices=["jpg", "png"], default="jpg", help="overlay image format")
    p.add_argument("--video-format", choices=["mp4", "avi"], default="mp4",
                   help="overlay video container (mp4: mp4v, avi: MJPG)")
    p.add_argument("--tta", metavar="MODE", help="test-time augmentation: hflip (2 passes), flips (4), or "
                   "hflip+scales / flips+scales (also at 0.75x and 1.25x, 2D only); logits are averaged")
    add_format_argument(p)


def _open_runner(args: argparse.Namespace) -> Any:
    from edgeseg import runtimes

    given = [n for n in ("artifact", "weights") if getattr(args, n)]
    if len(given) > 1:
        raise ValueError("pass one of --artifact or --weights, not both")
    if args.artifact:
        if args.model:
            raise ValueError("--model goes with --weights (or alone), not with --artifact")
        return runtimes.load(args.artifact, runtime=args.runtime, device=args.device, threads=args.threads,
                             check_files=not args.no_hash_check, preprocessing=args.preprocessing)
    runtime = runtimes.name_runtime(args.runtime)
    if runtime not in (None, "torch"):
        raise ValueError(f"--weights/--model run on the torch reference runtime, not {args.runtime!r}; "
                         "convert the model (`edgeseg convert`) and pass --artifact to use another runtime")
    if args.weights:
        if not Path(args.weights).is_file():
            raise FileNotFoundError(f"weights file not found: {args.weights}")
        opts = {"model": args.model} if args.model else {}
        return runtimes.load(args.weights, runtime="torch", device=args.device, threads=args.threads,
                             preprocessing=args.preprocessing, **opts)
    if args.model:
        if runtime is None:  # no torch here: the verified artifact shipped for the model
            import sys

            print(f"edgeseg: torch is not installed: running the artifact shipped for {args.model}",
                  file=sys.stderr)
        return runtimes.load(args.model, runtime=runtime, device=args.device, threads=args.threads,
                             preprocessing=args.preprocessing)
    raise ValueError("say which model to run: --artifact PATH, --weights CKPT or --model NAME")


def _inputs(path: Path) -> tuple[str, list[Path]]:
    from edgeseg.runtimes.processing import IMAGE_SUFFIXES

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return "images", files
    if not path.is_file():
        raise FileNotFoundError(f"input not found: {path}")
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video", [path]
    if suffix in IMAGE_SUFFIXES:
        return "images", [path]
    raise ValueError(f"{path}: unknown input type {suffix!r}; give an image ({', '.join(IMAGE_SUFFIXES)}), "
                     f"a folder of images, or a video ({', '.join(VIDEO_SUFFIXES)})")


def _stems(files: list[Path]) -> list[str]:
    """Output names: the file stem, or the full name where two inputs share a stem."""
    stems = [f.stem for f in files]
    return [f.name if stems.count(f.stem) > 1 else f.stem for f in files]


def _predict_images(runner: Any, files: list[Path], out: Path, args: argparse.Namespace) -> list[dict]:
    from edgeseg.runtimes.processing import (
        mask_to_png,
        overlay,
        postprocess,
        preprocess,
        read_image,
        write_image,
    )

    m = runner.manifest
    rows = []
    names = _stems(files)
    for start in range(0, len(files), args.batch):
        chunk = list(range(start, min(start + args.batch, len(files))))
        frames = [read_image(files[i]) for i in chunk]
        batch, infos = preprocess(frames, m.preprocessing)
        t0 = time.perf_counter()
        logits = runner.infer(batch)
        ms = (time.perf_counter() - t0) * 1000.0 / len(chunk)
        masks = postprocess(logits, infos, m.postprocessing, threshold=args.threshold)
        for i, frame, mask in zip(chunk, frames, masks):
            mask_path = out / f"{names[i]}_mask.png"
            over_path = out / f"{names[i]}_overlay.{args.overlay_format}"
            write_image(mask_path, mask_to_png(mask, m.postprocessing.num_classes))
            write_image(over_path, overlay(frame, mask, alpha=args.alpha))
            rows.append({"input": str(files[i]), "mask": str(mask_path), "overlay": str(over_path),
                         "size": list(frame.shape[:2]), "foreground": round(float((mask > 0).mean()), 6),
                         "infer_ms": round(ms, 3)})
    return rows


def _predict_video(runner: Any, path: Path, out: Path, args: argparse.Namespace) -> list[dict]:
    import errno

    from edgeseg.common.deps import require
    from edgeseg.common.io import LOW_SPACE_BYTES, WriteError, atomic_path, free_bytes
    from edgeseg.runtimes.processing import frames_in_video, overlay, postprocess, preprocess

    cv2 = require("cv2", "video prediction")
    m = runner.manifest
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: OpenCV cannot open this video (try an .mp4 or .avi file)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    dest = out / f"{path.stem}_overlay.{args.video_format}"
    frames, times, fg = 0, [], []
    try:
        with atomic_path(dest) as tmp:
            writer = None
            try:
                while True:
                    ok, bgr = cap.read()
                    if not ok:
                        break
                    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    batch, infos = preprocess(rgb, m.preprocessing)
                    t0 = time.perf_counter()
                    logits = runner.infer(batch)
                    times.append((time.perf_counter() - t0) * 1000.0)
                    mask = postprocess(logits, infos, m.postprocessing, threshold=args.threshold)[0]
                    fg.append(float((mask > 0).mean()))
                    shown = cv2.cvtColor(overlay(rgb, mask, alpha=args.alpha), cv2.COLOR_RGB2BGR)
                    if writer is None:
                        h, w = shown.shape[:2]
                        fourcc = cv2.VideoWriter_fourcc(*_FOURCC["." + args.video_format])
                        writer = cv2.VideoWriter(str(tmp), fourcc, fps, (w, h))
                        if not writer.isOpened():
                            raise ValueError(f"OpenCV cannot write {args.video_format} video here; "
                                             "try --video-format avi")
                    free = free_bytes(tmp)  # VideoWriter says nothing when the device fills up
                    if free is not None and free < LOW_SPACE_BYTES:
                        raise WriteError(errno.ENOSPC, f"no space left on device writing {dest} ({free} bytes "
                                         f"free after {frames} frames); free some space and run again")
                    writer.write(shown)
                    frames += 1
            finally:
                if writer is not None:
                    writer.release()
            if frames == 0:
                raise ValueError(f"{path}: no frames could be read from this video")
            held = frames_in_video(tmp, frames)
            if held != frames:  # read back before it is renamed into place: never a short file
                raise WriteError(errno.EIO, f"the video written to {dest} holds {held} of its {frames} frames "
                                 "(the video writer failed without a word, e.g. a full device); it was not kept")
    finally:
        cap.release()
    times.sort()
    return [{"input": str(path), "overlay": str(dest), "frames": frames, "fps": fps,
             "foreground_mean": round(sum(fg) / len(fg), 6),
             "infer_ms_median": round(times[len(times) // 2], 3)}]


def main(args: argparse.Namespace) -> int:
    from edgeseg.common.io import atomic_write_json, check_writable_dir

    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise ValueError(f"--threshold must be in [0, 1], got {args.threshold}")
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    from edgeseg.cli import _inference as inf

    volumes = inf.volume_inputs(Path(args.input))  # NIfTI volumes, for 3D models
    kind, files = ("volumes", volumes) if volumes else _inputs(Path(args.input))
    out = check_writable_dir(args.out)
    with _open_runner(args) as opened:
        runner = inf.with_tta(opened, args.tta)
        if inf.is_volume_model(runner.manifest) != (kind == "volumes"):
            name = runner.manifest.model or args.weights or args.model
            if kind == "volumes":
                raise ValueError(f"{name} is a 2D model and {args.input} holds NIfTI volumes: give images, a "
                                 "folder of images or a video, or a 3D model")
            raise ValueError(f"{name} is a 3D model: give NIfTI volumes (.nii, .nii.gz: a file or a folder) as "
                             "--input, not images or videos; score volumes against labels with `edgeseg "
                             "evaluate`")
        if kind == "volumes":
            rows = inf.predict_volumes(runner, files, out, args.threshold)
        elif kind == "video":
            rows = _predict_video(runner, files[0], out, args)
        else:
            rows = _predict_images(runner, files, out, args)
        info = runner.info()
    summary = {"runtime": info, "threshold": args.threshold if args.threshold is not None
               else runner.manifest.postprocessing.threshold, "outputs": rows}
    atomic_write_json(out / "predictions.json", summary)
    if wants_json(args):
        print_json(summary)
        return 0
    what = {"video": f"{rows[0].get('frames')} video frames", "volumes": f"{len(rows)} volume(s)"}.get(
        kind, f"{len(rows)} image(s)")
    print(f"segmented {what} with {info['runtime']} {info.get('version') or ''} on {info['device']}; "
          f"wrote to {out} (see predictions.json)")
    return 0

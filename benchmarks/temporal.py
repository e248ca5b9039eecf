"""Steadiness on video with ground truth: Dice, flicker, false regions and delay of the demo's masks, raw and steady.

Clips come from :mod:`edgeseg.common.camera` over real images (Kvasir-SEG val by default), so every frame has
its true mask: in memory, or written to clip folders (:mod:`edgeseg.common.clips`) that ``edgeseg demo
--source CLIP_DIR`` plays and ``edgeseg evaluate --video CLIP_DIR`` scores. For each clip the model runs once
per frame (in this process, through ``edgeseg.runtimes``); every stabiliser setting then sees the same
per-frame masks. Per setting it reports:

- ``dice``: mean Dice of the shown mask against the truth, per frame (1 where both are empty), and its two
  parts: ``dice_in_view`` over the frames that show any of a polyp, ``clean_share`` the share of the
  polyp-free frames on which nothing is shown;
- ``f2f_iou``: mean IoU of each shown mask with the previous one, beside ``truth_f2f_iou``, the truth's own
  (a steady mask comes close to it; a flickering one falls below it);
- ``flicker_per_s``: region-count changes per second (frames whose shown region count differs from the
  previous frame's), beside ``truth_changes_per_s``, the truth's own;
- ``fp_per_frame``: shown regions that touch no true polyp, per frame;
- ``delay_frames`` / ``delay_ms``: from a polyp coming into view (its first frame at ``APPEAR_AREA`` of the
  frame or more) to the first shown region on it, mean over the appearances (``missed``: never shown while
  in view), in frames and in ms at the clip's fps;
- ``ms``: the stabiliser's cost per frame (the demo without stabilisation runs none).

The older figures stay for comparison: ``ghosts_per_100`` (= 100 x ``fp_per_frame``),
``count_changes_per_100`` and ``wrong_count`` (share of frames whose region count differs from the truth's).

Examples:
    python -m edgeseg.benchmarks.temporal --data ../shared/data/kvasir-seg-256 --clips 8 --frames 120
    python -m edgeseg.benchmarks.temporal --data ../shared/data/kvasir-seg-256 --clips 8 --write clips/
    python -m edgeseg.benchmarks.temporal --clip-dir clips/ --html clips.html
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.common.args import add_data_argument, add_model_arguments, add_runtime_arguments

SETTINGS: dict[str, dict[str, Any]] = {
    "raw": {"ema": 1.0, "on": 0.5, "off": 0.5, "min_area": 0.0, "show_after": 1, "keep_for": 0},
    "min-area": {"ema": 1.0, "on": 0.5, "off": 0.5, "min_area": 0.005, "show_after": 1, "keep_for": 0},
    "ema": {"ema": 0.6, "on": 0.5, "off": 0.3, "min_area": 0.0, "show_after": 1, "keep_for": 0},
    "default": {},  # StabilizerConfig's defaults
    "strong": {"ema": 0.4, "show_after": 3, "keep_for": 5},
}
OFF_ON = ("raw", "default")  # smoothing off and on, as `edgeseg evaluate --video` reports them
APPEAR_AREA = 0.01  # a polyp is "in view" from the first frame it covers 1% of the frame
KINDS = ("pan-on", "camera")  # pan_on_clip (the polyp comes into view and leaves), camera_clip (always in view)
FPS = 30.0


@dataclass
class Tally:
    """One setting's per-frame figures, summed over clips (see the module docstring for what each means)."""

    frames: int = 0
    clips: int = 0
    seconds: float = 0.0
    dice: float = 0.0
    dice_view: float = 0.0
    view_frames: int = 0
    clean: int = 0
    f2f: float = 0.0
    truth_f2f: float = 0.0
    pairs: int = 0
    changes: int = 0
    truth_changes: int = 0
    fp: int = 0
    wrong: int = 0
    ms: float = 0.0
    delays: list[int] = field(default_factory=list)
    missed: int = 0
    fps: list[float] = field(default_factory=list)

    def add(self, other: Tally) -> Tally:
        """Sum ``other`` into this tally (another clip's)."""
        for k, v in vars(other).items():
            setattr(self, k, getattr(self, k) + v)
        return self

    def summary(self) -> dict[str, Any]:
        n, p = max(self.frames, 1), max(self.pairs, 1)
        fps = float(np.mean(self.fps)) if self.fps else FPS
        delay = float(np.mean(self.delays)) if self.delays else None  # None: nothing to measure (JSON-safe)
        return {
            "frames": self.frames, "clips": self.clips, "dice": self.dice / n,
            "dice_in_view": self.dice_view / self.view_frames if self.view_frames else None,
            "clean_share": self.clean / (self.frames - self.view_frames) if self.frames > self.view_frames else None,
            "f2f_iou": self.f2f / p, "truth_f2f_iou": self.truth_f2f / p,
            "flicker_per_s": self.changes / max(self.seconds, 1e-9),
            "truth_changes_per_s": self.truth_changes / max(self.seconds, 1e-9),
            "fp_per_frame": self.fp / n, "appearances": len(self.delays) + self.missed, "missed": self.missed,
            "delay_frames": delay, "delay_ms": None if delay is None else delay * 1000.0 / fps,
            "delay_max_frames": float(max(self.delays)) if self.delays else None,
            "ms": self.ms / n,
            "ghosts_per_100": 100.0 * self.fp / n, "count_changes_per_100": 100.0 * self.changes / n,
            "wrong_count": self.wrong / n,
        }


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def score_clip(raw: Sequence[np.ndarray], truths: Sequence[np.ndarray], fps: float = FPS,
               settings: dict[str, dict[str, Any]] | None = None,
               tallies: dict[str, Tally] | None = None) -> dict[str, Tally]:
    """Score one clip's per-frame model masks against its true masks under each stabiliser setting.

    Args:
        raw: the model's binary mask of each frame, in order.
        truths: the true mask of each frame.
        fps: the clip's frame rate (flicker per second, delay in ms).
        settings: name -> ``StabilizerConfig`` keywords (default :data:`SETTINGS`).
        tallies: add to these (several clips); new ones otherwise.

    Returns:
        name -> :class:`Tally` (``.summary()`` gives the figures).
    """
    from edgeseg.apps.endoscopy.overlay import analyse_mask
    from edgeseg.apps.endoscopy.stabilize import Stabilizer, StabilizerConfig

    from edgeseg.metrics import dice

    if len(raw) != len(truths):
        raise ValueError(f"{len(raw)} masks for {len(truths)} true masks; give one mask per frame")
    settings = settings or SETTINGS
    tallies = tallies if tallies is not None else {}
    truths = [t > 0 for t in truths]
    in_view = [np.count_nonzero(t) >= APPEAR_AREA * t.size for t in truths]
    truth_n = [len(analyse_mask(t, min_area_pct=100 * APPEAR_AREA).regions) for t in truths]
    for name, over in settings.items():
        a = tallies.setdefault(name, Tally())
        stab = Stabilizer(StabilizerConfig(**over))
        prev_mask, prev_n = None, None
        waiting = None  # the frame a polyp came into view, until a shown region is on it
        for i, (m, truth) in enumerate(zip(raw, truths)):
            out = stab(m)
            shown = out.mask > 0
            touch = {t.id for t in out.tracks if np.any((t.mask > 0) & truth)}
            n = len(out.tracks)
            d = dice(shown, truth)
            a.dice += d
            if truth.any():
                a.dice_view += d
                a.view_frames += 1
            else:
                a.clean += int(not shown.any())
            a.fp += n - len(touch)
            a.wrong += int(n != (1 if truth.any() else 0))
            a.ms += out.ms
            if prev_mask is not None:
                a.pairs += 1
                a.f2f += _iou(shown, prev_mask)
                a.truth_f2f += _iou(truth, truths[i - 1])
                a.changes += int(n != prev_n)
                a.truth_changes += int(truth_n[i] != truth_n[i - 1])
            if in_view[i] and (i == 0 or not in_view[i - 1]):
                waiting = i
            if waiting is not None and touch:
                a.delays.append(i - waiting)
                waiting = None
            elif waiting is not None and not in_view[i]:
                a.missed += 1
                waiting = None
            prev_mask, prev_n = shown, n
        if waiting is not None:
            a.missed += 1
        a.frames += len(raw)
        a.clips += 1
        a.seconds += len(raw) / fps
        a.fps.append(float(fps))
    return tallies


def summarise(tallies: dict[str, Tally]) -> dict[str, dict[str, Any]]:
    return {name: t.summary() for name, t in tallies.items()}


# ---- clips ------------------------------------------------------------------------------------------------
def _pairs(data: str, count: int, seed: int) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(id, image, mask) of the data's val split in a seeded order (synthetic phantoms: endless)."""
    if data.startswith("synthetic"):
        from edgeseg.common.phantoms import synthetic_sample

        i = 0
        while True:
            yield (f"synthetic-{seed + i}", *synthetic_sample(seed + i, 256, max_polyps=1))
            i += 1
    from edgeseg.data.folder import SegmentationFolder

    ds = SegmentationFolder(data, split="val")
    for i in np.random.default_rng(seed).permutation(len(ds)):
        yield (ds.ids[int(i)], *ds.load(int(i), resize=False))


def make_clips(data: str, clips: int, frames: int, seed: int = 0, kind: str = "camera", segments: int = 1
               ) -> Iterator[tuple[list[tuple[np.ndarray, np.ndarray, dict[str, Any]]], dict[str, Any]]]:
    """Simulated clips over the data's val images: ``(frames, meta)`` per clip.

    Args:
        data: a labelled image folder (its val split is used) or ``synthetic``.
        clips: how many clips.
        frames: frames per segment.
        seed: image order and camera paths.
        kind: ``pan-on`` (the polyp comes into view and leaves) or ``camera`` (in view throughout).
        segments: images per clip, cut together (a cut is a jump to another image).

    Images that admit no pan-on clip (the polyp fills them) are skipped and listed in ``meta["skipped"]``.
    """
    from edgeseg.common.camera import camera_clip, pan_on_clip

    if kind not in KINDS:
        raise ValueError(f"unknown clip kind {kind!r}; one of {', '.join(KINDS)}")
    if clips < 1 or frames < 1 or segments < 1:
        raise ValueError(f"clips, frames and segments must be >= 1, got {clips}, {frames}, {segments}")
    make = pan_on_clip if kind == "pan-on" else camera_clip
    pairs = _pairs(data, clips * segments, seed)
    for c in range(clips):
        out: list[tuple[np.ndarray, np.ndarray, dict[str, Any]]] = []
        parts: list[dict[str, Any]] = []
        skipped: list[str] = []
        while len(parts) < segments:
            try:
                image_id, image, mask = next(pairs)
            except StopIteration:
                raise ValueError(f"{data}: too few usable val images for {clips} clips of {segments} segment(s)"
                                 ) from None
            k = seed + c * segments + len(parts)
            try:
                seg = list(make(image, mask, frames, seed=k))
            except ValueError:
                skipped.append(image_id)
                continue
            for f in seg:
                f[2]["segment"] = len(parts)
            parts.append({"start": len(out), "frames": len(seg), "image": image_id, "seed": k, "kind": kind})
            out += seg
        yield out, {"source": f"{kind} clips over {data} (val split)", "segments": parts, "skipped": skipped}


def write_clips(out: str | Path, data: str, clips: int, frames: int, seed: int = 0, kind: str = "pan-on",
                segments: int = 1, overwrite: bool = False) -> list[Path]:
    """Write :func:`make_clips`'s clips as ``out/clip-00``, ``out/clip-01``, ... (see edgeseg.common.clips)."""
    from edgeseg.common.clips import write_clip

    paths = []
    for c, (frames_, meta) in enumerate(make_clips(data, clips, frames, seed, kind, segments)):
        paths.append(write_clip(Path(out) / f"clip-{c:02d}", frames_, fps=FPS, meta=meta, overwrite=overwrite))
    return paths


def clip_folders(paths: Sequence[str | Path]) -> list[Path]:
    """Clip folders from paths that are clip folders or folders of clip folders (sorted)."""
    from edgeseg.common.clips import is_clip_folder

    found: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise FileNotFoundError(f"no such clip folder: {p}")
        if (p / "clip.json").is_file() or (p / "frames").is_dir():
            found.append(p)
            continue
        inner = sorted(q for q in p.iterdir() if q.is_dir() and not q.name.startswith(".") and is_clip_folder(q))
        found += inner or ([p] if is_clip_folder(p) else [])
        if not inner and not is_clip_folder(p):
            raise FileNotFoundError(f"{p} holds no clip: expected clip.json + frames/ + masks/ (write clips with "
                                    "`python -m edgeseg.benchmarks.temporal --write DIR`), or folders of them")
    return found


# ---- measuring ----------------------------------------------------------------------------------------------
def _segmenter(artifact: Any, threads: int = 2, runtime: str | None = None):
    from edgeseg.apps.endoscopy.inference import Segmenter

    from edgeseg import runtimes

    if isinstance(artifact, Segmenter):
        return artifact, False
    return Segmenter(runtimes.load(str(artifact), runtime=runtime, threads=threads)), True


def measure(artifact: Any, data: str, clips: int, frames: int, seed: int = 0,
            settings: dict[str, dict[str, Any]] | None = None, kind: str = "camera",
            segments: int = 1) -> dict[str, dict[str, Any]]:
    """Simulated clips in memory (:func:`make_clips`) -> figures per setting (``artifact``: a path, a model name
    with a shipped artifact, or an opened ``Segmenter``)."""
    seg, owned = _segmenter(artifact)
    tallies: dict[str, Tally] = {}
    try:
        for clip, _ in make_clips(data, clips, frames, seed, kind, segments):
            raw = [seg(f).mask for f, _, _ in clip]
            score_clip(raw, [m for _, m, _ in clip], FPS, settings, tallies)
    finally:
        if owned:
            seg.runtime.close()
    return summarise(tallies)


def measure_folders(artifact: Any, folders: Sequence[str | Path], settings: dict[str, dict[str, Any]] | None = None,
                    threads: int = 2, runtime: str | None = None,
                    on_clip: Callable[[Path, dict[str, dict[str, Any]]], None] | None = None
                    ) -> dict[str, dict[str, Any]]:
    """Clip folders on disk (each with masks/) -> figures per setting, over all of them.

    Args:
        artifact: an artifact path, a model name with a shipped artifact, or an opened ``Segmenter``.
        folders: clip folders, or folders of clip folders.
        settings: name -> ``StabilizerConfig`` keywords (default :data:`SETTINGS`).
        threads: inference threads.
        runtime: backend (default: the artifact's).
        on_clip: called with each clip's own figures.

    Raises:
        ValueError: a clip without true masks.
    """
    from edgeseg.common.clips import open_clip

    paths = clip_folders(folders)
    clips = [open_clip(p) for p in paths]
    bare = [str(c.root) for c in clips if c.masks is None]
    if bare:
        raise ValueError(f"{bare[0]} has no masks/: scoring needs the true mask of every frame "
                         "(the demo plays such a folder: `edgeseg demo --source DIR`)")
    seg, owned = _segmenter(artifact, threads, runtime)
    tallies: dict[str, Tally] = {}
    try:
        for clip in clips:
            raw, truths = [], []
            for frame, truth in clip:
                raw.append(seg(frame).mask)
                truths.append(truth if truth is not None else np.zeros(frame.shape[:2], np.uint8))
            own = score_clip(raw, truths, clip.fps, settings)
            if on_clip is not None:
                on_clip(clip.root, summarise(own))
            for name, t in own.items():
                tallies.setdefault(name, Tally()).add(t)
    finally:
        if owned:
            seg.runtime.close()
    return summarise(tallies)


# ---- reporting ------------------------------------------------------------------------------------------------
COLUMNS = (("dice", "Dice", ".4f"), ("dice_in_view", "Dice pol.", ".4f"), ("clean_share", "clean", ".3f"),
           ("f2f_iou", "f2f IoU", ".3f"), ("flicker_per_s", "changes/s", ".2f"),
           ("fp_per_frame", "FP/frame", ".3f"), ("delay_frames", "delay fr", ".2f"), ("delay_ms", "delay ms", ".0f"),
           ("missed", "missed", "d"), ("ms", "ms/frame", ".2f"))


def table(res: dict[str, dict[str, Any]]) -> str:
    """The figures as a text table, one row per setting, the truth's own steadiness below."""
    head = f"{'setting':10s}" + "".join(f" {h:>9s}" for _, h, _ in COLUMNS)
    lines = [head]
    for name, r in res.items():
        cells = "".join(f" {_fmt(r.get(k), spec):>9s}" for k, _, spec in COLUMNS)
        lines.append(f"{name:10s}{cells}")
    any_row = next(iter(res.values()), {})
    if any_row:
        lines.append(f"truth: f2f IoU {any_row['truth_f2f_iou']:.3f}, changes/s {any_row['truth_changes_per_s']:.2f};"
                     f" {any_row['frames']} frames in {any_row['clips']} clips, {any_row['appearances']} appearances")
    return "\n".join(lines)


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    return format(int(v) if spec == "d" else v, spec)


def off_vs_on(res: dict[str, dict[str, Any]], off: str = "raw", on: str = "default") -> dict[str, Any]:
    """How much the stabiliser changes the figures: ratios off/on (higher is better) and differences."""
    a, b = res[off], res[on]
    ratio = {k: (a[k] / b[k] if b[k] else (1.0 if not a[k] else None)) for k in ("flicker_per_s", "fp_per_frame")}
    delay = None if a["delay_frames"] is None or b["delay_frames"] is None else b["delay_frames"] - a["delay_frames"]
    return {"flicker_ratio": ratio["flicker_per_s"], "fp_ratio": ratio["fp_per_frame"],
            "dice_change": b["dice"] - a["dice"], "added_ms": b["ms"], "delay_change_frames": delay}


def off_vs_on_line(d: dict[str, Any]) -> str:
    """:func:`off_vs_on` in words."""
    def x(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}x"

    delay = "-" if d["delay_change_frames"] is None else f"{d['delay_change_frames']:+.2f}"
    return (f"flicker {x(d['flicker_ratio'])} lower, false-positive regions {x(d['fp_ratio'])} lower, Dice "
            f"{d['dice_change']:+.4f}, delay {delay} frames, {d['added_ms']:.2f} ms/frame added")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgeseg.benchmarks.temporal", description=__doc__.split("\n")[0],
                                epilog="\n".join(__doc__.split("Examples:")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, options=("artifact",), defaults={"artifact": "ultralightunet-s"}, title=None, helps={
        "artifact": "artifact path, or a model name with a shipped artifact (default ultralightunet-s)"})
    add_data_argument(p, what="labelled image (its val split)")
    p.add_argument("--clip-dir", nargs="+", metavar="DIR", help="score clip folders on disk instead of --data")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--frames", type=int, default=120, help="frames per clip segment (default 120)")
    p.add_argument("--segments", type=int, default=1, help="images per clip, cut together (default 1)")
    p.add_argument("--kind", default="pan-on", choices=KINDS,
                   help="pan-on: the polyp comes into view and leaves (default); camera: in view throughout")
    p.add_argument("--seed", type=int, default=0)
    add_runtime_arguments(p, options=("threads",), threads_default="2", title=None)
    p.add_argument("--write", metavar="DIR", help="write the clips to DIR/clip-NN (frames, masks, clip.json); no scoring")
    p.add_argument("--overwrite", action="store_true", help="with --write: replace clips already there")
    p.add_argument("--html", metavar="OUT.html", help="also write the figures as a self-contained HTML report")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        if not args.data.startswith("synthetic") and not Path(args.data).is_dir() and not args.clip_dir:
            raise FileNotFoundError(f"no such folder: {args.data}; give a labelled image folder or synthetic")
        if args.write:
            paths = write_clips(args.write, args.data, args.clips, args.frames, args.seed, args.kind, args.segments,
                                args.overwrite)
            print(f"wrote {len(paths)} clips: {', '.join(str(x) for x in paths)}")
            return 0
        if args.clip_dir:
            res = measure_folders(args.artifact, args.clip_dir, threads=args.threads or 2)
            what = f"{len(clip_folders(args.clip_dir))} clip folders ({', '.join(args.clip_dir)})"
        else:
            res = measure(args.artifact, args.data, args.clips, args.frames, args.seed, kind=args.kind,
                          segments=args.segments)
            what = f"{args.clips} {args.kind} clips x {args.segments} x {args.frames} frames over {args.data}"
    except (ValueError, FileNotFoundError) as exc:
        print(f"edgeseg: error: {exc}", file=sys.stderr)
        return 2
    if args.html:
        from edgeseg.benchmarks.html_report import write_clip_report

        write_clip_report(res, args.html, {"clips": what, "artifact": str(args.artifact), "threads": args.threads or 2})
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{what}, {args.artifact}, {args.threads or 2} threads")
    print(table(res))
    if all(k in res for k in OFF_ON):
        print("default vs raw: " + off_vs_on_line(off_vs_on(res)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

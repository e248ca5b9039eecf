"""Camera-motion clips with ground truth, and the demo's stabiliser: no one-frame ghosts, held regions, stable ids."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseg.common.camera import CameraMotion, camera_clip

pytest.importorskip("cv2")


def _scene(size=160):
    yy, xx = np.mgrid[0:size, 0:size]
    mask = ((yy - 70) ** 2 + (xx - 90) ** 2 < 22**2).astype(np.uint8)
    img = np.full((size, size, 3), 120, np.uint8)
    img[mask > 0] = (20, 40, 230)  # a blue "polyp" on grey
    return img, mask


def test_the_clip_moves_image_and_mask_together():
    img, mask = _scene()
    still = CameraMotion(blur=0, exposure=0, highlights=0, defocus_every=0, drop_rate=0)
    clip = list(camera_clip(img, mask, 30, seed=2, motion=still, size=96))
    assert len(clip) == 30 and all(f.shape == (96, 96, 3) and m.shape == (96, 96) for f, m, _ in clip)
    centres = []
    for frame, m, _ in clip:
        blue = frame[..., 2].astype(int) - frame[..., 0] > 100
        inter, union = (blue & (m > 0)).sum(), (blue | (m > 0)).sum()
        assert m.any() and inter / union > 0.9  # the mask is where the polyp is, frame after frame
        centres.append(np.argwhere(m).mean(0))
    assert np.ptp(np.array(centres), axis=0).max() > 5  # and it does move
    again = list(camera_clip(img, mask, 30, seed=2, motion=still, size=96))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(clip, again))  # seeded: the same clip


def test_dropped_frames_leave_gaps_and_effects_change_the_frames():
    img, mask = _scene()
    clip = list(camera_clip(img, mask, 60, seed=1, motion=CameraMotion(drop_rate=0.2)))
    ts = [info["t"] for _, _, info in clip]
    assert len(clip) == 60 and ts[-1] > 60 and any(b - a > 1 for a, b in zip(ts, ts[1:]))
    assert any(info["defocus"] for _, _, info in clip) and any(info["blur"] > 1 for _, _, info in clip)
    with pytest.raises(ValueError, match="differ in size"):
        next(camera_clip(img, mask[:10], 1))


def _disc(cx, size=96, r=12):
    yy, xx = np.mgrid[0:size, 0:size]
    return ((yy - 48) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8)


def test_stabiliser_hides_one_frame_ghosts_holds_lost_regions_and_keeps_ids():
    from edgeseg.apps.endoscopy.stabilize import Stabilizer, StabilizerConfig

    stab = Stabilizer(StabilizerConfig(ema=1.0, on=0.5, off=0.5, show_after=2, keep_for=3))
    shown, ids = [], []
    for t in range(12):
        m = _disc(30 + 2 * t)
        if t == 5:
            m[80:90, 5:15] = 1  # a one-frame ghost
        if t in (7, 8):
            m[:] = 0  # the polyp is lost for two frames (motion blur)
        out = stab(m)
        shown.append(out.mask.copy())
        ids.append([tr.id for tr in out.tracks])
    assert not shown[0].any() and shown[1].any()  # a new region waits show_after frames
    assert not shown[5][80:90, 5:15].any()  # the ghost is never shown
    assert shown[7].any() and shown[8].any()  # held through the two lost frames
    assert all(i == [ids[1][0]] for i in ids[1:])  # one id from start to end
    long_gap = Stabilizer(StabilizerConfig(ema=1.0, on=0.5, off=0.5, show_after=1, keep_for=1))
    for m in [_disc(40), np.zeros((96, 96), np.uint8), np.zeros((96, 96), np.uint8)]:
        last = long_gap(m)
    assert not last.mask.any()  # dropped once lost for more than keep_for frames


def test_pass_through_settings_change_nothing_and_bad_settings_are_refused():
    from edgeseg.apps.endoscopy.stabilize import Stabilizer, StabilizerConfig

    stab = Stabilizer(StabilizerConfig(ema=1.0, on=0.5, off=0.5, min_area=0.0, show_after=1, keep_for=0))
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = (rng.random((40, 40)) > 0.7).astype(np.uint8)
        assert np.array_equal(stab(m).mask, m)
    with pytest.raises(ValueError, match="off <= on"):
        StabilizerConfig(on=0.2, off=0.4)


def test_default_stabiliser_flickers_less_than_raw_masks_on_clips():
    pytest.importorskip("onnxruntime")
    from edgeseg.benchmarks.temporal import SETTINGS, measure

    res = measure("ultralightunet-s", "synthetic", clips=2, frames=30,
                  settings={k: SETTINGS[k] for k in ("raw", "default")})
    assert res["raw"]["frames"] == res["default"]["frames"] == 60
    assert res["default"]["count_changes_per_100"] < res["raw"]["count_changes_per_100"]
    assert res["default"]["ghosts_per_100"] <= res["raw"]["ghosts_per_100"]

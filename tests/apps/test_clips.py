"""Clips with ground truth on disk, the demo playing them, and the video figures (issue 17, items 3-5).

- pan_on_clip: the polyp comes into view and leaves again, the mask stays on it;
- write_clip / open_clip: lossless, atomic, refuse what they should; any folder of frames plays;
- the demo plays a clip folder frame by frame, or paced at the clip's fps (--realtime);
- the video figures (edgeseg.benchmarks.temporal.score_clip) on a hand-made clip whose every figure is known;
- edgeseg evaluate --video reports what the API reports, and the clip on disk scores as it did in memory;
- the log's per-stage times and the latency table (edgeseg.apps.endoscopy.timing / .latency).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("cv2")

from edgeseg.common.camera import CameraMotion, pan_on_clip  # noqa: E402
from edgeseg.common.clips import open_clip, write_clip  # noqa: E402
from tests.conftest import REPO  # noqa: E402

STILL = CameraMotion(blur=0, exposure=0, highlights=0, defocus_every=0, drop_rate=0)


def _scene(size=160, r=22):
    """A white "polyp" on a dark background (what the oracle runtime of test_demo calls a polyp)."""
    yy, xx = np.mgrid[0:size, 0:size]
    mask = ((yy - 70) ** 2 + (xx - 90) ** 2 < r * r).astype(np.uint8)
    img = np.full((size, size, 3), 40, np.uint8)
    img[mask > 0] = 250
    return img, mask


# ---- the simulator: a polyp that comes into view ---------------------------------------------------------------
def test_pan_on_clip_brings_the_polyp_into_view_and_out_again():
    img, mask = _scene()
    clip = list(pan_on_clip(img, mask, 60, seed=1, motion=STILL, size=96))
    assert len(clip) == 60
    seen = np.array([m.mean() for _, m, _ in clip])
    phases = [info["phase"] for _, _, info in clip]
    assert seen[:10].max() == 0 and seen[-10:].max() == 0  # starts and ends on a polyp-free view
    assert seen[phases.index("on")] > 0.05  # and looks at the polyp in between
    rising = [i for i in range(1, 60) if seen[i] > 0.01 and seen[i - 1] <= 0.01]
    assert len(rising) == 1 and phases[rising[0]] == "approach"
    for frame, m, _ in clip:  # the mask is where the polyp is, frame after frame
        white = frame[..., 0] > 150
        if m.sum() > 50:
            assert (white & (m > 0)).sum() / (white | (m > 0)).sum() > 0.9
    again = list(pan_on_clip(img, mask, 60, seed=1, motion=STILL, size=96))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(clip, again))  # seeded


def test_pan_on_clip_refuses_what_cannot_come_into_view():
    img, _ = _scene()
    with pytest.raises(ValueError, match="fills the image"):
        next(pan_on_clip(img, np.ones(img.shape[:2], np.uint8), 30))
    with pytest.raises(ValueError, match="no polyp"):
        next(pan_on_clip(img, np.zeros(img.shape[:2], np.uint8), 30))
    with pytest.raises(ValueError, match="n_frames >= 12"):
        next(pan_on_clip(img, _scene()[1], 5))


# ---- clips on disk ---------------------------------------------------------------------------------------------
def test_clip_folders_round_trip_losslessly_and_atomically(tmp_path):
    img, mask = _scene()
    clip = list(pan_on_clip(img, mask, 24, seed=2, size=64))
    out = write_clip(tmp_path / "c", clip, fps=25.0, meta={"source": "test"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no staging folder left
    got = open_clip(out)
    assert len(got) == 24 and got.fps == 25.0 and got.meta["source"] == "test"
    assert got.meta["frame_info"][3]["phase"] == clip[3][2]["phase"]
    for (f, m, _), (f2, m2) in zip(clip, got):
        assert np.array_equal(f, f2) and np.array_equal(m, m2)  # PNG: exactly the frames simulated
    with pytest.raises(ValueError, match="already holds a clip"):
        write_clip(out, clip)
    write_clip(out, clip[:5], overwrite=True)
    assert len(open_clip(out)) == 5 and sorted(p.name for p in tmp_path.iterdir()) == ["c"]
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match="not a clip folder"):
        write_clip(tmp_path / "other", clip, overwrite=True)
    with pytest.raises(ValueError, match="no frames"):
        write_clip(tmp_path / "empty", [])
    assert not (tmp_path / "empty").exists()
    (out / "frames" / "000004.png").unlink()
    with pytest.raises(ValueError, match="says 5 frames but frames/ holds 4"):
        open_clip(out)


def test_any_folder_of_frames_plays_in_natural_order(tmp_path):
    from PIL import Image

    for i in (10, 2, 1):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(tmp_path / f"f{i}.png")
    got = open_clip(tmp_path)
    assert [p.name for p in got.frames] == ["f1.png", "f2.png", "f10.png"] and got.masks is None
    assert got.fps == 30.0 and int(got.read(2)[0][0, 0, 0]) == 10
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "masks" / "f1.png")
    with pytest.raises(ValueError, match="2 frame\\(s\\) without a mask"):
        open_clip(tmp_path)
    with pytest.raises(FileNotFoundError, match="no frames in"):
        open_clip(_empty_dir(tmp_path))


def _empty_dir(tmp_path):
    d = tmp_path / "nothing"
    d.mkdir()
    return d


# ---- the demo plays a clip --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def disc_clip(tmp_path_factory):
    img, mask = _scene()
    return write_clip(tmp_path_factory.mktemp("clips") / "disc", pan_on_clip(img, mask, 40, seed=0, motion=STILL,
                                                                                size=64), fps=50.0)


def test_the_demo_plays_a_clip_folder_every_frame_with_stage_times(disc_clip, tmp_path):
    from edgeseg.apps.endoscopy import DemoConfig, FolderSource, latency_report, open_source, run_demo

    from tests.apps.test_demo import _oracle_segmenter

    assert isinstance(open_source(str(disc_clip)), FolderSource)
    log = tmp_path / "c.jsonl"
    seen = []
    summary = run_demo(DemoConfig(source=str(disc_clip), headless=True, log=str(log), stabilize=False),
                       segmenter=_oracle_segmenter(), on_frame=seen.append)
    assert summary.status == "completed" and summary.frames == 40 and summary.dropped == 0
    assert summary.info["source"] == "disc/ (40 frames at 50 fps)"
    clip = open_clip(disc_clip)
    for fr, (frame, truth) in zip(seen, clip):  # the frames on disk, and the oracle finds the disc in them
        assert np.array_equal(fr.frame, frame)
        if truth.sum() > 50:
            assert (fr.mask & truth).sum() / (fr.mask | truth).sum() > 0.8
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["source_frame"] for r in records] == list(range(40))
    for r in records:  # capture to shown covers every stage in between
        inner = r["pre_ms"] + r["infer_ms"] + r["post_ms"] + r["overlay_ms"] + r["output_ms"]
        assert r["e2e_ms"] >= inner - 0.01 and r["t_shown"] >= r["t"]
    assert [r["t_shown"] for r in records] == sorted(r["t_shown"] for r in records)
    rep = latency_report(records)
    assert rep["frames"] == 40 and set(rep["stages_ms"]) >= {"read", "pre", "infer", "post", "overlay", "output",
                                                              "e2e"}
    assert summary.e2e_ms["p50"] == pytest.approx(np.percentile([r["e2e_ms"] for r in records], 50), abs=0.01)


def test_realtime_plays_a_clip_at_its_frame_rate(disc_clip, tmp_path):
    from edgeseg.apps.endoscopy import DemoConfig, latency_report, run_demo

    from tests.apps.test_demo import _oracle_segmenter

    log = tmp_path / "rt.jsonl"
    summary = run_demo(DemoConfig(source=str(disc_clip), headless=True, log=str(log), realtime=True),
                       segmenter=_oracle_segmenter())
    assert summary.status == "completed" and summary.captured == 40
    rep = latency_report(json.loads(x) for x in log.read_text().splitlines())
    assert rep["interval_ms"]["captured"]["p50"] == pytest.approx(20.0, abs=3.0)  # clip.json: 50 fps
    assert rep["fps"] == pytest.approx(50.0, rel=0.2)


def test_a_folder_without_frames_is_refused_in_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "edgeseg", "demo", "--artifact", "x.onnx", "--source",
                          str(_empty_dir(tmp_path)), "--headless"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and "no frames in this folder" in res.stderr and "Traceback" not in res.stderr


# ---- the video figures --------------------------------------------------------------------------------------------
def _hand_made_clip():
    """16 frames at 10 fps: a polyp in view in frames 4-11. The model misses frame 4 (it comes into view) and 8
    (a dropout), and sees a ghost in frame 2."""
    disc = np.zeros((96, 96), np.uint8)
    yy, xx = np.mgrid[:96, :96]
    disc[(yy - 48) ** 2 + (xx - 60) ** 2 < 144] = 1
    truths = [disc if 4 <= i <= 11 else np.zeros_like(disc) for i in range(16)]
    raw = [disc.copy() if 5 <= i <= 11 and i != 8 else np.zeros_like(disc) for i in range(16)]
    raw[2][5:15, 5:15] = 1
    return raw, truths


def test_video_figures_on_a_clip_whose_every_figure_is_known():
    from edgeseg.benchmarks.temporal import SETTINGS, score_clip, summarise

    raw, truths = _hand_made_clip()
    res = summarise(score_clip(raw, truths, fps=10.0, settings={k: SETTINGS[k] for k in ("raw", "default")}))
    r, d = res["raw"], res["default"]
    # raw: counts 0 0 1 0 0 1 1 1 0 1 1 1 0 0 0 0 -> 6 changes in 1.6 s; one ghost; Dice 0 on frames 2, 4, 8
    assert r["frames"] == 16 and r["flicker_per_s"] == pytest.approx(6 / 1.6)
    assert r["truth_changes_per_s"] == pytest.approx(2 / 1.6) and r["fp_per_frame"] == pytest.approx(1 / 16)
    assert r["dice"] == pytest.approx(13 / 16) and r["f2f_iou"] == pytest.approx(9 / 15)
    assert r["truth_f2f_iou"] == pytest.approx(13 / 15)
    assert r["dice_in_view"] == pytest.approx(6 / 8) and r["clean_share"] == pytest.approx(7 / 8)
    assert (r["appearances"], r["missed"], r["delay_frames"], r["delay_ms"]) == (1, 0, 1.0, pytest.approx(100.0))
    # default: the ghost never shows, the dropout is bridged, the box shows one frame later (show_after 2) and
    # is held 4 frames after the polyp left (hysteresis 1 frame + keep_for 3): 4 false regions
    assert d["flicker_per_s"] == pytest.approx(1 / 1.6) and d["fp_per_frame"] == pytest.approx(4 / 16)
    assert d["dice"] == pytest.approx(10 / 16) and d["f2f_iou"] == pytest.approx(14 / 15)
    assert d["dice_in_view"] == pytest.approx(6 / 8) and d["clean_share"] == pytest.approx(4 / 8)
    assert (d["delay_frames"], d["delay_ms"]) == (2.0, pytest.approx(200.0))
    assert d["ms"] > 0 and r["ghosts_per_100"] == pytest.approx(100 / 16)
    never = score_clip([np.zeros_like(t) for t in truths], truths, fps=10.0, settings={"raw": SETTINGS["raw"]})
    n = never["raw"].summary()
    assert (n["appearances"], n["missed"], n["delay_frames"]) == (1, 1, None)
    with pytest.raises(ValueError, match="one mask per frame"):
        score_clip(raw[:3], truths)


def test_latency_table_of_known_records():
    from edgeseg.apps.endoscopy.timing import latency_report

    recs = [{"t": 0.04 * i, "t_shown": 0.04 * i + 0.01 + (0.002 if i % 2 else 0.0), "read_ms": 1.0, "pre_ms": 0.5,
             "infer_ms": float(i), "post_ms": 0.2, "stabilize_ms": 0.3, "overlay_ms": 0.4, "output_ms": 0.1,
             "e2e_ms": 10.0 + i, "dropped_total": 0} for i in range(101)]
    rep = latency_report(recs)
    assert rep["frames"] == 101 and rep["fps"] == pytest.approx(101 / 4.0)
    inf = rep["stages_ms"]["infer"]
    assert (inf["p50"], inf["p90"], inf["p99"]) == (50.0, 90.0, 99.0)
    assert rep["stages_ms"]["post"]["mean"] == pytest.approx(0.5)  # post-processing + the stabiliser
    iv = rep["interval_ms"]["shown"]
    assert iv["p50"] == pytest.approx(40.0, abs=2.01) and iv["jitter"] == pytest.approx(2.0, abs=1e-6)
    assert rep["interval_ms"]["captured"]["jitter"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="older demo"):
        latency_report([{"t": 0.0, "infer_ms": 1.0}])


def test_latency_cli_prints_the_table_and_says_what_to_do(tmp_path):
    log = tmp_path / "d.jsonl"
    log.write_text("".join(json.dumps({"t": 0.03 * i, "t_shown": 0.03 * i + 0.005, "read_ms": 0.1, "pre_ms": 0.2,
                                       "infer_ms": 5.0, "post_ms": 0.1, "overlay_ms": 0.3, "output_ms": 0.05,
                                       "e2e_ms": 6.0}) + "\n" for i in range(31)))
    res = subprocess.run([sys.executable, "-m", "edgeseg.apps.endoscopy.latency", str(log)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "RuntimeWarning" not in res.stderr, res.stderr
    assert "31 frames, 34.4 FPS" in res.stdout and "capture->shown" in res.stdout
    bad = subprocess.run([sys.executable, "-m", "edgeseg.apps.endoscopy.latency", str(tmp_path / "no.jsonl")],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--log" in bad.stderr


# ---- edgeseg evaluate --video -------------------------------------------------------------------------------------
def test_evaluate_video_reports_what_the_api_measures_in_memory(tmp_path):
    pytest.importorskip("onnxruntime")
    from edgeseg.apps.endoscopy.inference import Segmenter
    from edgeseg.benchmarks.temporal import OFF_ON, SETTINGS, make_clips, score_clip, summarise, write_clips

    from edgeseg import runtimes

    paths = write_clips(tmp_path / "clips", "synthetic", clips=2, frames=24, seed=3)
    assert [p.name for p in paths] == ["clip-00", "clip-01"]
    res = subprocess.run([sys.executable, "-m", "edgeseg", "evaluate", "--model", "ultralightunet-s", "--video",
                          str(tmp_path / "clips"), "--json", "--out", str(tmp_path / "ev")], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert set(got["settings"]) == set(OFF_ON) and len(got["clips"]) == 2
    # the same clips scored in memory (no disk): the same figures, so the PNG round trip changes nothing
    tallies: dict = {}
    with runtimes.load("ultralightunet-s", threads=2) as rt:
        seg = Segmenter(rt)
        for clip, _ in make_clips("synthetic", 2, 24, seed=3, kind="pan-on"):
            score_clip([seg(f).mask for f, _, _ in clip], [m for _, m, _ in clip], 30.0,
                       {k: SETTINGS[k] for k in OFF_ON}, tallies)
    want = summarise(tallies)
    for name in OFF_ON:
        for key in ("frames", "dice", "f2f_iou", "flicker_per_s", "fp_per_frame", "appearances", "delay_frames"):
            assert got["settings"][name][key] == pytest.approx(want[name][key]), (name, key)
    assert got["settings"]["raw"]["frames"] == 48 and got["settings"]["raw"]["appearances"] >= 2
    csv = (tmp_path / "ev" / "per_clip.csv").read_text().splitlines()
    assert csv[0].startswith("clip,setting,dice") and len(csv) == 1 + 2 * 2


def test_evaluate_video_refuses_bad_input_in_one_line(tmp_path, disc_clip, capsys):
    from PIL import Image

    from edgeseg.cli import main

    bare = tmp_path / "bare"
    bare.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(bare / "0.png")
    cases = [(["--weights", "x.pt"], "convert the checkpoint first"),
             (["--model", "ultralightunet-s", "--video-settings", "raw,smooth"], "unknown --video-settings smooth"),
             (["--model", "ultralightunet-s", "--tta", "flips"], "--tta is for still images")]
    cases += [([], "give --artifact PATH")]
    for extra, msg in cases:
        assert main(["evaluate", "--video", str(disc_clip), *extra]) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], (extra, err)
    assert main(["evaluate", "--video", str(bare), "--model", "ultralightunet-s"]) == 2
    assert "has no masks/" in capsys.readouterr().err
    assert main(["evaluate", "--video", str(tmp_path / "none"), "--model", "ultralightunet-s"]) == 2
    assert "no such clip folder" in capsys.readouterr().err


def test_the_clip_report_is_one_self_contained_page(tmp_path):
    pytest.importorskip("matplotlib")
    from edgeseg.benchmarks.html_report import write_clip_report
    from edgeseg.benchmarks.temporal import SETTINGS, score_clip, summarise

    raw, truths = _hand_made_clip()
    res = summarise(score_clip(raw, truths, fps=10.0, settings={k: SETTINGS[k] for k in ("raw", "default")}))
    page = write_clip_report(res, tmp_path / "clips.html", {"clips": "hand-made"}).read_text()
    assert page.count("<tr><td>") == 2 and "<td>0.8125</td>" in page and "<td>0.6250</td>" in page
    assert page.count("data:image/png;base64,") == 1 and "src=\"http" not in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clips.html"]

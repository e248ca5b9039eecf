"""The endoscopy demo (apps/endoscopy, `edgeseg demo`): counts, recording, overlay geometry, failure exits.

Every test runs headless on a short generated video or the synthetic sequence with a tiny ONNX artifact
(ultralightunet-t at 64x64) or an "oracle" runtime whose logits come from the frame itself, so the mask the
demo must draw is known exactly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edgeseg.apps.endoscopy import (  # noqa: E402
    EXIT_CODES,
    DemoConfig,
    LatestFrameGrabber,
    MaskInfo,
    MjpegServer,
    Segmenter,
    Source,
    SourceError,
    SyntheticSource,
    VideoFileSource,
    analyse_mask,
    open_segmenter,
    render,
    run_demo,
)
from edgeseg.apps.endoscopy.overlay import HudInfo, hud_box  # noqa: E402
from edgeseg.apps.endoscopy.pipeline import LoopState, handle_key  # noqa: E402
from edgeseg.runtimes import Runtime  # noqa: E402
from edgeseg.runtimes.manifest import Manifest, Preprocessing, TensorSpec  # noqa: E402

from tests.conftest import REPO, tail_losing_writer  # noqa: E402
from tests.test_packaging import _BLOCK_TORCH  # noqa: E402

N_FRAMES = 24
FRAME_HW = (72, 96)  # not the model's 64x64: the mask must be mapped back to the frame


def _disc_frame(i: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB frame i of the test clip (a white disc moving over a dark textured background) and its mask."""
    h, w = FRAME_HW
    yy, xx = np.mgrid[:h, :w]
    bg = (40 + 15 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.uint8)
    rgb = np.stack([bg, bg // 2 + 10, bg // 3 + 5], axis=-1)
    cy, cx, r = 36, 20 + 2 * i, 14
    mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
    rgb[mask > 0] = (250, 250, 250)
    return np.ascontiguousarray(rgb), mask


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A short MJPG .avi written with cv2.VideoWriter."""
    path = tmp_path_factory.mktemp("clip") / "clip.avi"
    h, w = FRAME_HW
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h))
    assert wr.isOpened()
    for i in range(N_FRAMES):
        wr.write(cv2.cvtColor(_disc_frame(i)[0], cv2.COLOR_RGB2BGR))
    wr.release()
    return path


def _decode_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory) -> Path:
    """ultralightunet-t exported at 64x64 (legacy exporter, opset 17) with its manifest."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from edgeseg import create_model

    out = tmp_path_factory.mktemp("artifact") / "ult-t-64.onnx"
    model = create_model("ultralightunet-t").eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's tracer warnings
        torch.onnx.export(
            model,
            torch.zeros(1, 3, 64, 64),
            str(out),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
        )
    Manifest(
        artifact=out.name,
        target="onnx",
        precision="fp32",
        model="ultralightunet-t",
        inputs=[TensorSpec("input", [1, 3, 64, 64])],
        outputs=[TensorSpec("logits", [1, 1, 64, 64])],
        preprocessing=Preprocessing(size=[64, 64]),
    ).save(str(out) + ".json")
    return out


class OracleRuntime(Runtime):
    """A runtime whose logits say "polyp" where the input is bright: the demo's expected mask is known."""

    name = "oracle"
    module = "numpy"

    def __init__(self, size: int = 64, fail_after: int | None = None):
        manifest = Manifest(
            artifact="oracle",
            target="onnx",
            precision="fp32",
            model="oracle",
            inputs=[TensorSpec("input", [1, 3, size, size])],
            outputs=[TensorSpec("logits", [1, 1, size, size])],
            preprocessing=Preprocessing(size=[size, size]),
        )
        super().__init__("oracle", manifest=manifest)
        self.calls = 0
        self.fail_after = fail_after

    def _load_impl(self) -> None:
        pass

    def _infer_impl(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("device lost")
        # white (normalised ~ +2) -> positive, dark background (~ -1.5) -> negative
        return (x[:, :1] * 4.0).astype(np.float32)


def _oracle_segmenter(**kw) -> Segmenter:
    return Segmenter(OracleRuntime(**kw).load())


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgeseg", "demo", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---- end to end ---------------------------------------------------------------------------------------
def test_headless_cli_file_every_frame_logged_and_recorded(clip, onnx_artifact, tmp_path):
    rec, log = tmp_path / "out.avi", tmp_path / "out.jsonl"
    res = _cli(
        "--artifact",
        str(onnx_artifact),
        "--source",
        str(clip),
        "--headless",
        "--record",
        str(rec),
        "--log",
        str(log),
        "--summary-json",
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    frames_in = _decode_count(clip)
    assert frames_in == N_FRAMES
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert summary["status"] == "completed"
    assert summary["frames"] == len(records) == frames_in and summary["dropped"] == 0
    assert [r["frame"] for r in records] == list(range(frames_in))
    assert [r["source_frame"] for r in records] == list(range(frames_in))
    for r in records:
        assert {"frame", "timestamp", "infer_ms", "mask_area_pct", "polyps"} <= set(r)
        assert r["infer_ms"] > 0 and 0 <= r["mask_area_pct"] <= 100
    ts = [r["timestamp"] for r in records]
    assert ts == sorted(ts)
    assert _decode_count(rec) == frames_in
    cap = cv2.VideoCapture(str(rec))
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == FRAME_HW[::-1]
    cap.release()
    lat = summary["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["max"]
    assert summary["info"]["runtime"] == "onnxruntime" and summary["info"]["model"] == "ultralightunet-t"
    assert set(summary["stages_ms"]) == {"read", "pre", "infer", "post", "overlay", "output"}
    # no temp files left beside the outputs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.avi", "out.jsonl"]


def test_overlay_is_exactly_where_the_mask_is(clip, tmp_path):
    """Oracle runtime: the drawn mask matches the disc; the tint covers every mask pixel and nothing else."""
    seen = []
    summary = run_demo(
        DemoConfig(source=str(clip), headless=True, log=str(tmp_path / "l.jsonl"), stabilize=False),  # raw overlay
        segmenter=_oracle_segmenter(),
        on_frame=seen.append,
    )
    assert summary.status == "completed" and summary.frames == N_FRAMES == len(seen)
    hud = None
    for i, fr in enumerate(seen):
        truth = _disc_frame(i)[1]
        inter, union = (fr.mask & truth).sum(), (fr.mask | truth).sum()
        assert inter / union > 0.9  # geometry survives 96x72 -> 64x64 -> 96x72 (no flip, no shift)
        # the overlay without the HUD and boxes: changed pixels == mask pixels, exactly
        info = analyse_mask(fr.mask)
        plain = render(fr.frame, fr.mask, MaskInfo([], info.pixels, info.area_pct), hud=None)
        changed = (plain != fr.frame).any(axis=2)
        assert np.array_equal(changed, fr.mask.astype(bool)), i
        # the recorded frame (HUD + boxes included): every mask pixel tinted, nothing changed outside mask,
        # boxes, labels and HUD
        changed = (fr.annotated != fr.frame).any(axis=2)
        assert changed[fr.mask > 0].all()
        hud = hud or HudInfo("oracle", "oracle", "cpu", "fp32")
        x, y, w, h = hud_box(fr.frame.shape, hud)
        allowed = fr.mask.astype(bool).copy()
        allowed[y : y + h, x : x + w] = True
        for r in info.regions:
            allowed[max(0, r.y - 16) : r.y + r.h + 16, max(0, r.x - 1) : r.x + r.w + 40] = True  # box + label
        assert not (changed & ~allowed).any(), i
        # the tint is green: mask pixels move towards (0, 255, 0)
        px = plain[fr.mask > 0].astype(int) - fr.frame[fr.mask > 0].astype(int)
        assert (px[:, 1] >= 0).all() and (px[:, 0] < 0).all() and (px[:, 2] < 0).all()


def test_synthetic_source_by_default_and_area_in_log(tmp_path):
    log = tmp_path / "s.jsonl"
    summary = run_demo(
        DemoConfig(headless=True, log=str(log), max_frames=6, size=64, serve=0), segmenter=_oracle_segmenter()
    )
    assert summary.status == "completed" and summary.frames == 6
    assert summary.info["source"].startswith("synthetic")
    assert summary.outputs["stream"].startswith("http://127.0.0.1:")
    records = [json.loads(x) for x in log.read_text().splitlines()]
    for r in records:
        assert r["mask_pixels"] == round(r["mask_area_pct"] / 100 * 64 * 64)
        assert r["polyps"] == len(r["regions"])


# ---- failure handling --------------------------------------------------------------------------------
class VanishingCamera(Source):
    """A live camera that delivers ``n`` frames and then nothing (unplugged)."""

    live = True
    finite = False
    name = "fake camera"

    def __init__(self, n: int):
        super().__init__()
        self.n, self.i = n, 0

    def _read(self) -> np.ndarray | None:
        if self.i >= self.n:
            return None
        self.i += 1
        time.sleep(0.005)
        return _disc_frame(self.i % N_FRAMES)[0]


def test_vanishing_camera_exits_3_with_recording_finalised(tmp_path):
    rec, log = tmp_path / "cam.avi", tmp_path / "cam.jsonl"
    cfg = DemoConfig(headless=True, record=str(rec), log=str(log), camera_timeout=0.3)
    summary = run_demo(cfg, segmenter=_oracle_segmenter(), source=VanishingCamera(12))
    assert summary.status == "source-lost" and EXIT_CODES[summary.status] == 3
    assert "stopped delivering frames: none for 0.3 s after 12 frames" in summary.message
    assert summary.captured == 12 and summary.frames + summary.dropped == 12 and summary.frames >= 1
    assert _decode_count(rec) == summary.frames
    assert len(log.read_text().splitlines()) == summary.frames
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam.avi", "cam.jsonl"]


def test_model_name_runs_through_the_torch_runtime(tmp_path):
    torch = pytest.importorskip("torch")
    from edgeseg.runtimes.torch_runtime import TorchRuntime

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights warning
        seg = open_segmenter(model="ultralightunet-t", threads=1, warm_up=1)
    try:
        from edgeseg.weights import read_checkpoint, shipped_weights

        shipped = shipped_weights("ultralightunet-t")  # shipped weights carry the size they were trained at
        side = read_checkpoint(shipped)["preprocessing"]["size"][0] if shipped else 256
        assert isinstance(seg.runtime, TorchRuntime) and seg.size == (side, side)
        # the same frame through the demo's pre/post-processing and directly through the torch model
        frame = _disc_frame(0)[0]
        res = seg(frame, threshold=0.5)
        x = (
            cv2.resize(frame, (side, side), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
            - np.float32([0.485, 0.456, 0.406])
        ) / np.float32([0.229, 0.224, 0.225])
        with torch.no_grad():
            ref = seg.runtime.model(torch.from_numpy(x.transpose(2, 0, 1)[None].copy())).numpy()
        ref = cv2.resize(1 / (1 + np.exp(-ref[0, 0])), FRAME_HW[::-1], interpolation=cv2.INTER_LINEAR) > 0.5
        assert res.mask.shape == FRAME_HW and (res.mask == ref).mean() > 0.99
        summary = run_demo(DemoConfig(headless=True, max_frames=2, size=64), segmenter=seg)
        assert summary.frames == 2 and summary.info["runtime"] == "torch"
    finally:
        seg.runtime.close()
    with pytest.raises(ValueError, match="torch runtime"):
        open_segmenter(model="ultralightunet-t", runtime="onnxruntime")


class HangingCamera(VanishingCamera):
    """After ``n`` frames ``read()`` blocks (a driver that hangs when the device is pulled)."""

    def __init__(self, n: int):
        super().__init__(n)
        self.release = threading.Event()

    def _read(self) -> np.ndarray | None:
        if self.i >= self.n:
            self.release.wait(20)
            return None
        return super()._read()


def test_camera_hanging_in_read_is_lost_after_the_timeout(tmp_path):
    cam = HangingCamera(5)
    t0 = time.perf_counter()
    summary = run_demo(
        DemoConfig(headless=True, log=str(tmp_path / "h.jsonl"), camera_timeout=0.3),
        segmenter=_oracle_segmenter(),
        source=cam,
    )
    took = time.perf_counter() - t0
    cam.release.set()
    assert summary.status == "source-lost" and "none for 0.3 s after 5 frames" in summary.message
    assert took < 5 and len((tmp_path / "h.jsonl").read_text().splitlines()) == summary.frames >= 1


def test_sigterm_on_a_serving_realtime_run_finalises_everything(onnx_artifact, tmp_path):
    """The way a headless device run ends (ssh closes, `timeout`, systemd): SIGTERM -> exit 0, files whole."""
    rec, log = tmp_path / "t.avi", tmp_path / "t.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgeseg",
            "demo",
            "--artifact",
            str(onnx_artifact),
            "--source",
            "synthetic",
            "--size",
            "64",
            "--realtime",
            "--headless",
            "--serve",
            "0",
            "--record",
            str(rec),
            "--log",
            str(log),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        url = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert url, line
        jpg = urllib.request.urlopen(url.group(1) + "frame.jpg", timeout=30).read()
        assert cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR).shape == (64, 64, 3)
        time.sleep(0.5)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "edgeseg demo: interrupted" in out
    n = len(log.read_text().splitlines())
    assert n >= 1 and _decode_count(rec) == n
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.avi", "t.jsonl"]


def test_runtime_failure_mid_stream_keeps_what_was_recorded(clip, tmp_path):
    rec = tmp_path / "r.avi"
    # the oracle fails on its 7th call: the untimed first pass + frames 0-4 succeed, frame 5 fails
    summary = run_demo(
        DemoConfig(source=str(clip), headless=True, record=str(rec)),
        segmenter=_oracle_segmenter(fail_after=6),
    )
    assert summary.status == "error" and EXIT_CODES["error"] == 1 and "device lost" in summary.message
    assert summary.frames == 5
    assert _decode_count(rec) == 5


def test_ctrl_c_stops_after_the_current_frame_with_outputs_finalised(clip, tmp_path):
    rec, log = tmp_path / "i.avi", tmp_path / "i.jsonl"

    def ctrl_c_at_frame_6(fr):
        if fr.record["frame"] == 6:
            signal.raise_signal(signal.SIGINT)  # as if the user pressed Ctrl-C while frame 6 was in flight

    before = signal.getsignal(signal.SIGINT)
    summary = run_demo(
        DemoConfig(source=str(clip), headless=True, record=str(rec), log=str(log)),
        segmenter=_oracle_segmenter(),
        on_frame=ctrl_c_at_frame_6,
    )
    assert summary.status == "interrupted" and EXIT_CODES["interrupted"] == 0
    # frame 6 completes; nothing after it starts; the three counts agree
    assert summary.frames == 7 and _decode_count(rec) == 7 and len(log.read_text().splitlines()) == 7
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


def test_second_ctrl_c_stops_at_once(clip, tmp_path):
    def two_signals(fr):
        if fr.record["frame"] == 3:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)

    rec = tmp_path / "j.avi"
    summary = run_demo(
        DemoConfig(source=str(clip), headless=True, record=str(rec)),
        segmenter=_oracle_segmenter(),
        on_frame=two_signals,
    )
    assert summary.status == "interrupted" and summary.frames == 4 and _decode_count(rec) == 4


@pytest.mark.parametrize(
    "source, message",
    [
        ("7", "cannot open camera 7"),
        ("/dev/video77", "no camera at /dev/video77"),
        ("missing.mp4", "no such file"),
        ("BAD", "cannot read video"),
    ],
)
def test_bad_sources_exit_2_in_one_line(source, message, onnx_artifact, tmp_path):
    if source == "BAD":
        bad = tmp_path / "bad.mp4"
        bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        source = str(bad)
    rec = tmp_path / "never.avi"
    res = _cli("--artifact", str(onnx_artifact), "--source", source, "--headless", "--record", str(rec))
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 2 and last.startswith("edgeseg: error:") and message in last, res.stderr
    assert "Traceback" not in res.stderr and not list(tmp_path.glob("*.avi"))


def test_artifact_model_mismatches_exit_2(onnx_artifact, tmp_path):
    res = _cli(
        "--artifact", str(onnx_artifact), "--model", "ultralightunet-s", "--headless", "--max-frames", "2"
    )
    assert res.returncode == 2 and "converted from 'ultralightunet-t', not 'ultralightunet-s'" in res.stderr
    # a manifest that claims 96x96 for a 64x64 model: caught by the warm-up, before any frame
    lying = tmp_path / "lying.onnx"
    lying.write_bytes(onnx_artifact.read_bytes())
    m = Manifest.load(str(onnx_artifact) + ".json")
    m.artifact, m.inputs[0].shape, m.outputs[0].shape = lying.name, [1, 3, 96, 96], [1, 1, 96, 96]
    m.preprocessing.size = [96, 96]
    m.save(str(lying) + ".json")
    with pytest.raises(ValueError, match="do not match"):
        open_segmenter(str(lying))
    with pytest.raises(FileNotFoundError):
        open_segmenter(str(tmp_path / "nope.onnx"))
    with pytest.raises(ValueError, match="--artifact PATH"):
        open_segmenter()


@pytest.mark.skipif(
    bool(os.environ.get("DISPLAY")) and not re.search(r"GUI:\s+NONE", cv2.getBuildInformation()),
    reason="this OpenCV can open a window here",
)
def test_window_without_gui_says_use_headless(onnx_artifact):
    res = _cli("--artifact", str(onnx_artifact), "--max-frames", "2")
    assert res.returncode == 2 and "--headless" in res.stderr and "Traceback" not in res.stderr


def test_unreadable_file_source_raises_source_error(tmp_path):
    p = tmp_path / "empty.avi"
    p.write_bytes(b"")
    with pytest.raises(SourceError, match="cannot (read|decode) video"):
        VideoFileSource(p).open()


# ---- capture thread ----------------------------------------------------------------------------------
class CountingSource(Source):
    """A fast live source of numbered frames (the number is in pixel [0, 0])."""

    live = True
    finite = True
    name = "counter"

    def __init__(self, n: int, period_s: float):
        super().__init__()
        self.n, self.i, self.period_s = n, 0, period_s

    def _read(self) -> np.ndarray | None:
        if self.i >= self.n:
            return None
        time.sleep(self.period_s)
        f = np.zeros((4, 4, 3), np.uint8)
        f[0, 0, 0], f[0, 0, 1] = self.i % 256, self.i // 256
        self.i += 1
        return f


def test_latest_frame_grabber_serves_newest_and_counts_drops():
    grabber = LatestFrameGrabber(CountingSource(120, 0.001), pace=False).start()
    got = []
    try:
        while (fr := grabber.get(timeout=5.0)) is not None:
            got.append(fr.index)
            assert int(fr.image[0, 0, 0]) + 256 * int(fr.image[0, 0, 1]) == fr.index
            time.sleep(0.01)  # a slow consumer: ~10 frames arrive per frame consumed
    finally:
        grabber.stop()
    assert got == sorted(set(got)) and got[-1] == 119  # increasing, and the newest frame is never lost
    assert grabber.captured == 120 and len(got) + grabber.dropped == 120 and grabber.dropped > 20


def test_realtime_synthetic_drops_stale_frames_never_queues(tmp_path):
    """A 1 kHz 'camera' and a slow model: the demo processes far fewer frames than arrive, never a backlog."""

    class SlowOracle(OracleRuntime):
        def _infer_impl(self, x):
            time.sleep(0.02)
            return super()._infer_impl(x)

    log = tmp_path / "rt.jsonl"
    summary = run_demo(
        DemoConfig(headless=True, log=str(log)),
        segmenter=Segmenter(SlowOracle().load()),
        source=CountingSource(200, 0.001),
    )
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert summary.captured == 200 and summary.frames + summary.dropped == 200 and summary.dropped > 50
    assert len(records) == summary.frames
    idx = [r["source_frame"] for r in records]
    assert idx == sorted(set(idx)) and idx[-1] == 199


def test_synthetic_source_plays_forward_and_back_without_jumps():
    src = SyntheticSource(size=32, distinct=4, max_frames=9).open()
    assert [src.position(i) for i in range(9)] == [0, 1, 2, 3, 2, 1, 0, 1, 2]
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    assert len(frames) == 9 and frames[0].shape == (32, 32, 3) and frames[0].dtype == np.uint8
    assert np.array_equal(frames[2], frames[4]) and not np.array_equal(frames[0], frames[1])


# ---- keys, server, torch-free ------------------------------------------------------------------------
def test_keys():
    s = LoopState(threshold=0.5)
    handle_key(ord("+"), s)
    handle_key(ord("+"), s)
    assert s.threshold == 0.6
    for _ in range(20):
        handle_key(ord("-"), s)
    assert s.threshold == 0.05
    handle_key(ord(" "), s)
    assert s.paused
    handle_key(ord(" "), s)
    assert not s.paused
    assert handle_key(ord("s"), s) == "snapshot"
    assert handle_key(-1, s) is None and not s.quit
    handle_key(ord("q"), s)
    assert s.quit


class ScriptedDisplay:
    """Stands in for the OpenCV window: records what is shown, answers with scripted key presses."""

    def __init__(self, keys: str):
        self.keys = list(keys)
        self.shown: list[np.ndarray] = []
        self.closed = False

    def show(self, frame: np.ndarray) -> int:
        self.shown.append(frame)
        return ord(self.keys.pop(0)) if self.keys else -1

    def close(self) -> None:
        self.closed = True


def test_window_keys_pause_threshold_snapshot_quit(clip, tmp_path):
    # frame 0: '.', frame 1: '+', frame 2: ' ' (pause: the same frame is shown 3 times), ' ' again resumes,
    # frame 3: 's' (snapshot), frame 4: 'q' (quit).
    disp = ScriptedDisplay(".+ .. s" + "q")
    log = tmp_path / "k.jsonl"
    summary = run_demo(
        DemoConfig(source=str(clip), log=str(log), snapshot_dir=str(tmp_path / "snaps")),
        segmenter=_oracle_segmenter(),
        display=disp,
    )
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert summary.status == "quit" and EXIT_CODES["quit"] == 0 and disp.closed
    assert [r["threshold"] for r in records] == [0.5, 0.5, 0.55, 0.55, 0.55]
    assert len(records) == summary.frames == 5 and len(disp.shown) == 5 + 3
    assert all(f is disp.shown[2] for f in disp.shown[3:6])  # paused: the same annotated frame, no new ones
    snaps = list((tmp_path / "snaps").glob("*.png"))
    assert len(snaps) == 1 and summary.outputs["snapshots"] == str(snaps[0])
    shot = cv2.cvtColor(cv2.imread(str(snaps[0])), cv2.COLOR_BGR2RGB)
    assert np.array_equal(shot, disp.shown[-2])  # the snapshot is the frame on screen, in RGB order


def test_mjpeg_server_streams_the_published_frame():
    frame = _disc_frame(0)[0]
    with MjpegServer(0, title="test") as srv:
        srv.publish(frame, {"frame": 0, "fps": 1.0, "infer_ms": 2.0, "polyps": 1, "area_pct": 3.0})
        page = urllib.request.urlopen(srv.url, timeout=5).read().decode()
        assert '<img src="/stream.mjpg"' in page and "test" in page
        jpg = urllib.request.urlopen(srv.url + "frame.jpg", timeout=5).read()
        img = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert (
            img.shape == frame.shape and np.abs(img.astype(int) - frame).mean() < 6
        )  # JPEG-close, RGB order
        assert json.loads(urllib.request.urlopen(srv.url + "stats.json", timeout=5).read())["polyps"] == 1
        resp = urllib.request.urlopen(srv.url + "stream.mjpg", timeout=5)
        assert resp.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        threading.Timer(0.2, srv.publish, args=(frame,)).start()
        head = resp.read(200)
        assert head.startswith(b"--edgesegframe\r\nContent-Type: image/jpeg") and b"\xff\xd8" in head
        resp.close()


def test_demo_runs_without_torch_on_an_onnx_artifact(clip, onnx_artifact, tmp_path):
    log = tmp_path / "nt.jsonl"
    code = (
        _BLOCK_TORCH
        + f"""
import runpy
sys.argv = ["edgeseg.apps.endoscopy", "--artifact", {str(onnx_artifact)!r}, "--source", {str(clip)!r},
            "--headless", "--log", {str(log)!r}, "--max-frames", "5"]
try:
    runpy.run_module("edgeseg.apps.endoscopy", run_name="__main__")
except SystemExit as e:
    assert e.code == 0, e.code
assert "torch" not in sys.modules
print("ok")
"""
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr
    assert len(log.read_text().splitlines()) == 5


# ---- nothing passes silently (issue 15): full devices, stale temporaries, artifacts without a manifest ------
def test_a_full_device_mid_recording_keeps_no_short_file_and_says_so(clip, onnx_artifact, tmp_path, monkeypatch,
                                                                    capsys):
    """VideoWriter says nothing when the device fills up; the demo used to rename a short file into place and
    report every frame. The device fills after 10 frames here (what the free space says: simulated)."""
    from edgeseg.apps.endoscopy import cli as app_cli
    from edgeseg.apps.endoscopy import outputs

    calls = {"n": 0}

    def filling_up(path):
        calls["n"] += 1
        return 10 << 30 if calls["n"] <= 10 else 0

    monkeypatch.setattr(outputs, "free_bytes", filling_up)
    rec, log = tmp_path / "full.avi", tmp_path / "full.jsonl"
    code = app_cli.main(["--artifact", str(onnx_artifact), "--source", str(clip), "--headless", "--record",
                         str(rec), "--log", str(log)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith(f"edgeseg: error: no space left on device writing {rec}"), err
    assert "0 bytes free after 10 frames" in err[-1] and "Traceback" not in "\n".join(err)
    assert not rec.exists()  # nothing short under the real name, and no temporary left behind
    assert len(log.read_text().splitlines()) == 10  # the log (on a device with room) holds the frames processed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.jsonl"]


def test_a_recording_cut_short_without_a_word_is_not_kept(clip, tmp_path, monkeypatch):
    """The writer drops the tail of the file (a full device on the last writes, a header that still promises
    every frame): the read-back check finds it, before the file would be renamed into place."""
    from edgeseg.apps.endoscopy import outputs

    real = cv2.VideoWriter

    monkeypatch.setattr(cv2, "VideoWriter", tail_losing_writer(real, 0.6))
    rec = tmp_path / "cut.avi"
    summary = run_demo(DemoConfig(source=str(clip), headless=True, record=str(rec)), segmenter=_oracle_segmenter())
    assert summary.status == "error" and EXIT_CODES[summary.status] == 1
    assert re.search(rf"the recording {re.escape(str(rec))} holds \d+ of the {N_FRAMES} frames written",
                     summary.message), summary.message
    assert "recording" not in summary.outputs and not list(tmp_path.iterdir())
    # the same on a device that is full by then (the last writes failed): said as such
    full = {"now": False}

    def read_back(path, expected):
        full["now"] = True
        return expected - 3

    monkeypatch.setattr(cv2, "VideoWriter", real)
    monkeypatch.setattr(outputs, "frames_in_video", read_back)
    monkeypatch.setattr(outputs, "free_bytes", lambda p: 0 if full["now"] else 10 << 30)
    summary = run_demo(DemoConfig(source=str(clip), headless=True, record=str(rec)), segmenter=_oracle_segmenter())
    assert summary.message.startswith(f"no space left on device writing {rec}")
    assert f"holds {N_FRAMES - 3} of the {N_FRAMES} frames written" in summary.message and not rec.exists()


def test_stale_recording_temporaries_are_cleaned_and_live_ones_kept(clip, tmp_path):
    from edgeseg.common.io import STALE_AFTER_S

    old = time.time() - STALE_AFTER_S - 60
    stale = [tmp_path / ".demo.avi.k3j2x.avi", tmp_path / ".demo.jsonl.p0q1.jsonl"]
    for p in stale:
        p.write_bytes(b"half a recording")
        os.utime(p, (old, old))
    live = tmp_path / ".demo.avi.zz91.avi"  # another demo recording right now
    live.write_bytes(b"...")
    other = tmp_path / ".other.avi.aa11.avi"  # not this output's: left alone
    other.write_bytes(b"...")
    os.utime(other, (old, old))
    summary = run_demo(DemoConfig(source=str(clip), headless=True, record=str(tmp_path / "demo.avi"),
                                  log=str(tmp_path / "demo.jsonl"), max_frames=3), segmenter=_oracle_segmenter())
    assert summary.status == "completed" and _decode_count(tmp_path / "demo.avi") == 3
    assert not any(p.exists() for p in stale) and live.exists() and other.exists()


def test_an_artifact_without_manifest_runs_only_with_explicit_preprocessing(clip, onnx_artifact, tmp_path,
                                                                            capsys):
    from edgeseg.cli import main

    bare = tmp_path / "bare.onnx"
    bare.write_bytes(onnx_artifact.read_bytes())
    args = ["demo", "--artifact", str(bare), "--source", str(clip), "--headless", "--max-frames", "3",
            "--log", str(tmp_path / "b.jsonl")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no manifest beside it (bare.onnx.json)" in err[0] and "--preprocessing" in err[0]
    assert not (tmp_path / "b.jsonl").exists()
    pre = json.dumps({"size": [64, 64], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]})
    assert main([*args, "--preprocessing", pre]) == 0
    with_manifest = tmp_path / "m.jsonl"
    assert main(["demo", "--artifact", str(onnx_artifact), "--source", str(clip), "--headless", "--max-frames",
                 "3", "--log", str(with_manifest)]) == 0
    areas = [[json.loads(x)["mask_area_pct"] for x in f.read_text().splitlines()]
             for f in (tmp_path / "b.jsonl", with_manifest)]
    assert areas[0] == areas[1]  # the manifest's pre-processing, given by hand: the same masks

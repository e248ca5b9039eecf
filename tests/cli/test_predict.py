"""`edgeseg predict`: masks and overlays from an artifact equal the torch reference's; videos; clear errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

from edgeseg.runtimes.manifest import Preprocessing  # noqa: E402
from edgeseg.runtimes.processing import preprocess, read_image, sigmoid  # noqa: E402

from edgeseg.cli import main  # noqa: E402
from tests.conftest import REPO, tail_losing_writer  # noqa: E402
from tests.runtimes.test_backends import MODEL, SIZE, export_onnx, reference_model, torch_logits  # noqa: E402
from tests.test_packaging import _BLOCK_TORCH  # noqa: E402

SIZES = [(96, 128), (64, 64), (50, 80)]


def _image(seed: int, h: int, w: int) -> np.ndarray:
    try:
        from edgeseg.common.phantoms import synthetic_sample

        return synthetic_sample(seed, size=(h, w))[0]
    except ImportError:  # the generator is optional here: smooth random colours do as well
        rng = np.random.default_rng(seed)
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("predict")
    ref = reference_model(seed=1)
    onnx = export_onnx(ref, root / "t.onnx")
    ckpt = root / "t.pt"
    torch.save({"format": "edgeseg-checkpoint/1", "model": MODEL, "state_dict": ref.state_dict(),
                "preprocessing": {"size": [SIZE, SIZE]}}, ckpt)
    imgs = root / "imgs"
    imgs.mkdir()
    for i, (h, w) in enumerate(SIZES):
        cv2.imwrite(str(imgs / f"im{i}.png"), cv2.cvtColor(_image(i, h, w), cv2.COLOR_RGB2BGR))
    # A threshold at the median reference probability gives masks with real foreground and background.
    frames = [read_image(p) for p in sorted(imgs.iterdir())]
    probs = [sigmoid(torch_logits(ref, preprocess(f, Preprocessing(size=[SIZE, SIZE]))[0])) for f in frames]
    thr = float(np.median(np.concatenate([p.ravel() for p in probs])))
    return {"root": root, "ref": ref, "onnx": onnx, "ckpt": ckpt, "imgs": imgs, "thr": thr}


def _expected_mask(ref, frame: np.ndarray, thr: float) -> np.ndarray:
    """The reference mask computed independently: torch logits, bilinear back to the frame, threshold."""
    batch, _ = preprocess(frame, Preprocessing(size=[SIZE, SIZE]))
    prob = sigmoid(torch_logits(ref, batch))[0, 0]
    h, w = frame.shape[:2]
    return cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR) > thr


def test_predict_folder_with_artifact_matches_torch_reference(setup, tmp_path):
    out = tmp_path / "out"
    rc = main(["predict", "--artifact", str(setup["onnx"]), "--input", str(setup["imgs"]), "--out", str(out),
               "--threshold", f"{setup['thr']:.8f}", "--batch", "2", "--threads", "1"])
    assert rc == 0
    summary = json.loads((out / "predictions.json").read_text())
    assert summary["runtime"]["runtime"] == "onnxruntime" and len(summary["outputs"]) == 3
    for i, (h, w) in enumerate(SIZES):
        mask = cv2.imread(str(out / f"im{i}_mask.png"), cv2.IMREAD_GRAYSCALE)
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
        want = _expected_mask(setup["ref"], read_image(setup["imgs"] / f"im{i}.png"), setup["thr"])
        agreement = ((mask > 0) == want).mean()
        assert agreement > 0.995, (i, agreement)  # pixels exactly at the threshold may flip
        assert 0.05 < (mask > 0).mean() < 0.95  # a real mask, not an empty or full one
        over = read_image(out / f"im{i}_overlay.jpg")
        assert over.shape == (h, w, 3)


def test_predict_with_weights_uses_torch_and_agrees_with_artifact(setup, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    img = str(setup["imgs"] / "im0.png")
    thr = f"{setup['thr']:.8f}"
    assert main(["predict", "--weights", str(setup["ckpt"]), "--input", img, "--out", str(a), "--threshold", thr,
                 "--overlay-format", "png"]) == 0
    assert main(["predict", "--artifact", str(setup["onnx"]), "--input", img, "--out", str(b),
                 "--threshold", thr]) == 0
    assert json.loads((a / "predictions.json").read_text())["runtime"]["runtime"] == "torch"
    assert (a / "im0_overlay.png").is_file()
    ma = cv2.imread(str(a / "im0_mask.png"), cv2.IMREAD_GRAYSCALE)
    mb = cv2.imread(str(b / "im0_mask.png"), cv2.IMREAD_GRAYSCALE)
    assert (ma == mb).mean() > 0.999


def _clip(path, frames: int):
    """An MJPG .avi of ``frames`` 80x48 phantom frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (80, 48))
    for i in range(frames):
        writer.write(cv2.cvtColor(_image(10 + i, 48, 80), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_predict_video_writes_an_overlay_video(setup, tmp_path):
    src = _clip(tmp_path / "clip.avi", 4)
    out = tmp_path / "out"
    assert main(["predict", "--artifact", str(setup["onnx"]), "--input", str(src), "--out", str(out),
                 "--video-format", "avi"]) == 0
    video = out / "clip_overlay.avi"
    cap = cv2.VideoCapture(str(video))
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (48, 80, 3)
        n += 1
    cap.release()
    assert n == 4
    row = json.loads((out / "predictions.json").read_text())["outputs"][0]
    assert row["frames"] == 4 and row["overlay"] == str(video)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_predict_video_cut_short_by_a_full_device_is_not_kept(setup, tmp_path, monkeypatch, capsys):
    """VideoWriter reports nothing on a full device; the video is read back before it is renamed into place."""
    src = _clip(tmp_path / "clip.avi", 6)
    out = tmp_path / "out"
    args = ["predict", "--artifact", str(setup["onnx"]), "--input", str(src), "--out", str(out), "--video-format",
            "avi"]
    real = cv2.VideoWriter

    monkeypatch.setattr(cv2, "VideoWriter", tail_losing_writer(real, 0.5))
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(r"the video written to .*clip_overlay\.avi holds \d of its 6 frames", err[0])
    assert list(out.iterdir()) == []  # not renamed into place, no temporary left
    monkeypatch.setattr(cv2, "VideoWriter", real)
    monkeypatch.setattr("edgeseg.common.io.free_bytes", lambda p: 4096)  # the device is full from the start
    assert main(args) == 2
    assert "no space left on device writing " in capsys.readouterr().err and list(out.iterdir()) == []


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--weights", "x.pt"], "not both"),
        (["--runtime", "openvino", "--model", MODEL], "torch reference runtime"),
        (["--threshold", "1.5"], r"\[0, 1\]"),
        (["--batch", "0"], "--batch"),
    ],
)
def test_predict_bad_arguments_are_one_line_errors(setup, tmp_path, capsys, extra, message):
    import re

    args = ["predict", "--input", str(setup["imgs"]), "--out", str(tmp_path / "o")]
    if "--model" not in extra:
        args += ["--artifact", str(setup["onnx"])]
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgeseg: error:") and err.strip().count("\n") == 0 and re.search(message, err)


def test_predict_missing_or_unknown_input(setup, tmp_path, capsys):
    base = ["predict", "--artifact", str(setup["onnx"]), "--out", str(tmp_path / "o")]
    assert main([*base, "--input", str(tmp_path / "nope.png")]) == 2
    assert "input not found" in capsys.readouterr().err
    odd = tmp_path / "notes.txt"
    odd.write_text("x")
    assert main([*base, "--input", str(odd)]) == 2
    assert "unknown input type" in capsys.readouterr().err
    assert main(["predict", "--input", str(setup["imgs"]), "--out", str(tmp_path / "o")]) == 2
    assert "--artifact PATH, --weights CKPT or --model NAME" in capsys.readouterr().err


def test_predict_artifact_runs_without_torch(setup, tmp_path):
    out = tmp_path / "out"
    code = _BLOCK_TORCH + f"""
from edgeseg.cli import main
rc = main(["predict", "--artifact", {str(setup['onnx'])!r}, "--input", {str(setup['imgs'])!r},
           "--out", {str(out)!r}])
assert "torch" not in sys.modules
sys.exit(rc)
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert len(list(out.glob("*_mask.png"))) == 3
    # Without the torch extra, --model says what to install instead of a traceback.
    res = subprocess.run([sys.executable, "-c", _BLOCK_TORCH + f"""
from edgeseg.cli import main
sys.exit(main(["predict", "--model", {MODEL!r}, "--input", {str(setup['imgs'])!r}, "--out", {str(out)!r}]))
"""], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "edgeseg[train]" in res.stderr and "Traceback" not in res.stderr

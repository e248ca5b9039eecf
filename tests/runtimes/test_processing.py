"""edgeseg.runtimes.processing: resize modes undo exactly, normalisation, activations, masks back to the frame."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edgeseg.runtimes.manifest import Postprocessing, Preprocessing  # noqa: E402
from edgeseg.runtimes.processing import (  # noqa: E402
    fit_frame,
    mask_to_png,
    normalize,
    overlay,
    postprocess,
    preprocess,
    read_image,
    sigmoid,
    softmax,
    write_image,
)


def _frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_letterbox_keeps_aspect_and_pads_centred():
    frame = np.full((50, 100, 3), 200, np.uint8)
    out, info = fit_frame(frame, (64, 64), "letterbox", pad_value=(1, 2, 3))
    assert out.shape == (64, 64, 3)
    assert info.content_hw == (32, 64) and info.pad_tl == (16, 0) and info.orig_hw == (50, 100)
    assert (out[:16] == (1, 2, 3)).all() and (out[48:] == (1, 2, 3)).all()
    assert (out[16:48] == 200).all()


def test_stretch_fills_the_input():
    out, info = fit_frame(_frame(30, 70), (64, 32), "stretch")
    assert out.shape == (64, 32, 3) and info.pad_tl == (0, 0) and info.content_hw == (64, 32)


def test_unknown_resize_mode_lists_valid_ones():
    with pytest.raises(ValueError, match="stretch"):
        fit_frame(_frame(8, 8), (8, 8), "crop")


def test_normalize_matches_the_formula():
    frame = _frame(4, 5)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    want = (frame / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(normalize(frame, mean, std), want, atol=1e-5)


def test_preprocess_gives_nchw_float32_batch_and_pads_to_zero():
    pre = Preprocessing(size=[32, 32], resize="letterbox")
    batch, infos = preprocess([_frame(16, 32), _frame(32, 32, 1)], pre)
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == np.float32
    # The padding is the mean colour, which normalises to (almost exactly) zero.
    assert np.abs(batch[0, :, :8, :]).max() < 0.01
    assert infos[0].pad_tl == (8, 0) and infos[1].pad_tl == (0, 0)


def test_preprocess_gray_model_and_gray_frame():
    pre = Preprocessing(size=[16, 16], mean=[0.5], std=[0.5], color="gray")
    batch, _ = preprocess(_frame(16, 16), pre)
    assert batch.shape == (1, 1, 16, 16)
    batch, _ = preprocess(np.zeros((16, 16), np.uint8), Preprocessing(size=[16, 16]))
    assert batch.shape == (1, 3, 16, 16)


def test_preprocess_rejects_float_frames_and_3d_sizes():
    with pytest.raises(ValueError, match="uint8"):
        preprocess(np.zeros((8, 8, 3), np.float32), Preprocessing(size=[8, 8]))
    with pytest.raises(ValueError, match="2D"):
        preprocess(_frame(8, 8), Preprocessing(size=[8, 8, 8]))


def test_sigmoid_is_stable_and_softmax_sums_to_one():
    x = np.array([-1000.0, -5.0, 0.0, 5.0, 1000.0], np.float32)
    s = sigmoid(x)
    assert np.isfinite(s).all() and s[2] == 0.5 and s[0] == 0.0 and s[-1] == 1.0
    np.testing.assert_allclose(s[1:4], 1 / (1 + np.exp(-x[1:4])), rtol=1e-6)
    logits = np.random.default_rng(0).normal(size=(2, 4, 3, 3)).astype(np.float32) * 50
    p = softmax(logits)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert (p.argmax(1) == logits.argmax(1)).all()


def test_postprocess_removes_letterbox_padding_and_restores_frame_size():
    # A 40x80 frame whose right half is "polyp": letterboxed into 32x32 (content 16x32 at top=8).
    frame = np.zeros((40, 80, 3), np.uint8)
    _, infos = preprocess(frame, Preprocessing(size=[32, 32], resize="letterbox"))
    logits = np.full((1, 1, 32, 32), -10.0, np.float32)
    logits[0, 0, 8:24, 16:] = 10.0  # positive exactly on the right half of the content
    logits[0, 0, :8] = 10.0  # positive in the padding: must be cut away
    mask = postprocess(logits, infos, Postprocessing())[0]
    assert mask.shape == (40, 80) and mask.dtype == np.uint8
    assert mask[:, 40:].all() and not mask[:, :40].any()


def test_postprocess_threshold_and_multiclass():
    frame = np.zeros((8, 8, 3), np.uint8)
    _, infos = preprocess(frame, Preprocessing(size=[8, 8]))
    logits = np.zeros((1, 1, 8, 8), np.float32)
    logits[0, 0, :4] = 1.0  # p = 0.73
    post = Postprocessing(threshold=0.5)
    assert postprocess(logits, infos, post)[0].sum() == 32
    assert postprocess(logits, infos, post, threshold=0.8)[0].sum() == 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        postprocess(logits, infos, post, threshold=2.0)
    multi = np.zeros((1, 3, 8, 8), np.float32)
    multi[0, 2, :, :2] = 5.0
    multi[0, 1, :, 2:4] = 5.0
    labels = postprocess(multi, infos, Postprocessing(activation="softmax", num_classes=3))[0]
    assert (labels[:, :2] == 2).all() and (labels[:, 2:4] == 1).all() and (labels[:, 4:] == 0).all()
    assert set(np.unique(mask_to_png(labels, 3))) == {0, 127, 254}


def test_overlay_blends_only_the_mask_and_draws_the_contour():
    frame = np.full((20, 20, 3), 100, np.uint8)
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 1
    out = overlay(frame, mask, alpha=0.5, contour=False)
    assert (out[0, 0] == 100).all()
    assert tuple(out[10, 10]) == (50, 178, 50)  # 0.5 * 100 + 0.5 * (0, 255, 0), rounded
    with_contour = overlay(frame, mask, alpha=0.5, contour=True, thickness=1)
    assert tuple(with_contour[5, 10]) == (0, 255, 0) and tuple(with_contour[10, 10]) == (50, 178, 50)
    assert (frame == 100).all()  # the input is not modified
    with pytest.raises(ValueError, match="postprocess"):
        overlay(frame, mask[:10])


def test_image_roundtrip_is_rgb(tmp_path):
    img = np.zeros((6, 7, 3), np.uint8)
    img[..., 0] = 255  # pure red
    write_image(tmp_path / "a.png", img)
    back = read_image(tmp_path / "a.png")
    assert back.shape == (6, 7, 3) and (back == img).all()
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        read_image(tmp_path / "bad.png")

"""The numpy sliding window (edgeseg.common.sliding) is MONAI's: same windows, same Gaussian blending, same
padding of small inputs, to float rounding; and it takes any predictor of numpy windows."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseg.common.sliding import importance_map, sliding_window, window_of, window_starts


def test_windows_cover_the_volume_and_end_at_the_border():
    assert window_starts([40, 32, 50], [32, 32, 16], 0.25) == [[0, 8], [0], [0, 12, 24, 34]]
    assert window_starts([16], [16], 0.5) == [[0]]
    w = importance_map((5, 7))
    assert w.shape == (5, 7) and w.dtype == np.float32 and w[2, 3] == w.max() and w.min() >= 1e-3
    assert np.array_equal(importance_map((4, 4), "constant"), np.ones((4, 4), np.float32))


def test_an_identity_predictor_gives_its_input_back_whatever_the_padding():
    x = np.random.default_rng(0).normal(size=(2, 3, 19, 23, 9)).astype(np.float32)  # 9 < the window: padded
    out = sliding_window(lambda w: w * 2.0, x, (8, 8, 12), overlap=0.5, batch=3)
    assert out.shape == x.shape and np.allclose(out, 2 * x, atol=1e-5)


@pytest.mark.parametrize("overlap,mode", [(0.25, "gaussian"), (0.5, "gaussian"), (0.25, "constant")])
def test_numpy_sliding_window_equals_monai(overlap, mode):
    torch = pytest.importorskip("torch")
    inferers = pytest.importorskip("monai.inferers")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv3d(4, 2, 3, padding=1)).eval()
    x = torch.randn(1, 1, 21, 30, 12)  # windows overlap on two axes; the third is padded to the window
    roi = (16, 16, 16)
    with torch.no_grad():
        ref = inferers.sliding_window_inference(x, roi, 2, net, overlap=overlap, mode=mode).numpy()

        def predict(w: np.ndarray) -> np.ndarray:
            return net(torch.from_numpy(w)).numpy()

        got = sliding_window(predict, x.numpy(), roi, overlap=overlap, batch=2, mode=mode)
    assert got.shape == ref.shape == (1, 2, 21, 30, 12)
    assert np.abs(got - ref).max() < 1e-5


def test_bad_predictors_and_settings_are_named():
    x = np.zeros((1, 1, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"returned shape \[1, 1, 2, 2\].*must return \(B, K, 4, 4\)"):
        sliding_window(lambda w: w[..., :2, :2], x, (4, 4))
    with pytest.raises(ValueError, match=r"overlap must be in \[0, 1\)"):
        sliding_window(lambda w: w, x, (4, 4), overlap=1.0)
    with pytest.raises(ValueError, match="a 3D window for input of shape"):
        sliding_window(lambda w: w, x, (4, 4, 4))


def test_the_window_of_an_artifact_is_its_fixed_input_else_its_manifest_size():
    from edgeseg.runtimes.manifest import Manifest, Preprocessing, TensorSpec

    def manifest(shape):
        spec = TensorSpec("x", shape, layout="ncdhw")
        return Manifest("a.onnx", "onnx", "fp32", "m", [spec], [spec], Preprocessing(size=[24, 24, 24]))

    assert window_of(manifest([1, 1, 32, 32, 32])) == (32, 32, 32)
    assert window_of(manifest([-1, 1, -1, -1, -1])) == (24, 24, 24)

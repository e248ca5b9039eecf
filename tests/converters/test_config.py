"""converters/: target registry, ConvertConfig validation, parity figures, calibration sets (fast)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from edgeseg.converters.base import PRECISIONS, TARGETS, ConvertConfig, get_target, list_targets
from edgeseg.converters.calibration import CalibrationSet, load_images
from edgeseg.converters.verify import TOLERANCES, compare, masks_of
from edgeseg.runtimes.manifest import Postprocessing, Preprocessing


def _calib(n: int = 4, size: tuple[int, int] = (64, 64), labels: bool = False) -> CalibrationSet:
    return CalibrationSet(
        images=np.zeros((n, 3, *size), np.float32), labels=np.zeros((n, *size), np.uint8) if labels else None
    )


# ---- registry: capabilities are data ----
def test_every_target_is_registered_with_its_capabilities():
    assert list_targets() == ["onnx", "openvino", "tflite", "executorch"]
    for name, spec in TARGETS.items():
        assert spec.name == name
        assert set(spec.precisions) <= set(PRECISIONS) and {"fp32", "int8"} <= set(spec.precisions)
        assert spec.default_layout in spec.layouts
        assert spec.runtime in ("onnxruntime", "openvino", "litert", "executorch")
        assert set(spec.default_quantizer.values()) <= set(spec.quantizers)
    assert get_target("tflite").suffix == ".tflite" and not get_target("tflite").dynamic_batch
    assert get_target("openvino").accuracy_control and not get_target("executorch").accuracy_control
    assert get_target("executorch").precisions == ("fp32", "int8")  # XNNPACK: no fp16 weights path here


def test_unknown_target_lists_the_valid_ones():
    with pytest.raises(ValueError, match="Did you mean 'tflite'.*onnx, openvino, tflite"):
        get_target("tflit")


# ---- ConvertConfig validates itself ----
def test_int8_without_calibration_is_a_value_error():
    with pytest.raises(ValueError, match="static int8 needs calibration data"):
        ConvertConfig(target="onnx", precision="int8", input_size=(64, 64))
    with pytest.raises(ValueError, match="static int8 needs calibration data"):
        ConvertConfig(target="onnx", precision="int8", input_size=(64, 64), calibration=_calib(0))
    # dynamic int8 needs none
    cfg = ConvertConfig(target="onnx", precision="int8", int8_scheme="dynamic", input_size=(64, 64))
    assert cfg.tag == "int8-dynamic" and not cfg.static_int8


def test_config_defaults_and_errors():
    cfg = ConvertConfig(target="tflite", input_size=(64, 64))
    assert cfg.layout == "nhwc" and cfg.quantizer == "pt2e" and cfg.artifact_shape(3) == [1, 64, 64, 3]
    assert (
        ConvertConfig(target="tflite", input_size=(64, 64), precision="int8", int8_scheme="dynamic").quantizer
        == "aeq"
    )
    assert ConvertConfig(target="onnx", input_size=(64, 64)).layout == "nchw"
    assert ConvertConfig(target="onnx", input_size=(64, 64), batch=None).nchw_shape() == [-1, 3, 64, 64]
    assert ConvertConfig(target="onnx", input_size=(8, 64, 64), layout="nhwc").manifest_layout == "ndhwc"
    with pytest.raises(
        ValueError, match="'tflite' cannot convert 3D models.*Conv3D.*use one of onnx, openvino"
    ):
        ConvertConfig(target="tflite", input_size=(32, 32, 32), in_channels=1)
    with pytest.raises(ValueError, match="unknown precision 'int4'.*fp32, fp16, int8"):
        ConvertConfig(target="onnx", precision="int4")
    with pytest.raises(ValueError, match="needs a fixed batch"):
        ConvertConfig(target="tflite", batch=None)
    with pytest.raises(ValueError, match="unknown layout"):
        ConvertConfig(target="onnx", layout="chwn")
    with pytest.raises(ValueError, match="calibration method 'kl'.*minmax, entropy, percentile"):
        ConvertConfig(target="onnx", precision="int8", calib_method="kl", calibration=_calib())
    with pytest.raises(ValueError, match="quantizer 'nncf'.*pt2e, aeq"):
        ConvertConfig(target="tflite", quantizer="nncf")
    with pytest.raises(ValueError, match="int8 scheme 'dynamic'.*static"):
        ConvertConfig(target="openvino", precision="int8", int8_scheme="dynamic")
    with pytest.raises(ValueError, match="opset must be >= 17"):
        ConvertConfig(target="onnx", opset=13)
    with pytest.raises(ValueError, match=r"calibration images are \[3, 64, 64\]"):
        ConvertConfig(target="onnx", precision="int8", input_size=(128, 128), calibration=_calib())


def test_the_accuracy_budget_applies_to_int8_on_the_targets_that_can_search():
    from edgeseg.converters import QuantOptions

    with pytest.raises(ValueError, match="applies to int8 on onnx, openvino, tflite"):
        ConvertConfig(target="executorch", precision="int8", input_size=(64, 64), calibration=_calib(),
                      max_dice_drop=0.01)
    with pytest.raises(ValueError, match="applies to int8"):
        ConvertConfig(target="onnx", precision="fp32", max_dice_drop=0.01)
    with pytest.raises(ValueError, match=r"max_dice_drop must be in \(0, 1\)"):
        QuantOptions(max_dice_drop=1.5)
    with pytest.raises(ValueError, match="keep_float .* static int8 only"):
        ConvertConfig(target="onnx", precision="fp32", keep_float=("encoder1",))
    for target in ("onnx", "openvino", "tflite"):
        cfg = ConvertConfig(target=target, precision="int8", input_size=(64, 64), calibration=_calib(),
                            max_dice_drop=0.01)
        assert cfg.max_dice_drop == 0.01
    # the default budget: 0.01 on int8 where the target can search, none elsewhere or when turned off
    q = QuantOptions()
    assert q.budget_for(get_target("onnx"), "int8") == 0.01
    assert q.budget_for(get_target("executorch"), "int8") is None
    assert q.budget_for(get_target("onnx"), "fp32") is None
    assert QuantOptions(budget=False).budget_for(get_target("onnx"), "int8") is None
    assert QuantOptions(max_dice_drop=0.03).budget_for(get_target("tflite"), "int8") == 0.03


# ---- parity figures ----
def test_masks_follow_the_manifest_threshold():
    logits = np.array([[[[-1.0, 0.1], [0.5, 3.0]]]], np.float32)
    assert masks_of(logits, Postprocessing(threshold=0.5)).tolist() == [[[0, 1], [1, 1]]]
    # sigmoid(0.5) = 0.62 < 0.7 < sigmoid(3) = 0.95
    assert masks_of(logits, Postprocessing(threshold=0.7)).tolist() == [[[0, 0], [0, 1]]]
    multi = np.stack([np.zeros((2, 2)), np.eye(2)], 0)[None].astype(np.float32)
    assert masks_of(multi, Postprocessing(activation="softmax", num_classes=2)).tolist() == [[[1, 0], [0, 1]]]


def test_compare_measures_and_judges():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4, 1, 32, 32)).astype(np.float32)
    same = compare(ref, ref + 1e-6, Postprocessing(), "fp32")
    assert same.passed and same.figures["mask_agreement"] == 1.0
    assert same.figures["max_abs_diff"] == pytest.approx(1e-6, rel=0.05)
    # flip the sign of a quarter of each image: a real mask difference
    bad = ref.copy()
    bad[:, :, :16, :16] *= -1
    res = compare(ref, bad, Postprocessing(), "int8")
    fg_ref = ref > 0
    fg_bad = bad > 0
    expected = np.mean(
        [2 * np.sum(fg_ref[i] & fg_bad[i]) / (fg_ref[i].sum() + fg_bad[i].sum()) for i in range(4)]
    )
    assert res.figures["mask_agreement"] == pytest.approx(expected)
    assert not res.passed and "short by" in res.failures[0]
    # fp32 fails on the logits even when the masks agree
    drift = compare(ref, ref + 0.01, Postprocessing(), "fp32")
    assert not drift.passed and "fp32 tolerance" in drift.failures[0]
    assert TOLERANCES["int8"]["mask_agreement"] < TOLERANCES["fp16"]["mask_agreement"]


def test_compare_reports_dice_against_labels():
    ref = np.full((2, 1, 8, 8), -5.0, np.float32)
    ref[:, :, :4] = 5.0
    labels = np.zeros((2, 8, 8), np.uint8)
    labels[:, :4] = 1
    res = compare(ref, ref, Postprocessing(), "fp32", labels)
    assert res.figures["dice_reference"] == 1.0 and res.figures["dice_candidate"] == 1.0


# ---- calibration / verification images ----
@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from edgeseg.common.phantoms import write_synthetic_folder

    root = tmp_path_factory.mktemp("tiny")
    write_synthetic_folder(root, 10, size=(48, 40), seed=3, val_fraction=0.3)
    return root


def test_folder_calibration_and_verification_are_disjoint(tiny_folder):
    pre = Preprocessing(size=[32, 32])
    with pytest.warns(UserWarning, match="only 7 images"):
        cal = load_images(tiny_folder, 50, pre, "calibration")
    ver = load_images(tiny_folder, 50, pre, "verification")
    assert cal.images.shape == (7, 3, 32, 32) and cal.images.dtype == np.float32
    assert ver.images.shape == (3, 3, 32, 32) and ver.labels.shape == (3, 32, 32)
    assert cal.provenance["split"] == "train" and ver.provenance["split"] == "val"
    assert cal.provenance["count"] == 7 and cal.provenance["requested"] == 50
    assert cal.provenance["ids_sha256"] != ver.provenance["ids_sha256"]
    # normalised with the ImageNet mean/std: values span well beyond [0, 1]
    assert cal.images.min() < -1.0 and cal.images.max() > 1.0


def test_synthetic_sets_use_disjoint_seeds():
    pre = Preprocessing(size=[32, 32])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = load_images("synthetic", 4, pre, "calibration")
    ver = load_images("synthetic", 4, pre, "verification")
    assert cal.provenance["seed"] != ver.provenance["seed"]
    assert not np.allclose(cal.images, ver.images)
    assert cal.labels is not None and set(np.unique(cal.labels)) <= {0, 1}


def test_bad_calibration_sources(tmp_path):
    pre = Preprocessing(size=[32, 32])
    with pytest.raises(FileNotFoundError, match="calibration folder not found"):
        load_images(tmp_path / "nope", 4, pre)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no usable calibration images"):
        load_images(tmp_path / "empty", 4, pre)
    with pytest.raises(ValueError, match="image calibration is 2D"):
        load_images("synthetic", 4, Preprocessing(size=[8, 32, 32]))


def test_onnx_toposort_orders_nodes():
    onnx = pytest.importorskip("onnx")
    from edgeseg.converters.onnx_converter import _toposort
    from onnx import helper

    a = helper.make_node("Relu", ["x"], ["a"])
    b = helper.make_node("Relu", ["a"], ["y"])
    graph = helper.make_graph(
        [b, a],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    _toposort(graph)
    assert [n.output[0] for n in graph.node] == ["a", "y"]
    onnx.checker.check_model(helper.make_model(graph))

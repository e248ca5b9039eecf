"""The int8 accuracy budget and the layer-wise divergence behind it, tested as mechanisms, not as one CPU's numbers.

- The search (``converters.budget.fit``) on a stand-in backend whose damage sits in known layers: it finds them,
  bisects down to them, confirms on the other half of the images, and refuses (naming what it tried) when no
  choice meets the budget.
- ``explain`` through real runtimes: every layer of ultralightunet-t maps onto the ONNX / OpenVINO graph, and a
  layer damaged on purpose in the artifact is ranked first and marked as where the damage appears.
- ``keep_float`` really leaves the named layers in float in the ONNX and OpenVINO graphs.
- ``convert_model`` with a budget no int8 can meet refuses the artifact and leaves an older one as it was.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

SIZE = 64


# ---- the search, on a stand-in backend ----
class _Backend:
    """A stand-in backend: its "images" are the reference logits, and each damaged layer left in int8
    flips the sign of some rows (which changes the masks)."""

    def __init__(self, damaged: dict[str, int]):
        self.damaged, self.made = damaged, []

    def make(self, keep):
        self.made.append(list(keep))
        return tuple(keep)

    def run(self, handle, images):
        out = images.copy()
        for layer, rows in self.damaged.items():
            if layer not in handle:
                out[:, :, :rows] = -out[:, :, :rows]
        return out


def _logits(n=8, size=16):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (n, 1, size, size)).astype(np.float32)
    x[:, :, size // 2 :] = np.abs(x[:, :, size // 2 :]) + 0.5  # half foreground, so Dice has something to lose
    return x


def test_the_search_finds_the_damaged_layers_bisects_and_confirms():
    from edgeseg.converters.budget import HeldBack, fit
    from edgeseg.runtimes.manifest import Postprocessing

    ref = _logits()
    labels = (ref[:, 0] > 0).astype(np.uint8)
    ranking = ["a", "b", "c", "bad", "d", "e", "f", "g"]
    be = _Backend({"bad": 3})
    handle, result = fit(be.make, be.run, lambda h: ranking, HeldBack(ref, ref, labels, Postprocessing()), 0.01)
    assert "bad" in handle and result.met and result.confirmed
    chosen = result.trials[result.chosen]
    assert chosen.keep_float == ranking[:4] and chosen.drop <= 0.01  # 1, 2 miss; 4 meets; bisect 3 misses
    assert [len(t.keep_float) for t in result.trials] == [0, 1, 2, 4, 3]
    assert result.trials[0].drop > 0.01 and result.search_images == result.confirm_images == 4
    assert be.made[-1] == ranking[:4]  # the chosen artifact is the last one built (the file on disk)
    d = result.to_dict()
    assert d["keep_float"] == ranking[:4] and d["met"] and d["confirm"]["drop"] <= 0.01


def test_the_search_refuses_and_names_what_it_tried():
    from edgeseg.converters.budget import BudgetNotMetError, HeldBack, fit
    from edgeseg.runtimes.manifest import Postprocessing

    ref = _logits()
    labels = (ref[:, 0] > 0).astype(np.uint8)
    be = _Backend({"hidden": 4})  # the damage is in a layer the ranking never offers
    with pytest.raises(BudgetNotMetError, match=r"misses the accuracy budget.*4 trials.*tried in float: a, b, c") as exc:
        fit(be.make, be.run, lambda h: ["a", "b", "c"], HeldBack(ref, ref, labels, Postprocessing()), 0.01)
    assert not exc.value.result.met
    assert [len(t.keep_float) for t in exc.value.result.trials] == [0, 1, 2, 3]


def test_an_artifact_within_budget_needs_one_conversion():
    from edgeseg.converters.budget import HeldBack, fit
    from edgeseg.runtimes.manifest import Postprocessing

    ref = _logits()
    be = _Backend({})
    _, result = fit(be.make, be.run, lambda h: pytest.fail("no ranking needed"),
                    HeldBack(ref, ref, None, Postprocessing()), 0.01)
    assert result.met and result.metric == "agreement" and len(be.made) == 1 and be.made == [[]]


# ---- explain and keep_float through real backends ----
@pytest.fixture(scope="module")
def net():
    from edgeseg.converters.calibration import load_images
    from edgeseg.runtimes.manifest import Preprocessing

    from edgeseg.models import create_model

    torch.manual_seed(0)
    model = create_model("ultralightunet-t").eval()
    x = torch.from_numpy(load_images("synthetic", 8, Preprocessing(size=[SIZE, SIZE]), "verification").images)
    with torch.no_grad():
        model.out4.bias -= model(x).median()
    return model


def _int8(net, target, out, **kw):
    from edgeseg.converters import ExportOptions, QuantOptions, VerifyOptions, convert_model

    quant = {"calib": "synthetic", "calib_size": 16, "budget": False, **kw}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_model(net, target, "int8", export=ExportOptions(img_size=SIZE), quant=QuantOptions(**quant),
                             verify=VerifyOptions(images=8), out_dir=out)


@pytest.fixture(scope="module")
def onnx_int8(net, tmp_path_factory):
    [res] = _int8(net, "onnx", tmp_path_factory.mktemp("onnx"))
    return res


def _images(n=4):
    from edgeseg.converters.calibration import load_images
    from edgeseg.runtimes.manifest import Preprocessing

    return load_images("synthetic", n, Preprocessing(size=[SIZE, SIZE]), "verification").images


def test_every_layer_maps_onto_the_onnx_graph_and_is_compared(net, onnx_int8):
    from edgeseg.converters.layerwise import explain, probe_layers

    report = explain(onnx_int8.artifact.path, net, _images())
    probes = probe_layers(net, torch.from_numpy(_images(1)))
    assert report.unmatched == [] and len(report.layers) == len(probes) > 40
    healthy = [s for s in report.layers if s.leaf]
    # CKA is undefined (nan) only for a tensor without variance across positions (a saturated gate)
    assert all(s.sqnr_db > 10 and (0.9 < s.cka <= 1.0 + 1e-9 or (np.isnan(s.cka) and s.rel_error < 1e-3))
               for s in healthy), report.table()
    d = report.to_dict()
    assert d["layers"][0]["name"] == "encoder1.0.pconv1" and "rel_error" in d["layers"][0]
    json.dumps(d)  # JSON-safe (an exact layer's infinite SQNR is written as null)


def _damage_onnx(src, dst, node_name):
    """A copy of the ONNX artifact with one Conv's weights replaced by noise: a deliberately damaged layer."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(src))
    inits = {i.name: i for i in m.graph.initializer}
    producers = {o: n for n in m.graph.node for o in n.output}
    conv = next(n for n in m.graph.node if n.name == node_name)
    dq = producers[conv.input[1]]  # the weight's DequantizeLinear
    w = inits[dq.input[0]]
    arr = numpy_helper.to_array(w)
    noise = np.random.default_rng(1).integers(np.iinfo(arr.dtype).min, np.iinfo(arr.dtype).max, arr.shape)
    w.CopyFrom(numpy_helper.from_array(noise.astype(arr.dtype), w.name))
    onnx.save(m, str(dst))
    man = json.loads(src.with_name(src.name + ".json").read_text())
    man["artifact"] = dst.name
    man["files"] = {}
    dst.with_name(dst.name + ".json").write_text(json.dumps(man))


def test_a_layer_damaged_on_purpose_is_ranked_first(net, onnx_int8, tmp_path):
    from edgeseg.converters.layerwise import explain

    from edgeseg import runtimes

    src = onnx_int8.artifact.path
    bad = tmp_path / "damaged.onnx"
    _damage_onnx(src, bad, "/encoder3/encoder3.0/pconv2/pconv2.0/Conv")
    with runtimes.load(bad, check_files=False) as rt:
        report = explain(bad, net, _images(), runtime=rt)
    assert report.ranked()[0] == "encoder3.0.pconv2", report.table()
    assert report.first_damaged == "encoder3.0.pconv2"
    before = {s.name: s for s in explain(src, net, _images()).layers}
    after = {s.name: s for s in report.layers}
    assert all(abs(after[n].sqnr_db - before[n].sqnr_db) < 1e-6 for n in ("encoder1.0.pconv1", "encoder2.0.pconv1"))


def test_keep_float_leaves_the_named_layers_in_float(net, tmp_path):
    import onnx

    [res] = _int8(net, "onnx", tmp_path, keep_float=("encoder1.0.pconv1", "decoder5.0"))
    q = res.manifest.quantization
    assert q["keep_float"] == ["encoder1.0.pconv1", "decoder5.0"] and q["float_nodes"] > 2
    m = onnx.load(str(res.artifact.path))
    producers = {o: n for n in m.graph.node for o in n.output}
    inits = {i.name for i in m.graph.initializer}

    def weight_is_int8(node_name):
        conv = next(n for n in m.graph.node if n.name == node_name)
        w = conv.input[1]
        return w not in inits and producers[w].op_type == "DequantizeLinear"

    assert not weight_is_int8("/encoder1/encoder1.0/pconv1/pconv1.0/Conv")
    assert not weight_is_int8("/decoder5/decoder5.0/pconv2/pconv2.0/Conv")
    assert weight_is_int8("/encoder2/encoder2.0/pconv1/pconv1.0/Conv")
    with pytest.raises(ValueError, match="has no layer 'encoder1.0.pconvX'.*did you mean"):
        _int8(net, "onnx", tmp_path, keep_float=("encoder1.0.pconvX",))


def test_keep_float_in_openvino_and_its_layer_taps(net, tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    import openvino as ov
    from edgeseg.converters.layerwise import explain

    [res] = _int8(net, "openvino", tmp_path, keep_float=("CA1",))
    assert res.manifest.quantization["keep_float"] == ["CA1"]
    model = ov.Core().read_model(str(res.artifact.path))
    fq_inputs = {t.get_node().get_friendly_name() for op in model.get_ordered_ops()
                 if op.get_type_name() == "FakeQuantize" for t in op.output(0).get_target_inputs()}
    assert not any(name.startswith("/CA1/") for name in fq_inputs)
    assert any(name.startswith("/CA2/") for name in fq_inputs)
    report = explain(res.artifact.path, net, _images(2))
    # OpenVINO's CPU plugin refuses to expose the gate's output once CA1 is in float: it is reported, not
    # guessed; every other layer is compared
    assert set(report.unmatched) <= {"CA1"} and "encoder1.0.pconv1" in {s.name for s in report.layers}
    assert all("could not expose" in n for n in report.notes if "CA1" in n)


def test_openvino_trials_share_one_nncf_quantization_and_restore_float_layers(net, tmp_path, monkeypatch):
    """The budget's trials on OpenVINO reuse one whole-graph NNCF quantization (its statistics pass is most of a
    conversion): a layer returned to float loses its quantizers and gets back the bias that fast bias
    correction changed, while the other layers keep theirs."""
    pytest.importorskip("openvino")
    nncf = pytest.importorskip("nncf")
    import openvino as ov
    from edgeseg.converters.base import ConvertConfig
    from edgeseg.converters.calibration import load_images
    from edgeseg.converters.openvino_converter import OpenVINOConverter
    from edgeseg.runtimes.manifest import Preprocessing

    calls = []
    real = nncf.quantize
    monkeypatch.setattr(nncf, "quantize", lambda *a, **k: calls.append(1) or real(*a, **k))
    calib = load_images("synthetic", 16, Preprocessing(size=[SIZE, SIZE]), "calibration")
    cfg = ConvertConfig(target="openvino", precision="int8", input_size=(SIZE, SIZE), in_channels=3,
                        calibration=calib)
    conv = OpenVINOConverter()
    sample = torch.from_numpy(_images(1))
    model = copy.deepcopy(net)  # batch norms with statistics, so that every conv carries a bias to correct
    gen = torch.Generator().manual_seed(0)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=gen) * 0.1)
            mod.bias.data.copy_(torch.randn(mod.num_features, generator=gen) * 0.1)
    layer, node = "encoder2.0.pconv1", "/encoder2/encoder2.0/pconv1/pconv1.0/Conv"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arts = {keep: conv.convert(model, sample, replace(cfg, keep_float=keep), tmp_path / f"m{len(keep)}.xml")
                for keep in ((), (layer,), (layer, "CA2"))}
    assert len(calls) == 1  # three artifacts, one statistics pass
    assert arts[(layer,)].quantization["quantizers_removed"] > 0

    def around(m):  # (is the conv's weight int8?, the bias constant added to its output)
        op = next(o for o in m.get_ops() if o.get_friendly_name().startswith(node)
                  and o.get_type_name() == "Convolution")
        int8 = op.input_value(1).get_node().get_type_name() != "Constant"  # int8: Constant(i8) -> Convert -> ...
        add = next(t.get_node() for t in op.output(0).get_target_inputs() if t.get_node().get_type_name() == "Add")
        bias = next(add.input_value(i).get_node() for i in range(2)
                    if add.input_value(i).get_node().get_type_name() == "Constant")
        return int8, bias.get_data().copy()

    _, f_bias = around(conv._float[2])
    q_int8, q_bias = around(ov.Core().read_model(str(arts[()].path)))
    assert q_int8 and not np.array_equal(q_bias, f_bias)  # int8, with its bias corrected
    for keep in ((layer,), (layer, "CA2")):
        k_int8, k_bias = around(ov.Core().read_model(str(arts[keep].path)))
        assert not k_int8 and np.array_equal(k_bias, f_bias)  # back in float, original bias
    m = ov.Core().read_model(str(arts[(layer,)].path))
    fq_into = {t.get_node().get_friendly_name() for o in m.get_ops() if o.get_type_name() == "FakeQuantize"
               for t in o.output(0).get_target_inputs()}
    assert not any(n.startswith(node) for n in fq_into)
    # the float layer's consumer still reads a quantized tensor
    assert any(n.startswith("/encoder2/encoder2.0/multi_scale_dwconv/dwconvs.0/") for n in fq_into)


def test_a_budget_no_int8_meets_refuses_the_artifact_and_keeps_the_old_one(net, tmp_path, monkeypatch):
    from edgeseg.converters import budget

    from edgeseg import runtimes

    [old] = _int8(net, "onnx", tmp_path)  # an artifact already there
    before = old.artifact.path.read_bytes()
    # the drop is measured as 1 - mask agreement (random weights: a Dice against ground truth means nothing),
    # and 1e-6 lets only int8 identical to FP32 pass: the search runs to its trial limit and gives up
    real = budget.drop_of
    monkeypatch.setattr(budget, "drop_of", lambda ref, cand, post, labels: real(ref, cand, post, None))
    [res] = _int8(net, "onnx", tmp_path, budget=True, max_dice_drop=1e-6)
    assert res.refused and not res.passed and "misses the accuracy budget" in res.refused
    b = res.manifest.quantization["budget"]
    assert not b["met"] and len(b["trials"]) >= 2 and b["trials"][1]["keep_float"]
    assert old.artifact.path.read_bytes() == before
    with runtimes.load(old.artifact.path) as rt:  # its manifest is intact and still vouches for it
        assert rt.manifest.precision == "int8"


def test_the_bench_report_has_the_layer_section(net, onnx_int8):
    from edgeseg.benchmarks.html_report import render_html
    from edgeseg.benchmarks.results import RunResult
    from edgeseg.converters.layerwise import explain

    report = explain(onnx_int8.artifact.path, net, _images(2))
    section = {"runtime": "onnxruntime", **report.to_dict(), "ranked": report.ranked()[:8]}
    run = RunResult(run_id="r1", created="now", config={"model": "ultralightunet-t"}, environment={}, rows=[],
                    layers=[section, {"runtime": "executorch", "artifact": "x.pte", "error": "no layer taps"}])
    page = render_html(run)
    assert "Layer-wise divergence of the int8 artifacts" in page and 'alt="layers onnxruntime"' in page
    assert f"<td>{report.ranked()[0]}</td>" in page and "not compared: no layer taps" in page
    assert RunResult.from_dict(run.to_dict()).layers[0]["first_damaged"] == report.first_damaged


def test_convert_explain_writes_the_layer_report(tmp_path):
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "edgeseg", "convert", "--model", "ultralightunet-t", "--target", "onnx",
         "--precision", "int8", "--calib", "synthetic", "--calib-size", "16", "--verify-size", "8",
         "--img-size", str(SIZE), "--no-budget", "--explain", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert res.returncode in (0, 1), res.stderr  # 1 only if parity fails; the layer report is written either way
    report = json.loads((tmp_path / "ultralightunet-t_int8.onnx.layers.json").read_text())
    assert report["target"] == "onnx" and report["precision"] == "int8" and len(report["layers"]) > 40
    assert "first layer under 15 dB" in res.stderr and "encoder1.0.pconv1" in res.stderr


def test_the_ranking_interleaves_both_estimates_and_brings_a_gates_siblings_along():
    from edgeseg.converters.layerwise import LayerReport, LayerStat

    def stat(name, drop, noise, kind="Sequential"):
        return LayerStat(name=name, shape=[1], rel_error=0.1, sqnr_db=20.0, cka=0.99, drop_db=drop, tensor=name,
                         noise_added=noise, kind=kind)

    report = LayerReport(artifact="a", target="openvino", precision="int8", n_images=4, layers=[
        stat("first", 9.0, 0.001), stat("late", 1.0, 0.09), stat("gate1", 6.0, 0.010, "ChannelAttention"),
        stat("mid", 2.0, 0.02), stat("gate2", 0.0, 0.0, "ChannelAttention"), stat("block", 5.0, 0.5)])
    report.layers[-1].leaf = False  # blocks are reported, not ranked
    assert report.ranked() == ["first", "late", "gate1", "gate2", "mid"]
    assert report.first_damaged is None and report.worst_step == "first"


# ---- --precision auto ----
def test_auto_chooses_int8_only_where_it_pays_and_passes():
    from edgeseg.converters.auto import MIN_GAIN, decide

    assert decide(10.0, 5.0, True, "", "vnni")["chosen"] == "int8"
    slow = decide(6.3, 18.6, True, "", "vnni")
    assert slow["chosen"] == "fp32" and "does not pay on this CPU (int8 path vnni): 2.95x" in slow["reason"]
    assert decide(10.0, 10.0 / (MIN_GAIN * 0.99), True, "", "avx2")["chosen"] == "fp32"  # inside the noise
    refused = decide(10.0, None, False, "misses the accuracy budget", "vnni")
    assert refused["chosen"] == "fp32" and "misses the accuracy budget" in refused["reason"]


def test_precision_auto_times_both_and_records_the_choice(net, tmp_path):
    from edgeseg.converters import ExportOptions, QuantOptions, VerifyOptions, convert_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = convert_model(net, "onnx", "auto", export=ExportOptions(img_size=SIZE),
                                quant=QuantOptions(calib="synthetic", calib_size=16, budget=False),
                                verify=VerifyOptions(images=8), out_dir=tmp_path)
    assert sorted(r.artifact.precision for r in results) == ["fp32", "int8"]
    sel = [r.selection for r in results]
    assert sel[0]["chosen"] == sel[1]["chosen"] in ("fp32", "int8") and sel[0]["fp32_ms"] > 0 < sel[0]["int8_ms"]
    on_disk = json.loads(results[1].manifest_path.read_text())["extra"]["selection"]
    assert on_disk["chosen"] == sel[1]["chosen"] and on_disk["this"] == "int8"
    with pytest.raises(ValueError, match="auto compares fp32 with int8, which needs calibration data"):
        convert_model(net, "onnx", "auto", out_dir=tmp_path)


# ---- per-op profiles (bench --profile) ----
def test_op_profiles_come_from_each_runtimes_own_profiler(net, onnx_int8):
    from edgeseg.benchmarks.html_report import render_html
    from edgeseg.benchmarks.profile import summarize
    from edgeseg.benchmarks.results import RunResult

    from edgeseg import runtimes

    with runtimes.load(onnx_int8.artifact.path, threads=1) as rt:
        ops = rt.profile_ops(_images(1), runs=3)
    kinds = {o["op"] for o in ops}
    assert "QLinearConv" in kinds and all(o["ms"] >= 0 for o in ops) and ops[0]["ms"] >= ops[-1]["ms"]
    s = summarize(ops)
    assert abs(sum(s["by_type"].values()) - 1.0) < 1e-3 and len(s["top"]) <= 8
    page = render_html(RunResult(run_id="r", created="", config={}, environment={}, rows=[],
                                 profiles=[{"row": "onnx/int8", **s}, {"row": "tflite/int8", "error": "no profiler"}]))
    assert "Per-op profiles" in page and "<td>QLinearConv</td>" in page and "no profile (no profiler)" in page


def test_an_artifact_that_does_not_run_in_its_runtime_is_not_kept(net, tmp_path, monkeypatch):
    """The budget's trials run the artifact before the verification does: a runtime that cannot prepare it
    (ai-edge-quantizer's int8 of ultralightunet-s in XNNPACK) ends the conversion with that reason, and nothing
    is moved into place."""
    from edgeseg import runtimes

    def cannot_prepare(*_a, **_k):
        raise RuntimeError("Node number 7 (TfLiteXNNPackDelegate) failed to prepare.")

    monkeypatch.setattr(runtimes, "load", cannot_prepare)
    with pytest.raises(ValueError, match=r"does not run in its runtime \(Node number 7.*not kept"):
        _int8(net, "onnx", tmp_path, budget=True, max_dice_drop=0.5)
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.json"))

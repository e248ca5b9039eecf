"""benchmarks.roofline: FLOPs and bytes per layer, and the memory-bound / compute-bound call."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from edgeseg.benchmarks.roofline import bound, layer_cost, op_roofline, row_roofline  # noqa: E402
from edgeseg.converters.scopes import ModuleIndex  # noqa: E402

from edgeseg.models import create_model  # noqa: E402
from edgeseg.profiling import layer_costs, profile  # noqa: E402

ENV = {"peak_gflops_fp32": 100.0, "copy_gbs": 10.0}  # ridge 10 FLOP/byte


@pytest.fixture(scope="module")
def net():
    with torch.device("meta"):
        return create_model("ultralightunet-s")


def test_layer_costs_add_up_to_the_profile_and_know_depthwise_from_pointwise(net):
    costs = layer_costs(net, 64)
    assert sum(c["macs"] for c in costs.values()) == profile("ultralightunet-s", 64).macs
    dw = costs["encoder1.0.multi_scale_dwconv.dwconvs.0.0"]
    m = dict(net.named_modules())["encoder1.0.multi_scale_dwconv.dwconvs.0.0"]
    assert dw["kind"] == "depthwise conv" and m.groups == m.in_channels > 1
    k = m.kernel_size[0] * m.kernel_size[1]
    assert dw["macs"] == dw["out_elems"] * k + (dw["out_elems"] if m.bias is not None else 0)
    assert dw["params"] == sum(p.numel() for p in m.parameters(recurse=False))
    assert {c["kind"] for c in costs.values()} >= {"pointwise conv", "depthwise conv", "norm", "activation"}


def test_bytes_follow_the_precision_and_fused_layers_cost_nothing():
    conv = {"kind": "pointwise conv", "macs": 1000, "in_elems": 100, "out_elems": 50, "params": 20}
    assert layer_cost(conv, "fp32") == (2000.0, 150 * 4 + 20 * 4)
    assert layer_cost(conv, "int8") == (2000.0, 150 + 20)
    assert layer_cost(conv, "fp16") == (2000.0, 150 * 4 + 20 * 2)
    assert layer_cost({"kind": "norm", "macs": 9, "in_elems": 9, "out_elems": 9, "params": 2}, "fp32") == (0, 0)
    assert layer_cost({"kind": "pool", "macs": 9, "in_elems": 8, "out_elems": 2, "params": 0}, "fp32") == (0, 40)


def test_the_bound_is_read_off_the_ridge():
    mem = bound(flops=2e6, nbytes=1e6, ms=1.0, peak_gflops=100, gbs=10)  # 2 FLOP/byte < ridge 10
    assert mem["bound"] == "memory" and mem["ridge"] == 10 and mem["floor_ms"] == pytest.approx(0.1)
    assert mem["of_floor"] == 10 and mem["attained_gbs"] == 1.0
    comp = bound(flops=4e8, nbytes=1e6, ms=8.0, peak_gflops=100, gbs=10)  # 400 FLOP/byte
    assert comp["bound"] == "compute" and comp["floor_ms"] == pytest.approx(4.0) and comp["of_floor"] == 2
    assert "bound" not in bound(1.0, 1.0, 1.0, None, None)  # unknown machine: no call made


def test_profiled_ops_map_onto_layers_and_runtime_added_ops_get_none(net):
    costs = layer_costs(net, 64)
    dw = "/encoder1/encoder1.0/multi_scale_dwconv/dwconvs.0/dwconvs.0.0/Conv"
    ops = [{"name": dw, "op": "FusedConv", "ms": 0.5},
           {"name": dw + "/WithoutBiases", "op": "GroupConvolution[jit]", "ms": 0.5},
           {"name": "/encoder1/encoder1.0/multi_scale_dwconv/dwconvs.0/dwconvs.0.0/Conv_output_0_nchwc",
            "op": "ReorderOutput", "ms": 0.1},
           {"name": "/Resize_4", "op": "Resize", "ms": 0.2}]
    op_roofline(ops, costs, ModuleIndex(net), "fp32", ENV)
    for o in ops[:2]:
        assert o["layer"] == "encoder1.0.multi_scale_dwconv.dwconvs.0.0" and o["kind"] == "depthwise conv"
        assert o["roofline"]["bound"] == "memory"  # a depthwise conv does a few FLOPs per byte
    assert "roofline" not in ops[2] and "roofline" not in ops[3]
    row = row_roofline(costs, "fp32", 10.0, ENV)
    int8 = row_roofline(costs, "int8", 10.0, ENV)
    assert row["gflop"] == int8["gflop"] > 0 and int8["mbytes"] < row["mbytes"] / 3.5


def test_numbered_calls_of_a_shared_module_and_onnxruntime_fused_names_map_back(net):
    costs = layer_costs(net, 64)
    sa = costs["SA.conv"]
    assert sa["calls"] > 1  # one spatial-attention block, called at every decoder stage
    ops = [{"name": "/SA/conv_3/Conv", "op": "Convolution[brgconv]", "ms": 0.1},
           {"name": "/encoder1/encoder1.0/pconv1/pconv1.2/Clip_output_0_nchwc", "op": "Conv", "ms": 0.1}]
    op_roofline(ops, costs, ModuleIndex(net), "fp32", ENV)
    assert ops[0]["layer"] == "SA.conv"
    assert ops[0]["roofline"]["gflop"] == pytest.approx(2 * sa["macs"] / sa["calls"] / 1e9, abs=1e-5)
    assert ops[1]["layer"] == "encoder1.0.pconv1.0" and ops[1]["kind"] == "pointwise conv"

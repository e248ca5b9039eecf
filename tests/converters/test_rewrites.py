"""Deploy-time rewrites: exact (checked against the original model), recorded, and optional."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")


def _net():
    from edgeseg.models import create_model

    torch.manual_seed(0)
    return create_model("ultralightunet-t").eval()


def test_folding_the_channel_shuffle_is_exact_and_leaves_the_model_alone():
    from edgeseg.converters.rewrites import apply, fold_channel_shuffles

    from edgeseg.layers.mkconv import MKIR

    net = _net()
    x = torch.randn(2, 3, 64, 64)
    before = {n: m.shuffle_groups for n, m in net.named_modules() if isinstance(m, MKIR)}
    assert any(g > 1 for g in before.values())
    rewritten, [rec] = apply(net, x, ("fold-shuffle",))
    assert rec["name"] == "fold-shuffle" and rec["applied"] and rec["count"] == sum(g > 1 for g in before.values())
    assert rec["max_abs_diff"] < 1e-5 and rewritten is not net
    assert all(m.shuffle_groups == 1 for m in rewritten.modules() if isinstance(m, MKIR))
    assert {n: m.shuffle_groups for n, m in net.named_modules() if isinstance(m, MKIR)} == before  # untouched
    with torch.no_grad():
        assert torch.allclose(rewritten(x), net(x), atol=1e-5)
    assert fold_channel_shuffles(rewritten) == 0  # nothing left to fold
    same, records = apply(net, x, ())
    assert same is net and records == []
    with pytest.raises(ValueError, match="unknown rewrite 'fuse-everything'"):
        apply(net, x, ("fuse-everything",))


def test_a_converted_artifact_records_its_rewrites_and_loses_the_shuffle_ops(tmp_path):
    import onnx
    from edgeseg.converters import ExportOptions, VerifyOptions, convert_model

    def convert(rewrites, name):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            [r] = convert_model(_net(), "onnx", "fp32", export=ExportOptions(img_size=64, rewrites=rewrites, name=name),
                                verify=VerifyOptions(images=4), out_dir=tmp_path)
        return r

    folded, plain = convert(None, "folded"), convert((), "plain")
    assert folded.passed and plain.passed
    assert folded.manifest.extra["rewrites"][0]["applied"] and "rewrites" not in plain.manifest.extra

    def transposes(r):
        return sum(n.op_type == "Transpose" for n in onnx.load(str(r.artifact.path)).graph.node)

    assert transposes(folded) < transposes(plain)


def test_one_channel_convs_become_depthwise_sums_exactly_and_only_where_they_pay(tmp_path):
    import onnx
    from edgeseg.converters import ExportOptions, VerifyOptions, convert_model
    from edgeseg.converters.rewrites import apply, defaults_for, split_one_channel_convs

    net = _net()
    x = torch.randn(2, 3, 64, 64)
    rewritten, [rec] = apply(net, x, ("split-one-channel-convs",))
    assert rec["applied"] and rec["count"] == 1 and rec["max_abs_diff"] < 1e-5  # the spatial attention's 7x7
    assert type(net.SA.conv).__name__ == "Conv2d" and type(rewritten.SA.conv).__name__ == "DepthwiseSum"
    assert rewritten.SA.conv.dw.groups == net.SA.conv.in_channels == 2
    with torch.no_grad():
        assert torch.allclose(rewritten(x), net(x), atol=1e-5)
    assert split_one_channel_convs(rewritten) == 0
    assert "split-one-channel-convs" in defaults_for("openvino") and "split-one-channel-convs" in defaults_for("onnx")
    assert defaults_for("tflite") == defaults_for("executorch") == ("fold-shuffle", "split-grouped-convs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        [r] = convert_model(_net(), "onnx", "fp32", export=ExportOptions(img_size=64), verify=VerifyOptions(images=4),
                            out_dir=tmp_path)
    assert r.passed and [x["name"] for x in r.manifest.extra["rewrites"]] == [
        "fold-shuffle", "split-one-channel-convs", "split-grouped-convs"]
    convs = [n for n in onnx.load(str(r.artifact.path)).graph.node if n.op_type == "Conv" and "/SA/" in n.name]
    assert convs and all(any(a.name == "group" and a.i == 2 for a in n.attribute) for n in convs)


def test_rewrite_sets_given_as_text_are_read_as_lists():
    from edgeseg.converters import ExportOptions

    assert ExportOptions(rewrites="fold-shuffle").rewrites == ("fold-shuffle",)
    assert ExportOptions(rewrites="fold-shuffle, split-one-channel-convs").rewrites == (
        "fold-shuffle", "split-one-channel-convs")
    assert ExportOptions(rewrites="none").rewrites == () == ExportOptions(rewrites="").rewrites
    assert ExportOptions(rewrites=["fold-shuffle"]).rewrites == ("fold-shuffle",)
    assert ExportOptions().rewrites is None


def test_grouped_convs_become_depthwise_then_a_group_sum_exactly():
    from edgeseg.converters.rewrites import apply, split_grouped_convs

    net = _net()
    grouped = {n: m for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)
               and 1 < m.groups < m.in_channels and m.out_channels == m.groups}
    assert grouped  # the grouped attention gates' 3x3 convs
    x = torch.randn(2, 3, 64, 64)
    rewritten, [rec] = apply(net, x, ("split-grouped-convs",))
    assert rec["applied"] and rec["count"] == len(grouped) and rec["max_abs_diff"] < 1e-5
    name = next(iter(grouped))
    new = dict(rewritten.named_modules())[name]
    dw, pw = new[0], new[1]
    assert dw.groups == dw.in_channels == grouped[name].in_channels and pw.kernel_size == (1, 1)
    assert set(pw.weight.unique().tolist()) == {0.0, 1.0} and torch.equal(pw.bias, grouped[name].bias)
    with torch.no_grad():
        assert torch.allclose(rewritten(x), net(x), atol=1e-5)
    assert split_grouped_convs(rewritten) == 0

"""Exact deploy-time rewrites, applied to a copy of the model before export (the reference stays as trained).

Each rewrite changes how the network is computed, never what it computes: after it, the copy is run on the
verification sample against the original and kept only when max|d| < :data:`TOLERANCE` (times the largest
logit when that is above 1: reordered float sums err in proportion to the values); the manifest records
each rewrite with its max|d| (``extra.rewrites``). ``ExportOptions(rewrites=())`` / ``--no-rewrites`` turns
them off.

- ``fold-shuffle``: the MKIR channel shuffle followed by the block's pointwise convolution is that
  convolution with its input channels permuted (``W'[:, perm[j]] = W[:, j]``), so the shuffle's
  reshape/transpose/reshape leaves the graph. OpenVINO spent 12% of its fp32 time of ultralightunet-s in
  ``ShuffleChannels`` (docs/notes/issue-18.md). Every target.
- ``split-one-channel-convs``: a k x k convolution to one output channel (the spatial attention's 7x7 conv
  over [mean, max]) as a depthwise convolution plus a channel sum: the roofline showed OpenVINO's dense kernel
  at 77-277x its floor on one-channel outputs. onnxruntime and OpenVINO only (:data:`TARGET_DEFAULTS`).
- ``split-grouped-convs``: a grouped convolution with one output per group and a few inputs per group (the
  grouped attention gates' 3x3 convs, 2 inputs per group) as a depthwise convolution plus a 1x1 convolution
  that adds each group's channels (weights 1/0 and the bias). Every target.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

TOLERANCE = 1e-5


def fold_channel_shuffles(net: Any) -> int:
    """Fold every MKIR channel shuffle into the pointwise convolution after it; returns how many."""
    import torch

    from edgeseg.layers.mkconv import MKIR, channel_shuffle

    done = 0
    for module in net.modules():
        if not isinstance(module, MKIR) or module.shuffle_groups == 1:
            continue
        conv = module.pconv2[0]
        hidden = conv.weight.shape[1]
        probe = torch.arange(hidden, dtype=torch.float32).reshape(1, hidden, *([1] * (conv.weight.dim() - 2)))
        perm = channel_shuffle(probe, module.shuffle_groups).flatten().long()  # y[:, j] = x[:, perm[j]]
        with torch.no_grad():
            folded = torch.empty_like(conv.weight)
            folded[:, perm] = conv.weight
            conv.weight.copy_(folded)
        module.shuffle_groups = 1
        done += 1
    return done


def split_one_channel_convs(net: Any) -> int:
    """Compute every k x k (k > 1) convolution with one output channel (the spatial attention's 7x7 conv over
    [mean, max]) as a depthwise convolution and a channel sum; returns how many. OpenVINO's and
    onnxruntime's dense kernels vectorise over output channels, so one output channel leaves them idle."""
    from torch import nn

    from edgeseg.layers.depthwise_sum import DepthwiseSum

    done = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if (isinstance(child, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and child.out_channels == 1
                    and child.groups == 1 and child.in_channels > 1 and max(child.kernel_size) > 1):
                setattr(parent, name, DepthwiseSum(child))
                done += 1
    return done


def _depthwise_then_sum(conv: Any) -> Any:
    """``conv`` (groups g, one output per group) as a depthwise convolution and a 1x1 convolution that sums
    each group's channels (weights 1 and 0, the original bias)."""
    import torch
    from torch import nn

    c, g = conv.in_channels, conv.groups
    dims = conv.weight.dim() - 2
    dw = type(conv)(c, c, conv.kernel_size, stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                    groups=c, bias=False, padding_mode=conv.padding_mode)
    pw = type(conv)(c, g, 1, bias=conv.bias is not None)
    with torch.no_grad():
        dw.weight.copy_(conv.weight.reshape(c, 1, *conv.kernel_size))
        ones = torch.zeros(g, c, *([1] * dims))
        per = c // g
        for j in range(g):
            ones[j, j * per:(j + 1) * per] = 1.0
        pw.weight.copy_(ones)
        if conv.bias is not None:
            pw.bias.copy_(conv.bias)
    return nn.Sequential(dw, pw)


def split_grouped_convs(net: Any) -> int:
    """Compute every grouped convolution with one output channel per group and a few inputs per group (the
    grouped attention gates' 3x3 convs: 2 inputs per group) as a depthwise convolution followed by a 1x1
    convolution that adds each group's channels; returns how many. OpenVINO runs such grouped convs through a
    generic kernel (TOOLCHAIN.md: 16.5% of its time for a tiny share of the FLOPs)."""
    from torch import nn

    done = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if (isinstance(child, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and 1 < child.groups < child.in_channels
                    and child.out_channels == child.groups and child.in_channels // child.groups <= 4):
                setattr(parent, name, _depthwise_then_sum(child))
                done += 1
    return done


REWRITES: dict[str, Callable[[Any], int]] = {"fold-shuffle": fold_channel_shuffles,
                                             "split-one-channel-convs": split_one_channel_convs,
                                             "split-grouped-convs": split_grouped_convs}
DEFAULT = ("fold-shuffle", "split-grouped-convs")
# per target, what paid in one interleaved timing run each (docs/notes/issue-18.md): splitting the spatial
# attention's one-channel 7x7 conv paid on onnxruntime (1.03x -s, 1.22x base) and OpenVINO (1.05x, 1.00x) and
# cost on LiteRT (0.98x, 0.93x) and ExecuTorch (0.95x, 0.94x), whose XNNPACK kernels take the dense conv well;
# splitting the gates' grouped convs paid everywhere (-s / base: onnxruntime 1.04x / 1.05x, OpenVINO 1.10x /
# 1.12x, LiteRT 1.19x / 1.31x, ExecuTorch 1.32x / 1.19x)
TARGET_DEFAULTS: dict[str, tuple[str, ...]] = {
    "onnx": ("fold-shuffle", "split-one-channel-convs", "split-grouped-convs"),
    "openvino": ("fold-shuffle", "split-one-channel-convs", "split-grouped-convs"),
}


def defaults_for(target: str) -> tuple[str, ...]:
    """The rewrites applied to ``target`` when none are named."""
    return TARGET_DEFAULTS.get(target, DEFAULT)


def apply(net: Any, sample: Any, names: Sequence[str] | None = None) -> tuple[Any, list[dict[str, Any]]]:
    """A rewritten copy of ``net`` (``net`` itself when nothing applies) and one record per rewrite.

    Raises:
        ValueError: an unknown rewrite name.
    """
    import torch

    names = DEFAULT if names is None else tuple(names)
    unknown = [n for n in names if n not in REWRITES]
    if unknown:
        raise ValueError(f"unknown rewrite {unknown[0]!r}; known: {', '.join(REWRITES)}")
    records: list[dict[str, Any]] = []
    if not names:
        return net, records
    with torch.no_grad():
        reference = net(sample)
        current = net
        for name in names:
            candidate = copy.deepcopy(current)
            count = REWRITES[name](candidate)
            if not count:
                records.append({"name": name, "applied": False, "reason": "nothing to rewrite in this model"})
                continue
            diff = float((candidate(sample) - reference).abs().max())
            limit = TOLERANCE * max(1.0, float(reference.abs().max()))  # float sums reorder: scale with |y|
            ok = diff < limit
            records.append({"name": name, "applied": ok, "count": count, "max_abs_diff": diff,
                            "limit": limit, **({} if ok else {"reason": f"max|d| {diff:.3g} >= {limit:.3g}: not kept"})})
            if ok:
                current = candidate
    return current, records

"""Exact deploy-time rewrites, applied to a copy of the model before export (the reference stays as trained).

Each rewrite changes how the network is computed, never what it computes: after it, the copy is run on the
verification sample against the original and kept only when max|d| < :data:`TOLERANCE` (times the largest
logit when that is above 1: reordered float sums err in proportion to the values); the manifest records
each rewrite with its max|d| (``extra.rewrites``). ``ExportOptions(rewrites=())`` / ``--no-rewrites`` turns
them off.

- ``fold-shuffle``: the MKIR channel shuffle followed by the block's pointwise convolution is that
  convolution with its input channels permuted (``W'[:, perm[j]] = W[:, j]``), so the shuffle's
  reshape/transpose/reshape leaves the graph. OpenVINO spent 12% of its fp32 time of ultralightunet-s in
  ``ShuffleChannels`` (docs/notes/issue-18.md).
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


REWRITES: dict[str, Callable[[Any], int]] = {"fold-shuffle": fold_channel_shuffles}
DEFAULT = ("fold-shuffle",)


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

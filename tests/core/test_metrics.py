"""Metric values on masks whose answers are known by hand, including the empty-mask rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeseg import metrics as M
from edgeseg.train.evaluate import case_metrics, summarise


def _square(n, y0, x0, k):
    m = np.zeros((n, n), bool)
    m[y0:y0 + k, x0:x0 + k] = True
    return m


def test_overlap_metrics_by_hand():
    t = _square(10, 0, 0, 4)  # 16 px
    p = _square(10, 0, 2, 4)  # 16 px, 8 shared
    assert M.confusion(p, t) == (8, 8, 8)
    assert M.dice(p, t) == pytest.approx(0.5)
    assert M.iou(p, t) == pytest.approx(8 / 24)
    assert M.recall(p, t) == pytest.approx(0.5) and M.precision(p, t) == pytest.approx(0.5)


def test_empty_mask_rules():
    e = np.zeros((8, 8), bool)
    f = _square(8, 1, 1, 3)
    assert M.all_metrics(e, e) == {"dice": 1.0, "iou": 1.0, "recall": 1.0, "precision": 1.0, "hd95": 0.0}
    missed = M.all_metrics(e, f)  # polyp missed
    assert missed["dice"] == 0 and missed["recall"] == 0 and missed["precision"] == 0 and missed["hd95"] == math.inf
    false_alarm = M.all_metrics(f, e)  # polyp hallucinated in an empty frame
    assert false_alarm["dice"] == 0 and false_alarm["recall"] == 0 and false_alarm["hd95"] == math.inf


def test_hd95_of_a_shifted_square_is_the_shift():
    t = _square(40, 10, 10, 12)
    p = _square(40, 10, 13, 12)  # shifted 3 px right
    assert M.hd95(p, t) == pytest.approx(3.0, abs=1e-6)
    assert M.hd95(t, t) == 0.0
    assert M.hd95(p, t, spacing=(1.0, 0.5)) == pytest.approx(1.5, abs=1e-6)


def test_multiclass_case_metrics_average_foreground_classes():
    t = np.zeros((6, 6), np.uint8)
    t[:3, :3], t[3:, 3:] = 1, 2
    p = t.copy()
    p[3:, 3:] = 0  # class 2 missed entirely
    m = case_metrics(p, t, num_classes=3)
    assert m["dice"] == pytest.approx(0.5) and m["iou"] == pytest.approx(0.5)


def test_summary_means_and_hd95_rule():
    rows = [{"dice": 1.0, "iou": 1.0, "recall": 1.0, "precision": 1.0, "hd95": 2.0},
            {"dice": 0.0, "iou": 0.0, "recall": 0.0, "precision": 0.0, "hd95": math.inf}]
    res = summarise(["a", "b"], rows)
    assert res.mean["dice"] == 0.5 and res.mean["hd95"] == 2.0 and res.mean["hd95_undefined"] == 1
    assert res.summary()["n"] == 2
    assert res.to_csv().splitlines()[2] == "b,0,0,0,0,inf"

"""Scores match scikit-learn's; the comparison's ratios point the documented way."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from nubis.train.evaluation import batch_of, classification_metrics, compare
from nubis.train.modeldir import ModelMetrics


def test_per_class_scores_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 200)
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, 4, 200))
    y_pred[y_pred == 3] = 2  # class 3 is never predicted: precision 0, not a crash
    scores = classification_metrics(y_true, y_pred, classes=["a", "b", "c", "d"])
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2, 3], zero_division=0)
    for i, label in enumerate("abcd"):
        got = scores["per_class"][label]
        assert (got.precision, got.recall, got.f1, got.support) == pytest.approx((p[i], r[i], f[i], s[i]))
    assert scores["accuracy"] == pytest.approx(np.mean(y_true == y_pred))
    assert scores["f1_macro"] == pytest.approx(f.mean())


def _metrics(accuracy: float, size: int, b1: float, b64: float) -> ModelMetrics:
    return ModelMetrics(accuracy=accuracy, f1_macro=accuracy, per_class={}, size_bytes=size,
                        latency_ms_b1=b1, latency_ms_b64=b64)


def test_comparison_ratios() -> None:
    parent, child = _metrics(0.97, 400, 0.2, 1.0), _metrics(0.96, 100, 0.1, 2.0)
    c = compare(parent=parent, child=child, parent_pred=np.array([1, 2, 3, 4]),
                child_pred=np.array([1, 2, 3, 0]))
    assert c.size_ratio == 4.0
    assert c.accuracy_delta == pytest.approx(-0.01)
    assert (c.latency_ratio_b1, c.latency_ratio_b64) == (0.5, 2.0)
    assert c.agreement == 0.75
    assert c.parent == parent


def test_batch_of_repeats_rows_when_short() -> None:
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert batch_of(x, 1).shape == (1, 2)
    assert batch_of(x, 64).shape == (64, 2)
    assert batch_of(x, 64)[3].tolist() == [0.0, 1.0]

"""Scoring a model version on the held-out set: accuracy, per-class precision/recall/F1, latency."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nubis.train.modeldir import ClassMetrics, Comparison, ModelMetrics

LATENCY_RUNS = 200
WARMUP_RUNS = 10


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, *, classes: Sequence[Any]
) -> dict[str, Any]:
    """Accuracy, macro F1 and per-class precision/recall/F1/support, keyed by the label as text."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    per_class: dict[str, ClassMetrics] = {}
    f1s = []
    for index, label in enumerate(classes):
        tp = int(np.sum((y_pred == index) & (y_true == index)))
        predicted = int(np.sum(y_pred == index))
        support = int(np.sum(y_true == index))
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[str(label)] = ClassMetrics(precision=precision, recall=recall, f1=f1, support=support)
        f1s.append(f1)
    accuracy = float(np.mean(y_true == y_pred)) if len(y_true) else 0.0
    return {"accuracy": accuracy, "f1_macro": float(np.mean(f1s)), "per_class": per_class}


def median_latency_ms(call: Callable[[], Any], *, runs: int = LATENCY_RUNS) -> float:
    """Median wall time of ``call()`` in milliseconds, after a few warm-up calls."""
    for _ in range(WARMUP_RUNS):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def batch_of(x: np.ndarray, size: int) -> np.ndarray:
    """``size`` rows of ``x``, repeating it when it has fewer."""
    reps = -(-size // len(x))
    return np.tile(x, (reps, 1))[:size]


def score_version(
    predict: Callable[[np.ndarray], tuple[list[Any], np.ndarray]],
    *,
    x: np.ndarray,
    y: np.ndarray,
    classes: Sequence[Any],
    size_bytes: int,
    runs: int = LATENCY_RUNS,
) -> tuple[ModelMetrics, np.ndarray]:
    """Score ``predict`` (a Predictor's) on the held-out rows; returns metrics and predicted indices."""
    _, probabilities = predict(x)
    predicted = probabilities.argmax(axis=1)
    scores = classification_metrics(y, predicted, classes=classes)
    one, many = batch_of(x, 1), batch_of(x, 64)
    metrics = ModelMetrics(
        **scores,
        size_bytes=size_bytes,
        latency_ms_b1=round(median_latency_ms(lambda: predict(one), runs=runs), 4),
        latency_ms_b64=round(median_latency_ms(lambda: predict(many), runs=runs), 4),
    )
    return metrics, predicted


def compare(
    *, parent: ModelMetrics, child: ModelMetrics, parent_pred: np.ndarray, child_pred: np.ndarray
) -> Comparison:
    """How the child version stands against its parent: ratios are parent/child for size and
    child/parent for latency (below 1 is faster), the accuracy delta is child - parent."""
    return Comparison(
        size_ratio=round(parent.size_bytes / child.size_bytes, 3),
        accuracy_delta=round(child.accuracy - parent.accuracy, 6),
        latency_ratio_b1=round(child.latency_ms_b1 / parent.latency_ms_b1, 3),
        latency_ratio_b64=round(child.latency_ms_b64 / parent.latency_ms_b64, 3),
        agreement=float(np.mean(parent_pred == child_pred)),
        parent=parent,
    )

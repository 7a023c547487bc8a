"""Predictors for every format give the same answers and check their input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nubis.train.modeldir import load_heldout
from nubis.train.predictor import load_predictor

FORMATS = ["torch-fp32", "torch-int8-dynamic", "onnx"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_predicts_labels_and_probabilities(model_dirs: dict[str, Path], fmt: str) -> None:
    predictor = load_predictor(model_dirs[fmt])
    assert predictor.info.format == fmt
    x, y = load_heldout(model_dirs[fmt])
    labels, probabilities = predictor.predict(x)
    assert probabilities.shape == (len(x), 10)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert labels == [predictor.classes[i] for i in probabilities.argmax(axis=1)]
    assert np.mean(np.array(labels) == y) > 0.9


@pytest.mark.parametrize("fmt", FORMATS[1:])
def test_derived_formats_agree_with_the_parent(model_dirs: dict[str, Path], fmt: str) -> None:
    x, _ = load_heldout(model_dirs[fmt])
    parent, _ = load_predictor(model_dirs["torch-fp32"]).predict(x)
    child, _ = load_predictor(model_dirs[fmt]).predict(x)
    assert np.mean(np.array(parent) == np.array(child)) >= 0.99


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (np.zeros((2, 10), dtype=np.float32), "each row must have 64 features; got rows of 10"),
        (np.zeros(64, dtype=np.float32), r"must be a 2-D array of rows \(n, 64\)"),
        ([[1.0] * 64, [1.0] * 3], "equal lengths"),
        ([["x"] * 64], "no text"),
        (np.full((1, 64), np.nan), "finite"),
    ],
)
def test_bad_rows_are_a_clear_value_error(model_dirs: dict[str, Path], rows: object, message: str) -> None:
    predictor = load_predictor(model_dirs["onnx"])
    with pytest.raises(ValueError, match=message):
        predictor.predict(rows)


def test_no_rows_no_predictions(model_dirs: dict[str, Path]) -> None:
    labels, probabilities = load_predictor(model_dirs["torch-fp32"]).predict(np.zeros((0, 64)))
    assert labels == [] and probabilities.shape == (0, 10)

"""Load any model directory and predict: ``load_predictor(dir).predict(rows)``.

One :class:`Predictor` for every format: it checks the rows, applies the stored standardisation,
runs the format's network (torch for ``torch-fp32`` / ``torch-int8-dynamic``, onnxruntime for
``onnx``) and turns logits into labels and probabilities. Only the runtime the format needs is
imported, so an ONNX model serves without torch installed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nubis.train.modeldir import ModelInfo, read_model_info

Logits = Callable[[np.ndarray], np.ndarray]


class Predictor:
    """Predicts class labels and probabilities for raw (unstandardised) rows."""

    def __init__(self, info: ModelInfo, logits: Logits) -> None:
        self.info = info
        self.classes = list(info.classes)
        self._mean = np.asarray(info.mean, dtype=np.float32)
        self._std = np.asarray(info.std, dtype=np.float32)
        self._logits = logits

    @property
    def input_dim(self) -> int:
        return self.info.input_dim

    def predict(self, x: Any) -> tuple[list[Any], np.ndarray]:
        """Rows ``(n, input_dim)`` → (n labels, n x classes probabilities)."""
        rows = self.check_rows(x)
        if len(rows) == 0:
            return [], np.zeros((0, len(self.classes)), dtype=np.float32)
        logits = self._logits((rows - self._mean) / self._std)
        probabilities = softmax(np.asarray(logits, dtype=np.float32))
        return [self.classes[i] for i in probabilities.argmax(axis=1)], probabilities

    def check_rows(self, x: Any) -> np.ndarray:
        """``x`` as float32 rows of the model's width, or ValueError saying what is wrong."""
        try:
            rows = np.asarray(x, dtype=np.float32)
        except (TypeError, ValueError):
            raise ValueError(
                f"inputs must be rows of {self.input_dim} numbers each (equal lengths, no text)"
            ) from None
        if rows.ndim != 2:
            raise ValueError(
                f"inputs must be a 2-D array of rows (n, {self.input_dim}); got shape {rows.shape}"
            )
        if rows.shape[1] != self.input_dim:
            raise ValueError(
                f"each row must have {self.input_dim} features; got rows of {rows.shape[1]}"
            )
        if not np.isfinite(rows).all():
            raise ValueError("inputs must be finite numbers (no NaN or infinity)")
        return rows


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def load_predictor(model_dir: Path | str, *, threads: int | None = None) -> Predictor:
    """A predictor for the model directory (``model.json`` + weights).

    ``threads`` limits the compute threads: the onnxruntime session's, or torch's (process-wide).
    """
    model_dir = Path(model_dir)
    return open_predictor(read_model_info(model_dir), model_dir, threads=threads)


def open_predictor(info: ModelInfo, model_dir: Path, *, threads: int | None = None) -> Predictor:
    weights = Path(model_dir) / info.weights
    if not weights.is_file():
        raise FileNotFoundError(f"{model_dir} has no weights file {info.weights!r}")
    if info.format == "onnx":
        return Predictor(info, _onnx_logits(weights, threads=threads))
    return Predictor(info, _torch_logits(info, weights, threads=threads))


def _onnx_logits(weights: Path, *, threads: int | None) -> Logits:
    # onnxruntime only for ONNX models: torch models serve without it
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(weights), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def logits(rows: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: rows})[0]

    return logits


def _torch_logits(info: ModelInfo, weights: Path, *, threads: int | None) -> Logits:
    # torch only for torch models: ONNX models serve without it
    import torch

    from nubis.train.archs import build_network, quantize_linear_layers

    if threads:
        torch.set_num_threads(threads)
    network = build_network(info.arch, info.arch_config).eval()
    if info.format == "torch-int8-dynamic":
        network = quantize_linear_layers(network)
    with warnings.catch_warnings():  # rebuilding quantized tensors uses deprecated TypedStorage
        warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
        state = torch.load(weights, map_location="cpu", weights_only=True)
    network.load_state_dict(state)

    def logits(rows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return network(torch.from_numpy(rows)).float().numpy()

    return logits

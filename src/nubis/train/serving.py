"""Serve a model directory as a photon: ``write_model_photon(model_dir, dest, name=...)``.

The photon folder holds a copy of the model directory under ``model/`` and a short ``photon.py``
whose batched ``predict`` handler calls :func:`predict_requests`: each request's ``inputs`` is a
list of rows, so the rows of every request in a batch are joined, predicted at once and split back.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from nubis.errors import ValidationError
from nubis.train.modeldir import MODEL_FILES, ModelDirError, ModelInfo, read_model_info
from nubis.train.predictor import Predictor

MAX_BATCH_SIZE = 32
MAX_WAIT_MS = 5
_NAME = re.compile(r"^[a-z0-9][a-z0-9\-]{0,62}$")

PHOTON_TEMPLATE = '''"""Serves the nubis model in ./model ({arch}, {format}); written by nubis.train."""

from pathlib import Path

import nubis
from nubis.train.predictor import load_predictor
from nubis.train.serving import model_summary, predict_requests

MODEL_DIR = Path(__file__).resolve().parent / "model"
NAME = {name!r}


class ModelPhoton(nubis.Photon):
    """Classifies rows of {input_dim} numbers into {n_classes} classes."""

    name = NAME
    requirements = {requirements!r}
    resources = nubis.Resources(cpu=1, memory="1Gi")

    def init(self):
        self.predictor = load_predictor(MODEL_DIR)

    @nubis.handler(max_batch_size={max_batch_size}, max_wait_ms={max_wait_ms})
    def predict(self, inputs: list[list[float]]) -> dict:
        """Rows of {input_dim} numbers → predicted labels and class probabilities.

        Batched: `inputs` arrives as one list of rows per request; one result per request.
        """
        return predict_requests(self.predictor, inputs, model=NAME)

    @nubis.handler(method="GET")
    def info(self) -> dict:
        """The model: format, architecture, classes, input width and held-out metrics."""
        return model_summary(self.predictor.info, model=NAME)
'''


def requirements_for(info: ModelInfo) -> list[str]:
    """What the photon must have installed: the format's runtime (and numpy)."""
    return ["onnxruntime", "numpy"] if info.format == "onnx" else ["torch", "numpy"]


def write_model_photon(model_dir: Path, dest: Path, *, name: str) -> Path:
    """Write a photon folder serving ``model_dir`` at ``dest`` (written aside, then renamed)."""
    if not _NAME.match(name):
        raise ValueError(f"photon name {name!r}: use lower-case letters, digits and '-' (at most 63)")
    model_dir, dest = Path(model_dir), Path(dest)
    info = read_model_info(model_dir)
    if not (model_dir / info.weights).is_file():
        raise ModelDirError(f"{model_dir} has no weights file {info.weights!r}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ModelDirError(f"{dest} already exists; choose an empty or new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    try:
        tmp.chmod(0o755)
        (tmp / "model").mkdir()
        for file in sorted(MODEL_FILES):
            if (model_dir / file).is_file():
                shutil.copyfile(model_dir / file, tmp / "model" / file)
        (tmp / "photon.py").write_text(render_photon(info, name=name))
        if dest.exists():
            dest.rmdir()
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def render_photon(info: ModelInfo, *, name: str) -> str:
    return PHOTON_TEMPLATE.format(
        name=name,
        arch=info.arch,
        format=info.format,
        input_dim=info.input_dim,
        n_classes=len(info.classes),
        requirements=requirements_for(info),
        max_batch_size=MAX_BATCH_SIZE,
        max_wait_ms=MAX_WAIT_MS,
    )


def predict_requests(
    predictor: Predictor, requests: list[list[list[float]]], *, model: str
) -> list[dict[str, Any] | ValidationError]:
    """One result per request: its predictions, or a ValidationError (422) for its bad input only."""
    results: list[dict[str, Any] | ValidationError | None] = [None] * len(requests)
    chunks: list[np.ndarray] = []
    spans: list[tuple[int, int, int]] = []
    start = 0
    for i, rows in enumerate(requests):
        try:
            if len(rows) == 0:
                raise ValueError(f"inputs is empty: send at least one row of {predictor.input_dim} numbers")
            checked = predictor.check_rows(rows)
        except ValueError as exc:
            results[i] = ValidationError(
                f"invalid request: inputs ({exc})",
                details=[{"field": "inputs", "message": str(exc), "type": "value_error"}],
            )
            continue
        chunks.append(checked)
        spans.append((i, start, start + len(checked)))
        start += len(checked)
    if chunks:
        labels, probabilities = predictor.predict(np.concatenate(chunks))
        for i, begin, end in spans:
            results[i] = {
                "predictions": labels[begin:end],
                "probabilities": probabilities[begin:end].tolist(),
                "model": model,
            }
    return [r for r in results if r is not None]


def model_summary(info: ModelInfo, *, model: str) -> dict[str, Any]:
    metrics = info.metrics
    return {
        "model": model,
        "format": info.format,
        "arch": info.arch,
        "dataset": info.dataset,
        "classes": info.classes,
        "input_dim": info.input_dim,
        "input_shape": info.input_shape,
        "accuracy": metrics.accuracy if metrics else None,
        "f1_macro": metrics.f1_macro if metrics else None,
    }

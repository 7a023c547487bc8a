"""The model directory: the contract between the trainer, its derived versions and the control plane.

    DIR/model.json     ModelInfo: format, architecture, classes, standardisation, metrics, history
    DIR/model.pt       torch state_dict (torch-fp32, torch-int8-dynamic) — or DIR/model.onnx
    DIR/heldout.npz    X (raw float32 rows) and y (class indices): every version is scored on it
    DIR/result.json    {"metrics": ..., "comparison": null | {...}}

A directory is written under a temporary name next to DIR and renamed into place, so a
half-written model directory is never visible.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from nubis.errors import BadRequestError

MODEL_JSON = "model.json"
RESULT_JSON = "result.json"
HELDOUT = "heldout.npz"
CHECKPOINTS = "checkpoints"
MODEL_FILES = frozenset({MODEL_JSON, RESULT_JSON, HELDOUT, "model.pt", "model.onnx"})

Format = Literal["torch-fp32", "torch-int8-dynamic", "onnx"]
Arch = Literal["logreg", "mlp", "cnn"]
_WEIGHTS = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class ModelDirError(BadRequestError):
    """A model directory is missing, incomplete or not one at all."""


class ClassMetrics(BaseModel):
    precision: float
    recall: float
    f1: float
    support: int


class ModelMetrics(BaseModel):
    model_config = ConfigDict(extra="ignore")

    accuracy: float
    f1_macro: float
    per_class: dict[str, ClassMetrics]
    size_bytes: int
    latency_ms_b1: float
    latency_ms_b64: float


class ParentInfo(BaseModel):
    format: Format
    metrics: ModelMetrics


class ModelInfo(BaseModel):
    """``model.json``."""

    model_config = ConfigDict(extra="ignore")

    format: Format
    arch: Arch
    arch_config: dict[str, Any]
    input_dim: int = Field(gt=0)
    input_shape: list[int] | None = None
    classes: list[int | float | str]
    mean: list[float]
    std: list[float]
    weights: str
    dataset: str
    name: str | None = None
    metrics: ModelMetrics | None = None
    epochs: list[dict[str, Any]] = []
    parent: ParentInfo | None = None

    @field_validator("weights")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        if not _WEIGHTS.match(value):
            raise ValueError(f"weights must be a file name inside the model directory, not {value!r}")
        return value


class Comparison(BaseModel):
    size_ratio: float
    accuracy_delta: float
    latency_ratio_b1: float
    latency_ratio_b64: float
    agreement: float
    """Share of held-out rows where child and parent predict the same class."""
    parent: ModelMetrics


class Result(BaseModel):
    """``result.json``."""

    metrics: ModelMetrics
    comparison: Comparison | None = None


def read_model_info(model_dir: Path) -> ModelInfo:
    file = Path(model_dir) / MODEL_JSON
    if not file.is_file():
        raise ModelDirError(f"{model_dir} is not a model directory: it has no {MODEL_JSON}")
    try:
        return ModelInfo.model_validate_json(file.read_bytes())
    except ValueError as exc:
        raise ModelDirError(f"{file}: invalid model description: {exc}") from None


def write_json(path: Path, model: BaseModel) -> None:
    path.write_text(model.model_dump_json(indent=2, exclude_none=False) + "\n")


def save_heldout(model_dir: Path, *, x: np.ndarray, y: np.ndarray) -> None:
    np.savez(model_dir / HELDOUT, X=np.asarray(x, dtype=np.float32), y=np.asarray(y, dtype=np.int64))


def load_heldout(model_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    file = Path(model_dir) / HELDOUT
    if not file.is_file():
        raise ModelDirError(f"{model_dir} has no {HELDOUT}: it cannot be compared with other versions")
    with np.load(file, allow_pickle=False) as npz:
        return npz["X"].astype(np.float32), npz["y"].astype(np.int64)


def check_destination(dest: Path) -> None:
    """Refuse a destination that holds anything but an earlier model (never delete a user's files)."""
    if not dest.exists():
        return
    if not dest.is_dir():
        raise ModelDirError(f"{dest} exists and is not a folder")
    foreign = sorted(p.name for p in dest.iterdir() if p.name not in MODEL_FILES | {CHECKPOINTS})
    if foreign:
        raise ModelDirError(
            f"{dest} exists and holds files that are not a model's ({', '.join(foreign[:5])}); "
            "choose another --out"
        )


@contextlib.contextmanager
def staging_dir(dest: Path) -> Iterator[Path]:
    """A temporary folder next to ``dest``: fill it, and it replaces ``dest`` when the block ends.

    An earlier model at ``dest`` is replaced; its ``checkpoints/`` folder (the trainer's default
    place for them) is carried over. On an error the temporary folder is removed.
    """
    dest = Path(dest)
    check_destination(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; a model directory is as readable as its files
    try:
        yield tmp
        publish(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish(tmp: Path, dest: Path) -> None:
    if not dest.exists():
        os.rename(tmp, dest)
        return
    old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(dest, old)
    os.rename(tmp, dest)
    if (old / CHECKPOINTS).is_dir() and not (dest / CHECKPOINTS).exists():
        os.rename(old / CHECKPOINTS, dest / CHECKPOINTS)
    shutil.rmtree(old, ignore_errors=True)


def weights_size(model_dir: Path, info: ModelInfo) -> int:
    return (Path(model_dir) / info.weights).stat().st_size

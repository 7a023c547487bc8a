"""Training data: scikit-learn's bundled sets, CSV and NPZ files, a seeded stratified split.

A source is ``builtin:<name>`` or a path. A path is read from the workspace's object storage when
``NUBIS_STORAGE_URL`` (the workspace's files) is set, else from the local disk. Every problem a
user can cause raises :class:`DataError` with a message that says what to fix.
"""

from __future__ import annotations

import csv
import io
import math
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nubis.errors import BadRequestError, NubisError
from nubis.storage import Store

BUILTINS = ("digits", "iris", "wine", "breast_cancer")
BUILTIN_PREFIX = "builtin:"

Label = int | float | str


class DataError(BadRequestError):
    """The data cannot be used: missing, malformed, or unfit for the chosen model."""


@dataclass(frozen=True)
class Dataset:
    """Features as float32 rows, labels as class indices into ``classes``."""

    x: np.ndarray
    y: np.ndarray
    classes: list[Label]
    input_shape: tuple[int, ...] | None = None
    """(channels, height, width) when the rows are flattened images, else None."""

    @property
    def input_dim(self) -> int:
        return int(self.x.shape[1])


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_dataset(
    source: str, *, label_column: str = "label", env: Mapping[str, str] | None = None
) -> Dataset:
    """Load ``builtin:NAME``, or a CSV/NPZ file from workspace storage or the local disk."""
    if source.startswith(BUILTIN_PREFIX):
        return load_builtin(source.removeprefix(BUILTIN_PREFIX))
    raw = read_source(source, env=os.environ if env is None else env)
    if source.lower().endswith(".npz") or raw[:2] == b"PK":
        return parse_npz(raw, source=source)
    return parse_csv(raw, source=source, label_column=label_column)


def load_builtin(name: str) -> Dataset:
    if name not in BUILTINS:
        raise DataError(f"unknown builtin data set {name!r}; choose one of: {', '.join(BUILTINS)}")
    # scikit-learn is needed for the bundled data sets only; CSV and NPZ training works without it
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    x = np.asarray(bunch.data, dtype=np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    classes: list[Label] = [int(c) for c in np.unique(y)]
    shape = (1, 8, 8) if name == "digits" else None
    return Dataset(x=x, y=np.searchsorted(classes, y), classes=classes, input_shape=shape)


def read_source(path: str, *, env: Mapping[str, str]) -> bytes:
    """The bytes at ``path``: workspace storage when ``NUBIS_STORAGE_URL`` is set, else local disk."""
    url = env.get("NUBIS_STORAGE_URL")
    if url:
        return _read_storage(url, env, path)
    file = Path(path)
    if not file.is_file():
        where = "a folder" if file.is_dir() else "no such file"
        raise DataError(f"cannot read data {path!r}: {where}; give a CSV or NPZ file or builtin:NAME")
    return file.read_bytes()


def _read_storage(url: str, env: Mapping[str, str], path: str) -> bytes:
    try:
        return Store.from_url(url, env).read_bytes(path)
    except NubisError as exc:  # NotFoundError, InvalidPathError, ConnectionFailedError…
        workspace = env.get("NUBIS_WORKSPACE", "?")
        raise DataError(f"cannot read data {path!r} from workspace {workspace!r}: {exc.message}") from None


def parse_npz(raw: bytes, *, source: str) -> Dataset:
    """An NPZ with ``X`` (n, features) or images (n, H, W) / (n, C, H, W), and ``y`` (n,)."""
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{source}: not a readable NPZ file ({exc})") from None
    missing = [name for name in ("X", "y") if name not in arrays]
    if missing:
        raise DataError(f"{source}: the NPZ has no array {missing[0]!r} (found: {sorted(arrays)})")
    x, y = arrays["X"], arrays["y"]
    if x.ndim not in (2, 3, 4) or y.ndim != 1 or len(x) != len(y):
        raise DataError(
            f"{source}: X must be (n, features), (n, H, W) or (n, C, H, W) and y (n,); "
            f"got X {x.shape} and y {y.shape}"
        )
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{source}: X must be numeric, not {x.dtype}")
    shape = None
    if x.ndim == 3:
        shape = (1, *x.shape[1:])
    elif x.ndim == 4:
        shape = tuple(x.shape[1:])
    flat = x.reshape(len(x), -1).astype(np.float32)
    labels = [_scalar(v) for v in y.tolist()]
    return _dataset(flat, labels, source=source, input_shape=shape)


def parse_csv(raw: bytes, *, source: str, label_column: str) -> Dataset:
    """A CSV with a header row, numeric feature columns and a label column."""
    try:
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{source}: not a readable CSV file ({exc})") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise DataError(f"{source}: the CSV needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        raise DataError(
            f"{source}: no label column {label_column!r} (columns: {', '.join(header)}); "
            "name it with --label-column"
        )
    at = header.index(label_column)
    features = [h for i, h in enumerate(header) if i != at]
    if not features:
        raise DataError(f"{source}: the CSV has no feature columns besides {label_column!r}")
    x = np.empty((len(rows) - 1, len(features)), dtype=np.float32)
    labels: list[Label] = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{source}: line {line} has {len(row)} fields, the header has {len(header)}")
        labels.append(row[at].strip())
        values = [cell for i, cell in enumerate(row) if i != at]
        for j, cell in enumerate(values):
            x[line - 2, j] = _number(cell, where=f"{source}: line {line}, column {features[j]!r}")
    return _dataset(x, _typed_labels(labels), source=source)


def _number(cell: str, *, where: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise DataError(
            f"{where}: {cell.strip()!r} is not a number (feature columns must be numeric)"
        ) from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {cell.strip()!r} is not a finite number")
    return value


def _typed_labels(labels: list[Any]) -> list[Label]:
    """Text labels become ints if all are integers, floats if all are numbers, else stay text."""
    for kind in (int, float):
        try:
            return [kind(v) for v in labels]
        except ValueError:
            continue
    return labels


def _scalar(value: Any) -> Label:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _dataset(
    x: np.ndarray, labels: list[Label], *, source: str, input_shape: tuple[int, ...] | None = None
) -> Dataset:
    if not np.isfinite(x).all():
        raise DataError(f"{source}: the features hold NaN or infinite values")
    kinds = {type(v) for v in labels}
    if len(kinds) > 1 and str in kinds:
        labels = [str(v) for v in labels]
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise DataError(f"{source}: the labels hold {len(classes)} class; training needs at least 2")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[v] for v in labels], dtype=np.int64)
    return Dataset(x=x, y=y, classes=classes, input_shape=input_shape)


def stratified_split(dataset: Dataset, *, test_fraction: float, seed: int) -> Split:
    """A seeded split that keeps each class's share: the same inputs always give the same split.

    Each class gives ``round(n * test_fraction)`` of its rows to the held-out set (at least one
    when it has two or more rows, never all of them).
    """
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for cls in range(len(dataset.classes)):
        rows = np.flatnonzero(dataset.y == cls)
        rows = rows[rng.permutation(len(rows))]
        n_test = min(max(round(len(rows) * test_fraction), 1 if len(rows) > 1 else 0), len(rows) - 1)
        test.append(rows[:n_test])
    test_rows = np.sort(np.concatenate(test))
    if len(test_rows) == 0:
        raise DataError("the held-out split is empty: give more rows or a larger --test-fraction")
    mask = np.ones(len(dataset.y), dtype=bool)
    mask[test_rows] = False
    train_rows = np.flatnonzero(mask)
    return Split(
        x_train=dataset.x[train_rows],
        y_train=dataset.y[train_rows],
        x_test=dataset.x[test_rows],
        y_test=dataset.y[test_rows],
    )


def standardization(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (float32); a constant feature gets std 1 so it maps to 0."""
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    std[std < 1e-8] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)

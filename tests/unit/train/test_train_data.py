"""Data sources: builtins, CSV (string labels), NPZ (images), workspace storage, the seeded split."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from nubis.storage import ObjectStore
from nubis.train.data import (
    DataError,
    load_dataset,
    parse_csv,
    standardization,
    stratified_split,
)


def test_builtin_digits_are_8x8_images_with_ten_classes() -> None:
    data = load_dataset("builtin:digits")
    assert data.x.shape == (1797, 64)
    assert data.x.dtype == np.float32
    assert data.classes == list(range(10))
    assert data.input_shape == (1, 8, 8)


@pytest.mark.parametrize(("name", "features", "classes"), [("iris", 4, 3), ("wine", 13, 3),
                                                             ("breast_cancer", 30, 2)])
def test_other_builtins_are_flat(name: str, features: int, classes: int) -> None:
    data = load_dataset(f"builtin:{name}")
    assert data.input_dim == features
    assert len(data.classes) == classes
    assert data.input_shape is None


def test_unknown_builtin_names_the_choices() -> None:
    with pytest.raises(DataError, match="unknown builtin data set 'mnist'; choose one of: digits, iris"):
        load_dataset("builtin:mnist")


def test_csv_with_string_labels_sorts_the_classes(tmp_path: Path) -> None:
    file = tmp_path / "fruit.csv"
    file.write_text("weight,kind,colour\n150,pear,0.2\n120,apple,0.9\n130,apple,0.8\n160,pear,0.1\n")
    data = load_dataset(str(file), label_column="kind")
    assert data.classes == ["apple", "pear"]
    assert data.y.tolist() == [1, 0, 0, 1]
    assert data.x.tolist() == [[150, pytest.approx(0.2)], [120, pytest.approx(0.9)],
                               [130, pytest.approx(0.8)], [160, pytest.approx(0.1)]]


def test_csv_numeric_labels_become_ints() -> None:
    data = parse_csv(b"a,label\n1,10\n2,2\n3,10\n", source="x.csv", label_column="label")
    assert data.classes == [2, 10]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"a,b\n1,2\n", "no label column 'label' (columns: a, b); name it with --label-column"),
        (b"a,label\n1,x\nfoo,y\n", "line 3, column 'a': 'foo' is not a number"),
        (b"a,label\n1,x\n2\n", "line 3 has 1 fields, the header has 2"),
        (b"a,label\n1,x\n2,x\n", "training needs at least 2"),
        (b"label\nx\ny\n", "no feature columns"),
        (b"a,label\n", "at least one data row"),
    ],
)
def test_bad_csv_says_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_csv(body, source="data.csv", label_column="label")


def test_npz_images_keep_their_shape(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    file = tmp_path / "images.npz"
    np.savez(file, X=rng.random((20, 6, 6)), y=np.array([3, 7] * 10))
    data = load_dataset(str(file))
    assert data.x.shape == (20, 36)
    assert data.input_shape == (1, 6, 6)
    assert data.classes == [3, 7]


def test_npz_without_y_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "bad.npz"
    np.savez(file, X=np.zeros((4, 2)))
    with pytest.raises(DataError, match="the NPZ has no array 'y'"):
        load_dataset(str(file))


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_dataset(str(tmp_path / "nope.csv"))


def test_paths_come_from_workspace_storage_when_configured(tmp_path: Path) -> None:
    store = ObjectStore.from_url(str(tmp_path / "storage")).files("team")
    buf = io.BytesIO()
    np.savez(buf, X=np.arange(12, dtype=np.float32).reshape(6, 2), y=np.array([0, 1] * 3))
    store.put_bytes("data/train.npz", buf.getvalue())
    env = {"NUBIS_STORAGE_URL": ObjectStore.from_url(str(tmp_path / "storage")).files_url("team"),
           "NUBIS_WORKSPACE": "team"}
    data = load_dataset("data/train.npz", env=env)
    assert data.x.shape == (6, 2)
    with pytest.raises(DataError, match=r"cannot read data 'data/missing\.csv' from workspace 'team'"):
        load_dataset("data/missing.csv", env=env)
    with pytest.raises(DataError, match="cannot read data"):  # the storage root is not the workspace's files
        load_dataset("data/train.npz", env={"NUBIS_STORAGE_URL": str(tmp_path / "storage")})


def test_split_is_seeded_stratified_and_disjoint() -> None:
    data = load_dataset("builtin:digits")
    a = stratified_split(data, test_fraction=0.2, seed=0)
    b = stratified_split(data, test_fraction=0.2, seed=0)
    c = stratified_split(data, test_fraction=0.2, seed=1)
    assert np.array_equal(a.x_test, b.x_test) and np.array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_test, c.x_test)
    assert len(a.y_test) + len(a.y_train) == 1797
    assert abs(len(a.y_test) - 0.2 * 1797) <= 10
    for cls in range(10):  # every class keeps about its share
        share = np.mean(a.y_test == cls) / np.mean(data.y == cls)
        assert 0.9 < share < 1.1
    train_rows = {row.tobytes() for row in a.x_train}
    assert sum(row.tobytes() in train_rows for row in a.x_test) < 5  # digits has a few duplicates


def test_standardization_maps_constant_features_to_zero() -> None:
    x = np.array([[1.0, 5.0], [3.0, 5.0]], dtype=np.float32)
    mean, std = standardization(x)
    assert mean.tolist() == [2.0, 5.0]
    assert std.tolist() == [1.0, 1.0]

"""normalize_path: the one rule for paths in storage, shared by server, SDK and workloads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nubis.errors import error_class_for
from nubis.storage import InvalidPathError, normalize_path


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("a.csv", "a.csv"),
        ("datasets//train/./a.csv", "datasets/train/a.csv"),
        ("datasets/", "datasets"),
        ("./x", "x"),
        ("v1..2/file..txt", "v1..2/file..txt"),  # dots inside a name are fine
        ("données/été.csv", "données/été.csv"),
        ("with space/[1]*.csv", "with space/[1]*.csv"),
    ],
)
def test_paths_are_normalised(raw: str, clean: str) -> None:
    assert normalize_path(raw) == clean


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("../x", "'../x': '..' is not allowed in paths"),
        ("a/../../x", "'a/../../x': '..' is not allowed in paths"),
        ("a/..", "'a/..': '..' is not allowed in paths"),
        ("/etc/passwd", "'/etc/passwd': give a path relative to the workspace, without a leading /"),
        ("a\x00b", "paths cannot contain control characters"),
        ("a\nb", "paths cannot contain control characters"),
        ("a\x7fb", "paths cannot contain control characters"),
        ("a\x85b", "paths cannot contain control characters"),
        ("a\ud800b", "paths cannot contain control characters"),
        ("a\\b", "use '/' to separate folders, not '\\'"),
        (".nubis-tmp/x", "'.nubis-tmp' is reserved for uploads in progress"),
        ("", "the path is empty"),
        ("./", "the path is empty"),
        ("x" * 256, "folder and file names are at most 255 bytes"),
        ("a/" * 600, "paths are at most 1024 characters"),
    ],
)
def test_bad_paths_are_rejected(raw: str, message: str) -> None:
    with pytest.raises(InvalidPathError) as info:
        normalize_path(raw)
    assert info.value.message == message
    assert (info.value.code, info.value.http_status) == ("invalid_path", 422)


def test_the_client_rebuilds_the_error_from_its_code() -> None:
    assert error_class_for("invalid_path") is InvalidPathError


def test_empty_is_allowed_where_it_means_everything() -> None:
    assert normalize_path("", allow_empty=True) == ""
    assert normalize_path("./", allow_empty=True) == ""


PIECES = st.sampled_from(["a", "b.csv", ".", "..", "", "/", "//", "x..y", "é", " ", "\\", "\x00", "~"])
PATHS = st.one_of(st.text(max_size=60), st.lists(PIECES, max_size=12).map("".join),
                  st.lists(PIECES, max_size=8).map("/".join))


@given(PATHS)
def test_a_normalised_path_is_safe_and_stable(raw: str) -> None:
    try:
        clean = normalize_path(raw, allow_empty=True)
    except InvalidPathError:
        return
    parts = clean.split("/")
    assert ".." not in parts
    assert "." not in parts
    assert not clean.startswith("/")
    assert clean == "" or "" not in parts
    assert normalize_path(clean, allow_empty=True) == clean

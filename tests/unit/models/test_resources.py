"""Resource requests: sizes such as "2Gi" and the Resources model."""

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nubis import Resources
from nubis.models.resources import format_size, parse_bytes


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2Gi", 2 * 2**30),
        ("512Mi", 512 * 2**20),
        ("1G", 10**9),
        ("500M", 500 * 10**6),
        ("1.5Gi", 3 * 2**29),
        ("64k", 64_000),
        ("8KiB", 8192),
        ("2gb", 2 * 10**9),
        (" 3 Ti ", 3 * 2**40),
        ("1024", 1024),
        (1024, 1024),
        (0, 0),
        (12.9, 12),
    ],
)
def test_parse_bytes(value: int | float | str, expected: int) -> None:
    assert parse_bytes(value) == expected


@pytest.mark.parametrize("value", ["", "lots", "2 GiB please", "5XB", "Gi", "-1Gi", "1e9", "½Gi"])
def test_parse_bytes_rejects_unreadable_sizes(value: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_bytes(value)
    assert str(info.value) == (f"cannot read size {value!r}: use bytes or a unit such as 512Mi, 2Gi, 1G")


def test_parse_bytes_rejects_negative_numbers_and_bools() -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        parse_bytes(-1)
    with pytest.raises(ValueError, match="a number of bytes"):
        parse_bytes(True)


@given(st.integers(min_value=0, max_value=2**40), st.sampled_from(["Ki", "Mi", "Gi"]))
def test_binary_units_multiply_exactly(n: int, unit: str) -> None:
    factor = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}[unit]
    assert parse_bytes(f"{n}{unit}") == n * factor


def test_resources_defaults() -> None:
    assert Resources().model_dump() == {"cpu": 1.0, "memory": 2**30, "gpu": 0, "gpu_type": None}


def test_resources_accept_size_strings() -> None:
    r = Resources(cpu=0.5, memory="256Mi", gpu=1, gpu_type="h100")
    assert r.memory == 256 * 2**20
    assert Resources.model_validate_json('{"memory": "2Gi"}').memory == 2 * 2**30


def test_resources_round_trip_through_json() -> None:
    r = Resources(cpu=2, memory="4Gi")
    assert Resources.model_validate_json(r.model_dump_json()) == r


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"memory": "lots"}, "cannot read size 'lots'"),
        ({"memory": [1]}, "memory must be bytes or a string such as '2Gi'"),
        ({"cpu": 0}, "greater than 0"),
        ({"gpu": -1}, "greater than or equal to 0"),
        ({"gpus": 1}, "Extra inputs are not permitted"),
    ],
)
def test_resources_reject_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        Resources(**kwargs)
    assert message in str(info.value)


def test_resources_are_frozen() -> None:
    with pytest.raises(pydantic.ValidationError):
        Resources().cpu = 4  # type: ignore[misc]


@pytest.mark.parametrize(("size", "shown"), [
    (4 * 2**30, "4Gi"), (1536 * 2**20, "1.5Gi"), (512 * 2**20, "512Mi"), (2**40, "1Ti"),
    (1000, "1000"), (0, "0"),
])
def test_format_size_writes_what_parse_bytes_reads(size: int, shown: str) -> None:
    assert format_size(size) == shown
    assert parse_bytes(shown) == size

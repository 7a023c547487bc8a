"""One reading of durations for every option, field and query that takes one."""

from __future__ import annotations

import pytest

from nubis.errors import ValidationError
from nubis.models.durations import format_duration, parse_duration, read_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("15m", 900), ("15min", 900), ("12h", 43200), ("30d", 2592000), ("2w", 1209600),
    ("1.5h", 5400), (" 7D ", 604800), ("90", 90), ("0s", 0), ("2 h", 7200),
])
def test_the_forms_users_write(text: str, seconds: float) -> None:
    assert read_duration(text) == seconds
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "-1h", "1y", "1h30m", "1e3s", "½h", "1.h", "nan", "inf", "1\x00s"])
def test_anything_else_is_not_a_duration(text: str) -> None:
    assert read_duration(text) is None
    with pytest.raises(ValidationError, match="must be a duration like 90s, 15m, 12h, 30d or 2w") as raised:
        parse_duration(text, name="--expires")
    assert raised.value.details == [{"field": "--expires", "value": text}]


def test_numbers_are_seconds_and_every_value_is_checked_against_its_range() -> None:
    assert parse_duration(120, name="for") == 120.0
    assert parse_duration(2.5) == 2.5
    with pytest.raises(ValidationError, match="--alert-interval must be between 1s and 1w, not '0s'"):
        parse_duration("0s", name="--alert-interval", low=1, high=7 * 86400)
    with pytest.raises(ValidationError, match="between 10s and 1d"):
        parse_duration("2d", low=10, high=86400)
    with pytest.raises(ValidationError, match="between"):
        parse_duration("9" * 400 + "w")  # a float too large for any range, not an OverflowError
    with pytest.raises(ValidationError, match="between"):
        parse_duration(-5)


@pytest.mark.parametrize(("seconds", "text"),
                         [(86400, "1d"), (90, "90s"), (3600, "1h"), (120, "2m"), (1209600, "2w"), (0, "0s"),
                          (1.5, "1.5s")])
def test_format_duration_uses_the_largest_whole_unit(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text

"""Durations as users write them, one reading for every option, field and query that takes one:
``90s``, ``15m`` (or ``15min``), ``12h``, ``30d``, ``2w``; decimals (``1.5h``), any case, spaces
around; a bare number is seconds."""

from __future__ import annotations

import math
import re

from nubis.errors import ValidationError

UNIT_S = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
FORMS = "90s, 15m, 12h, 30d or 2w"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|min|m|h|d|w)?\s*$", re.IGNORECASE)


def read_duration(text: str) -> float | None:
    """The seconds ``text`` says, or None when it is not a duration at all (no range checked)."""
    found = _DURATION.match(text)
    if found is None:
        return None
    return float(found.group(1)) * UNIT_S[(found.group(2) or "s").lower()]


def parse_duration(value: str | float, *, name: str = "duration", low: float = 0.0,
                   high: float = 3660 * 86400) -> float:
    """Seconds from a duration (a number is seconds already), between ``low`` and ``high``; a
    ValidationError that names ``name``, the forms that work and the range otherwise."""
    seconds = float(value) if isinstance(value, int | float) else read_duration(value)
    details = [{"field": name, "value": str(value)[:40]}]
    if seconds is None:
        raise ValidationError(f"{name} must be a duration like {FORMS}, not {str(value)[:40]!r}",
                              details=details)
    if not (math.isfinite(seconds) and low <= seconds <= high):
        raise ValidationError(f"{name} must be between {format_duration(low)} and {format_duration(high)}, "
                              f"not {str(value)[:40]!r}", details=details)
    return seconds


def format_duration(seconds: float) -> str:
    """The largest whole unit: ``86400`` → ``1d``, ``90`` → ``90s``, ``3600`` → ``1h``."""
    for unit in ("w", "d", "h", "m"):
        if seconds >= UNIT_S[unit] and seconds % UNIT_S[unit] == 0:
            return f"{int(seconds // UNIT_S[unit])}{unit}"
    return f"{seconds:g}s"

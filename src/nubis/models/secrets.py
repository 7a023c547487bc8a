"""Secrets on the wire: names and dates only. No model here carries a value back to a client."""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
SECRET_NAME_RULE = ("use letters, digits and '_', not starting with a digit, at most 128 characters "
                    "(secrets become environment variables)")
MAX_SECRET_CHARS = 64 * 1024

_NAME = re.compile(SECRET_NAME_PATTERN)


def is_valid_secret_name(name: str) -> bool:
    """Environment-variable style: letters, digits and '_', not starting with a digit, ≤ 128."""
    return _NAME.fullmatch(name) is not None


class SecretSetRequest(BaseModel):
    """Body of ``PUT /api/v1/secrets/{name}``: the value, write-only."""

    model_config = ConfigDict(extra="forbid")

    value: str = Field(min_length=1, max_length=MAX_SECRET_CHARS,
                       description="stored encrypted; never returned by any route")


class Secret(BaseModel):
    name: str
    created_at: datetime
    updated_at: datetime


def check_secret_names(secrets: list[str]) -> list[str]:
    """A spec's list of secrets: valid names, each once (pydantic validators call this)."""
    bad = sorted(s for s in secrets if not is_valid_secret_name(s))
    if bad:
        raise ValueError(f"secret names {bad!r} are not valid: {SECRET_NAME_RULE}")
    repeated = sorted({s for s in secrets if secrets.count(s) > 1})
    if repeated:
        raise ValueError(f"secrets {repeated!r} are listed more than once")
    return secrets

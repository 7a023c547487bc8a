"""Resource requests: what one replica or job worker needs."""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

_UNITS = {
    "": 1,
    "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
    "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(value: int | float | str) -> int:
    """``"2Gi"`` → 2147483648; ``"500M"`` → 500000000; plain numbers are bytes."""
    if isinstance(value, bool):
        raise ValueError("a size must be a number of bytes or a string such as '2Gi'")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("a size must be a finite number")
        if value < 0:
            raise ValueError("a size cannot be negative")
        return int(value)
    match = _SIZE.match(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"cannot read size {value!r}: use bytes or a unit such as 512Mi, 2Gi, 1G")
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(size: int) -> str:
    """``4294967296`` → ``4Gi``, ``1610612736`` → ``1.5Gi``: the units ``parse_bytes`` reads."""
    for unit in ("Ti", "Gi", "Mi", "Ki"):
        scale = _UNITS[unit.lower()]
        if size >= scale:
            return f"{round(size / scale, 2):g}{unit}"
    return str(size)


class Resources(BaseModel):
    """What one replica (or one job worker) needs: ``Resources(cpu=1, memory="2Gi", gpu=0)``."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    cpu: float = Field(default=1.0, gt=0, le=2**20, description="CPU cores")
    memory: int = Field(default=2**30, ge=0, le=2**60, description="bytes; accepts strings such as '2Gi'")
    gpu: int = Field(default=0, ge=0, le=2**20, description="number of GPUs")
    gpu_type: str | None = None

    @field_validator("memory", mode="before")
    @classmethod
    def _parse_memory(cls, value: object) -> int:
        if isinstance(value, int | float | str):
            return parse_bytes(value)
        raise ValueError("memory must be bytes or a string such as '2Gi'")


MAX_SELECTOR_LABELS = 16
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_NAME})?$")
LABEL_RULE = ("labels are key=value with Kubernetes' syntax: a key such as 'nubis.io/pool' or 'zone', "
              "a value of at most 63 letters, digits, '-', '_' or '.'")


def check_node_selector(selector: dict[str, str]) -> dict[str, str]:
    """Node labels a workload must land on (``--node-label nubis.io/pool=a100``)."""
    if len(selector) > MAX_SELECTOR_LABELS:
        raise ValueError(f"at most {MAX_SELECTOR_LABELS} node labels, got {len(selector)}")
    bad = sorted(f"{k}={v}" for k, v in selector.items()
                 if not _LABEL_KEY.match(k) or not _LABEL_VALUE.match(v))
    if bad:
        raise ValueError(f"node labels {bad!r} are not valid: {LABEL_RULE}")
    return selector


def parse_node_labels(pairs: list[str]) -> dict[str, str]:
    """``["nubis.io/pool=a100"]`` → ``{"nubis.io/pool": "a100"}`` (the CLI's ``--node-label``)."""
    selector: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--node-label {pair!r}: use key=value, e.g. nubis.io/pool=a100")
        selector[key.strip()] = value.strip()
    return check_node_selector(selector)


NodeSelector = Annotated[dict[str, str], AfterValidator(check_node_selector)]
"""Node labels every replica's or worker's node must have (key → value)."""

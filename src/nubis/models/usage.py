"""Usage on the wire: resource-seconds per workspace, deployment or job (and day), a price table
that turns them into a cost, and each workspace's quota beside what it holds now."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from nubis.errors import ValidationError
from nubis.models.durations import read_duration

HOUR_S = 3600.0
MAX_SINCE = timedelta(days=3660)


class UsageBy(StrEnum):
    workspace = "workspace"
    deployment = "deployment"
    job = "job"


class UsageKind(StrEnum):
    """What held the resources: a deployment's replica or a job's worker."""

    replica = "replica"
    job = "job"


class Prices(BaseModel):
    """What one hour of each resource costs (one currency, the caller's): a price table file is this
    as JSON, e.g. ``{"cpu_hour": 0.04, "memory_gib_hour": 0.005, "gpu_hour": 1.2}``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    cpu_hour: float = Field(default=0.0, ge=0, description="one CPU core for one hour")
    memory_gib_hour: float = Field(default=0.0, ge=0, description="one GiB of memory for one hour")
    gpu_hour: float = Field(default=0.0, ge=0, description="one GPU for one hour")

    def cost(self, *, cpu_seconds: float, memory_gib_seconds: float, gpu_seconds: float) -> float:
        return (cpu_seconds * self.cpu_hour + memory_gib_seconds * self.memory_gib_hour
                + gpu_seconds * self.gpu_hour) / HOUR_S


def given_prices(*, cpu_hour: float | None, memory_gib_hour: float | None,
                 gpu_hour: float | None) -> dict[str, float]:
    """The prices a caller gave (a query's optional parameters), by field name."""
    return {k: v for k, v in (("cpu_hour", cpu_hour), ("memory_gib_hour", memory_gib_hour),
                              ("gpu_hour", gpu_hour)) if v is not None}


class UsageRow(BaseModel):
    """One group's resource-seconds in the window: requested resources × the time they were held."""

    workspace: str
    kind: UsageKind | None = None
    """Set when grouped by deployment (``replica``) or job (``job``)."""
    name: str | None = None
    """The deployment's or job's name (None when grouped by workspace)."""
    day: date | None = None
    """The UTC day (only with ``daily``)."""
    cpu_seconds: float = 0.0
    memory_gib_seconds: float = 0.0
    gpu_seconds: float = 0.0
    cost: float | None = None
    """With a price table only."""


class Held(BaseModel):
    """Resources held now (the requests of what runs)."""

    cpu: float = 0.0
    memory: int = 0
    """bytes"""
    gpu: int = 0


class QuotaUse(BaseModel):
    """A workspace's job quota (None: none) beside what its running jobs and replicas hold now
    (the quota limits its jobs; replicas are shown for the whole picture)."""

    workspace: str
    cpu_quota: float | None
    memory_quota: int | None
    gpu_quota: int | None
    jobs: Held = Field(default_factory=Held)
    replicas: Held = Field(default_factory=Held)


class Usage(BaseModel):
    since: datetime
    until: datetime
    """The end of the window: the time of the answer (a running workload counts up to it)."""
    by: UsageBy
    daily: bool
    rows: list[UsageRow]
    total: UsageRow
    quotas: list[QuotaUse]


def parse_since(value: str, *, now: datetime) -> datetime:
    """``30d``, ``12h``, ``2w``, ``90m``, ``45s`` back from ``now``, or an ISO-8601 time (UTC when it
    names no zone)."""
    details = [{"field": "since", "value": value}]
    text = value.strip()
    # a bare number is no duration here: 20261101 is a date (ISO-8601's basic form)
    seconds = None if text.replace(".", "", 1).isdigit() else read_duration(text)
    try:
        if seconds is not None:
            at = now - timedelta(seconds=seconds)
        else:
            parsed = datetime.fromisoformat(text)
            at = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except ValueError:
        raise ValidationError(
            f"since {value!r} is neither a duration (a number and s, m, h, d or w: '1h', '30d', '2w') "
            "nor an ISO-8601 time ('2026-11-01' or '2026-11-01T08:00:00Z')", details=details) from None
    except OverflowError:
        raise ValidationError(f"since {value!r} is out of range: at most {MAX_SINCE.days} days back",
                              details=details) from None
    if at > now:
        raise ValidationError(f"since {value!r} is in the future", details=details)
    if now - at > MAX_SINCE:
        raise ValidationError(f"since {value!r} is too far back: at most {MAX_SINCE.days} days",
                              details=details)
    return at

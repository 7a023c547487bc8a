"""A deployment's traffic over time, from the gateways' load reports: requests, 5xx, latency."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class MetricPoint(BaseModel):
    """One step: rates over the step, latency percentiles of the requests finished in it."""

    at: datetime = Field(description="the start of the step")
    requests_per_s: float
    errors_per_s: float = Field(description="5xx answers per second")
    error_rate: float | None = Field(description="5xx / requests in the step (None: no requests)")
    p50_ms: float | None = Field(description="median latency, from the gateway's histogram buckets")
    p95_ms: float | None


class MetricHistory(BaseModel):
    deployment: str
    since_s: float
    step_s: float
    points: list[MetricPoint]

"""Prometheus HTTP service discovery on the wire: ``[{"targets": ["host:port"], "labels": {...}}]``
(https://prometheus.io/docs/prometheus/latest/http_sd/)."""

from __future__ import annotations

from pydantic import BaseModel, Field

REPLICA_METRICS_PATH = "/-/replicas/{replica_id}/metrics"
"""On the gateway: a replica's own /metrics (replicas answer only their gateway)."""


class TargetGroup(BaseModel):
    targets: list[str] = Field(description="host:port to scrape")
    labels: dict[str, str] = Field(description="labels of every series scraped from these targets; "
                                               "__metrics_path__ is the path to scrape")

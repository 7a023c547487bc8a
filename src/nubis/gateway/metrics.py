"""The gateway's Prometheus metrics, in a registry of its own, bound per deployment once."""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, generate_latest

from nubis.metrics_registry import TEXT_FORMAT, new_registry

CONTENT_TYPE = TEXT_FORMAT
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class DeploymentMetrics:
    """Children of the gateway's metrics for one deployment (no label lookups per request)."""

    def __init__(self, metrics: GatewayMetrics, labels: tuple[str, str]) -> None:
        self._metrics = metrics
        self._labels = labels
        self._by_status: dict[int, Any] = {}
        self.latency = metrics.latency.labels(*labels)
        self.in_flight = metrics.in_flight.labels(*labels)
        self.queued = metrics.queued.labels(*labels)
        self.retries = metrics.retries.labels(*labels)

    def observe(self, status: int, seconds: float) -> None:
        counter = self._by_status.get(status)
        if counter is None:
            counter = self._metrics.requests.labels(*self._labels, str(status))
            self._by_status[status] = counter
        counter.inc()
        self.latency.observe(seconds)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = new_registry()
        labels = ("workspace", "deployment")
        self.requests = Counter(
            "nubis_gateway_requests", "Requests answered, by deployment and HTTP status",
            [*labels, "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "nubis_gateway_request_seconds", "Time from request to the last response byte",
            labels, buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.in_flight = Gauge(
            "nubis_gateway_in_flight", "Requests being served by a replica", labels,
            registry=self.registry,
        )
        self.queued = Gauge(
            "nubis_gateway_queued", "Requests held waiting for a ready replica", labels,
            registry=self.registry,
        )
        self.retries = Counter(
            "nubis_gateway_upstream_retries", "Requests sent again after a refused connection",
            labels, registry=self.registry,
        )
        self.unrouted = Counter(
            "nubis_gateway_unrouted_requests", "Requests for no known deployment, by status",
            ["status"], registry=self.registry,
        )

    def for_deployment(self, workspace: str, name: str) -> DeploymentMetrics:
        return DeploymentMetrics(self, (workspace, name))

    def forget(self, workspace: str, name: str) -> None:
        """Drop a deployment that left the routing table from every gauge (counters stay)."""
        for gauge in (self.in_flight, self.queued):
            with contextlib.suppress(KeyError):
                gauge.remove(workspace, name)

    def render(self) -> bytes:
        return generate_latest(self.registry)

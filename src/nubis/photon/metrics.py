"""Prometheus metrics of one photon process (one registry per app, so tests never collide)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from nubis.metrics_registry import TEXT_FORMAT, new_registry

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

CONTENT_TYPE = TEXT_FORMAT


class PhotonMetrics:
    def __init__(self) -> None:
        self.registry = new_registry()
        self.requests = Counter(
            "nubis_photon_requests_total",
            "Requests served, by handler and HTTP status",
            ["handler", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nubis_photon_request_duration_seconds",
            "Time from request received to response started, by handler",
            ["handler"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "nubis_photon_in_flight_requests",
            "Requests being handled now, by handler",
            ["handler"],
            registry=self.registry,
        )
        self.errors = Counter(
            "nubis_photon_errors_total",
            "Failed requests, by handler and error code",
            ["handler", "code"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "nubis_photon_batch_size",
            "Items per call of a batched handler",
            ["handler"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )

    def add_source(self, collectors: Callable[[], Iterable[Collector]]) -> None:
        """Serve what ``collectors()`` yields at each scrape too (the photon's own metrics)."""
        self.registry.register(_Source(collectors))

    def for_handler(self, name: str) -> HandlerMetrics:
        return HandlerMetrics(self, name)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HandlerMetrics:
    """Label children bound once per handler: the request path does no label look-ups."""

    def __init__(self, metrics: PhotonMetrics, name: str) -> None:
        self._metrics = metrics
        self._name = name
        self.latency = metrics.latency.labels(name)
        self.in_flight = metrics.in_flight.labels(name)
        self._by_status: dict[int, Counter] = {}

    def done(self, status: int, seconds: float) -> None:
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self._metrics.requests.labels(self._name, str(status))
        child.inc()
        self.latency.observe(seconds)

    def batch_sizes(self) -> Histogram:
        """The batch-size histogram of this handler (bound only for batched handlers)."""
        return self._metrics.batch_size.labels(self._name)

    def error(self, code: str) -> None:
        self._metrics.errors.labels(self._name, code).inc()


class _Source:
    """Collectors asked for at scrape time (none before init()); never described, so never
    collected at registration."""

    def __init__(self, collectors: Callable[[], Iterable[Collector]]) -> None:
        self.collectors = collectors

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors():
            yield from collector.collect()

"""The control plane's Prometheus metrics, in a registry of its own per app (``ServerContext.metrics``).

API requests are counted by route template (``/api/v1/jobs/{ref}``), never by raw path: no ids or
names in labels. Reconciler rounds are timed where their loops run. The job queue, replicas and job
workers are read from the database at each scrape (``services/metrics.py``), so they are right even
just after a restart.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nubis.metrics_registry import new_registry
from nubis.models.deployments import ReplicaStatus
from nubis.models.jobs import WorkerStatus

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
ROUND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
RECONCILERS = ("deployments", "jobs")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route of a request no route matched (its path is never a label)


@dataclass(frozen=True)
class PlatformCounts:
    """What the database holds at scrape time."""

    queued: Mapping[tuple[str, str], int]  # (workspace, reason) → queued jobs
    replicas: Mapping[str, int]  # status → replicas
    workers: Mapping[str, int]  # status → workers of unfinished jobs (their current attempt)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = new_registry()
        route = ["method", "route"]
        self.requests = Counter(
            "nubis_api_requests_total", "API requests answered, by method, route template and HTTP status",
            [*route, "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "nubis_api_request_duration_seconds",
            "Time from request received to response started, by method and route template",
            route, buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.round_seconds = Histogram(
            "nubis_reconciler_round_duration_seconds", "Time one reconciler round took, by reconciler",
            ["reconciler"], buckets=ROUND_BUCKETS, registry=self.registry,
        )
        self.round_errors = Counter(
            "nubis_reconciler_round_errors_total",
            "Reconciler rounds that failed (logged, retried next round), by reconciler",
            ["reconciler"], registry=self.registry,
        )
        self.queued = Gauge(
            "nubis_jobs_queued", "Queued jobs, by workspace and why they wait (no series: none queued)",
            ["workspace", "reason"], registry=self.registry,
        )
        self.replicas = Gauge(
            "nubis_replicas", "Deployment replicas, by status", ["status"], registry=self.registry,
        )
        self.workers = Gauge(
            "nubis_job_workers", "Workers of unfinished jobs (their current attempt), by status",
            ["status"], registry=self.registry,
        )
        for name in RECONCILERS:  # every series from the start, at zero
            self.round_seconds.labels(name)
            self.round_errors.labels(name)

    @contextlib.contextmanager
    def reconciler_round(self, reconciler: str) -> Iterator[None]:
        """Times one round; a round that raises is counted as an error (the loop logs it)."""
        started = time.perf_counter()
        try:
            yield
        except Exception:
            self.round_errors.labels(reconciler).inc()
            raise
        finally:
            self.round_seconds.labels(reconciler).observe(time.perf_counter() - started)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "other"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self, counts: PlatformCounts) -> bytes:
        """The text exposition, with the gauges set from ``counts`` (no await in between: two
        scrapes at once never mix their counts)."""
        self.queued.clear()
        for (workspace, reason), n in counts.queued.items():
            self.queued.labels(workspace, reason).set(n)
        _set_by_status(self.replicas, ReplicaStatus, counts.replicas)
        _set_by_status(self.workers, WorkerStatus, counts.workers)
        return generate_latest(self.registry)


def _set_by_status(gauge: Gauge, statuses: Iterable[str], found: Mapping[str, int]) -> None:
    """Every known status gets a series (zero when none), so a status emptied reads 0, not absent."""
    gauge.clear()
    for status in sorted({*statuses, *found}):
        gauge.labels(status).set(found.get(status, 0))


class RequestMetrics:
    """Pure ASGI middleware: every HTTP request counted by method, route template and status, and
    timed to the start of its response (a followed log stream is not a slow request)."""

    def __init__(self, app: ASGIApp, *, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, took = 500, None  # an exception before the response: the outer middleware answers 500

        async def timed_send(message: Message) -> None:
            nonlocal status, took
            if message["type"] == "http.response.start":
                status, took = message["status"], time.perf_counter() - started
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            seconds = took if took is not None else time.perf_counter() - started
            self.metrics.observe_request(scope["method"], route, status, seconds)

"""Where the routing table comes from (a URL polled, or a file watched), and where load goes.

Both loops run forever in the gateway's event loop. A source that is down or answers garbage
never empties the table: the gateway keeps serving from the last good one and logs the problem
once (and once more when the source recovers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pydantic

from nubis.gateway.routing import Router
from nubis.models.routes import DeploymentLoad, LoadReport, RoutingTable

log = logging.getLogger("nubis.gateway")


STARTUP_GRACE_S = 15.0


@dataclass
class _Trouble:
    """Log a failing source once, not every poll, and say when it works again.

    Until the source first works, and for at most ``grace`` s from the start, failures are only
    debug lines: the gateway starts before the control plane answers, and that is no trouble.
    """

    what: str
    grace: float = STARTUP_GRACE_S
    failing: str | None = None
    started: float = field(default_factory=time.monotonic)
    worked: bool = False

    def failed(self, reason: str, *, now: float | None = None) -> None:
        elapsed = (time.monotonic() if now is None else now) - self.started
        if not self.worked and elapsed < self.grace:
            log.debug("%s: %s (starting: %.0f s of %.0f s grace)", self.what, reason, elapsed, self.grace)
            return
        if self.failing != reason:
            log.warning("%s: %s (serving from the last good routing table)", self.what, reason)
        self.failing = reason

    def ok(self) -> None:
        if self.failing is not None:
            log.info("%s: working again", self.what)
        self.failing = None
        self.worked = True


def parse_table(data: bytes) -> RoutingTable:
    """Raises ``pydantic.ValidationError`` (a ``ValueError``) on anything but a valid table."""
    return RoutingTable.model_validate_json(data)


def apply_if_new(router: Router, table: RoutingTable) -> bool:
    """Apply ``table`` unless it has the version being served. Any other version is taken, not
    only a higher one, so that a control plane restored from a backup cannot wedge the gateway."""
    if table.version == router.version:
        return False
    router.apply(table)
    log.info("routing table version %d: %d deployments", table.version, len(table.deployments))
    return True


@dataclass
class FileSource:
    """A JSON file (written atomically by whoever feeds it), re-read when its mtime changes."""

    path: Path
    interval: float = 0.25
    startup_grace: float = STARTUP_GRACE_S
    _seen: tuple[int, int] | None = field(default=None, init=False)
    _trouble: _Trouble = field(init=False)

    def __post_init__(self) -> None:
        self._trouble = _Trouble(f"routes file {self.path}", self.startup_grace)

    def poll(self, router: Router) -> None:
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp == self._seen:
                return
            table = parse_table(self.path.read_bytes())
        except OSError as exc:
            self._trouble.failed(exc.strerror or type(exc).__name__)
            return
        except pydantic.ValidationError as exc:
            self._trouble.failed(f"not a routing table: {_first_error(exc)}")
            self._seen = stamp
            return
        self._seen = stamp
        self._trouble.ok()
        apply_if_new(router, table)

    async def run(self, router: Router) -> None:
        while True:
            self.poll(router)
            await asyncio.sleep(self.interval)


@dataclass
class URLSource:
    """``GET url`` with a bearer token every ``interval`` s; ``ETag``/``If-None-Match`` aware."""

    url: str
    token: str | None = None
    interval: float = 1.0
    startup_grace: float = STARTUP_GRACE_S
    _etag: str | None = field(default=None, init=False)
    _trouble: _Trouble = field(init=False)

    def __post_init__(self) -> None:
        self._trouble = _Trouble(f"routes URL {self.url}", self.startup_grace)

    async def poll(self, session: aiohttp.ClientSession, router: Router) -> None:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self._etag and router.version is not None:
            headers["If-None-Match"] = self._etag
        try:
            async with session.get(
                self.url, headers=headers, timeout=aiohttp.ClientTimeout(total=5)
            ) as resp:
                if resp.status == 304:
                    self._trouble.ok()
                    return
                if resp.status != 200:
                    self._trouble.failed(f"HTTP {resp.status}")
                    return
                data = await resp.read()
                etag = resp.headers.get("ETag")
            table = parse_table(data)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._trouble.failed(f"unreachable ({type(exc).__name__})")
            return
        except pydantic.ValidationError as exc:
            self._trouble.failed(f"not a routing table: {_first_error(exc)}")
            return
        self._etag = etag
        self._trouble.ok()
        apply_if_new(router, table)

    async def run(self, session: aiohttp.ClientSession, router: Router) -> None:
        while True:
            await self.poll(session, router)
            await asyncio.sleep(self.interval)


def load_report(router: Router, *, gateway_id: str, now: datetime) -> LoadReport:
    """Per deployment: in flight, held (queued) and finished since the previous report."""
    loads = []
    for dep in router.live():
        requests, errors, latency_counts = dep.take_counts()
        loads.append(DeploymentLoad(
            workspace=dep.route.workspace, name=dep.route.name, in_flight=dep.in_flight, queued=dep.queued,
            requests=requests, errors=errors, latency_counts=latency_counts,
        ))
        dep.metrics.in_flight.set(dep.in_flight)
        dep.metrics.queued.set(dep.queued)
    return LoadReport(gateway_id=gateway_id, at=now, routes_version=router.version,
                      deployments=loads)


@dataclass
class LoadReporter:
    """Every ``interval`` s, compute the load and (if ``url``) ``POST`` it there as JSON."""

    url: str | None
    token: str | None = None
    gateway_id: str = "gateway"
    interval: float = 1.0
    startup_grace: float = STARTUP_GRACE_S
    _trouble: _Trouble = field(init=False)

    def __post_init__(self) -> None:
        self._trouble = _Trouble(f"load report URL {self.url}", self.startup_grace)

    async def report(self, session: aiohttp.ClientSession, router: Router) -> None:
        report = load_report(router, gateway_id=self.gateway_id, now=datetime.now(UTC))
        if not self.url:
            return
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            async with session.post(
                self.url, data=report.model_dump_json(), headers=headers,
                timeout=aiohttp.ClientTimeout(total=5),
            ) as resp:
                if resp.status >= 300:
                    self._trouble.failed(f"HTTP {resp.status}")
                    return
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._trouble.failed(f"unreachable ({type(exc).__name__})")
            return
        self._trouble.ok()

    async def run(self, session: aiohttp.ClientSession, router: Router) -> None:
        while True:
            await asyncio.sleep(self.interval)
            with contextlib.suppress(Exception):
                await self.report(session, router)


def _first_error(exc: pydantic.ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "body"
    return f"{where}: {err.get('msg', '')}"

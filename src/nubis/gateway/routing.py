"""Live routing state: deployments, their replicas' outstanding requests, picking, holding.

Pure and synchronous except :meth:`Deployment.wait_ready`; one instance per gateway process,
touched only from its event loop (no locks). Applying a new :class:`RoutingTable` keeps the
counters of replicas and deployments that are still listed.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import aiohttp

from nubis.gateway.metrics import DeploymentMetrics, GatewayMetrics
from nubis.models.routes import REPORT_LATENCY_BOUNDS_S, DeploymentRoute, ReplicaRoute, RoutingTable

CONNECT_TIMEOUT_S = 10.0
FAILED_BACKOFF_S = 2.0  # after a refused connection, other replicas go first for this long
REPLACEMENT_WAIT_S = 5.0  # longest wait for a table with new replicas once all refused


@dataclass(eq=False)
class Replica:
    replica_id: str
    endpoint: str
    ready: bool
    key: str | None = field(default=None, repr=False)  # sent as X-Nubis-Replica-Key
    outstanding: int = 0
    failed_until: float = 0.0


@dataclass(eq=False)
class Deployment:
    """One deployment's config (from the table) and live counters (from the traffic)."""

    route: DeploymentRoute
    metrics: DeploymentMetrics
    replicas: list[Replica] = field(default_factory=list)
    ready: list[Replica] = field(default_factory=list)
    token_hashes: frozenset[str] = frozenset()
    token_expiry: dict[str, float] = field(default_factory=dict)  # sha256 hex → unix time
    queued: int = 0  # held for lack of a ready replica
    in_flight: int = 0  # sent to a replica, answer not finished
    finished: int = 0  # since the last load report
    errors: int = 0  # of those, 5xx
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(REPORT_LATENCY_BOUNDS_S) + 1))
    client_timeout: aiohttp.ClientTimeout = field(default_factory=aiohttp.ClientTimeout)
    _turn: int = 0
    _changed: asyncio.Event | None = None

    @property
    def label(self) -> str:
        return f"{self.route.workspace}/{self.route.name}"

    def count(self, status: int, seconds: float) -> None:
        """One finished request, for the next load report (the console's charts, alert rules)."""
        self.finished += 1
        self.errors += status >= 500
        self.latency_counts[bisect.bisect_left(REPORT_LATENCY_BOUNDS_S, seconds)] += 1
        self.metrics.observe(status, seconds)

    def take_counts(self) -> tuple[int, int, list[int]]:
        """Requests, 5xx and latency counts since the previous call; they start again from zero."""
        counts = (self.finished, self.errors, self.latency_counts)
        self.finished, self.errors = 0, 0
        self.latency_counts = [0] * (len(REPORT_LATENCY_BOUNDS_S) + 1)
        return counts

    def update(self, route: DeploymentRoute) -> None:
        old = {r.replica_id: r for r in self.replicas}
        self.route = route
        self.token_hashes = frozenset(route.token_hashes)
        self.token_expiry = {h: at.timestamp() for h, at in route.token_expires_at.items()}
        self.client_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=min(route.timeout_s, CONNECT_TIMEOUT_S), sock_read=route.timeout_s
        )
        self.replicas = [_merge(old.get(r.replica_id), r) for r in route.replicas]
        self.ready = [r for r in self.replicas if r.ready]
        if self.ready and self._changed is not None:
            self._changed.set()
            self._changed = None

    def allows(self, authorization: bytes | None, *, now: float) -> bool:
        """Public, or ``Bearer <token>`` whose sha256 is listed and not expired at ``now`` (unix
        time: an expired token stops working here even when no newer table arrives)."""
        if self.route.access == "public":
            return True
        if not authorization or authorization[:7].lower() != b"bearer ":
            return False
        digest = hashlib.sha256(authorization[7:].strip()).hexdigest()
        if digest not in self.token_hashes:
            return False
        expires = self.token_expiry.get(digest)
        return expires is None or now < expires

    def pick(self, tried: Iterable[Replica] = (), *, now: float) -> Replica | None:
        """The ready replica with the fewest outstanding requests, ties taken in turn; replicas
        that refused a connection lately go last, ones in ``tried`` not at all."""
        ready = self.ready
        count = len(ready)
        if count == 0:
            return None
        if count == 1:
            only = ready[0]
            return None if only in tried else only
        start = self._turn % count
        self._turn += 1
        best: Replica | None = None
        best_rank: tuple[bool, int] | None = None
        for i in range(count):
            replica = ready[(start + i) % count]
            if replica in tried:
                continue
            rank = (replica.failed_until > now, replica.outstanding)
            if best_rank is None or rank < best_rank:
                best, best_rank = replica, rank
        return best

    async def wait_update(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the next table that gives this deployment ready replicas
        (after every known replica refused: a replacement is usually one table away)."""
        if self._changed is None:
            self._changed = asyncio.Event()
        changed = self._changed
        self.queued += 1
        try:
            async with asyncio.timeout(timeout):
                await changed.wait()
        except TimeoutError:
            return False
        finally:
            self.queued -= 1
        return bool(self.ready)

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a table that gives this deployment a ready replica."""
        deadline = time.monotonic() + timeout
        self.queued += 1
        try:
            while not self.ready:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if self._changed is None:
                    self._changed = asyncio.Event()
                try:
                    async with asyncio.timeout(left):
                        await self._changed.wait()
                except TimeoutError:
                    return bool(self.ready)
            return True
        finally:
            self.queued -= 1


def _merge(old: Replica | None, route: ReplicaRoute) -> Replica:
    if old is None or old.endpoint != route.endpoint or old.key != route.key:
        return Replica(route.replica_id, route.endpoint, route.ready, route.key)
    old.ready = route.ready
    return old


class Router:
    """The deployments of the current table, by (workspace, name)."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics
        self.version: int | None = None
        self.deployments: dict[tuple[str, str], Deployment] = {}
        self.llms: dict[str, dict[str, Deployment]] = {}  # workspace → model id → LLM deployment
        self.workspaces: dict[str, list[Deployment]] = {}  # workspace → its deployments
        self._gone: list[Deployment] = []
        self._applied: asyncio.Event | None = None

    def get(self, workspace: str, name: str) -> Deployment | None:
        return self.deployments.get((workspace, name))

    def llm(self, workspace: str, model: str) -> Deployment | None:
        """The LLM deployment of ``workspace`` that answers to ``model`` (the request's field)."""
        return self.llms.get(workspace, {}).get(model)

    def in_workspace(self, workspace: str) -> list[Deployment]:
        return self.workspaces.get(workspace, [])

    def apply(self, table: RoutingTable) -> None:
        """Switch to ``table``. Held requests of a deployment that left the table get 404-like
        treatment by the proxy once their hold ends (they see no ready replica)."""
        current = self.deployments
        fresh: dict[tuple[str, str], Deployment] = {}
        for route in table.deployments:
            dep = current.get(route.key)
            if dep is None:
                dep = Deployment(route, self.metrics.for_deployment(route.workspace, route.name))
            dep.update(route)
            fresh[route.key] = dep
        for key, dep in current.items():
            if key not in fresh:
                dep.update(dep.route.model_copy(update={"replicas": []}))
                if dep.in_flight or dep.queued:
                    self._gone.append(dep)
                else:
                    self.metrics.forget(*key)
        self.deployments = fresh
        self.llms, self.workspaces = {}, {}
        for (workspace, _), dep in sorted(fresh.items()):
            self.workspaces.setdefault(workspace, []).append(dep)
            if dep.route.llm_model is not None:  # two with one id: the first by name answers
                self.llms.setdefault(workspace, {}).setdefault(dep.route.llm_model, dep)
        self.version = table.version
        if self._applied is not None:
            self._applied.set()
            self._applied = None

    async def wait_table(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the next table; False if none came."""
        if timeout <= 0:
            return False
        if self._applied is None:
            self._applied = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                await self._applied.wait()
        except TimeoutError:
            return False
        return True

    def live(self) -> list[Deployment]:
        """Listed deployments, and unlisted ones that still have requests (for load reports)."""
        still = []
        for dep in self._gone:
            if dep.in_flight or dep.queued:
                still.append(dep)
            elif dep.route.key not in self.deployments:  # not listed again meanwhile
                self.metrics.forget(*dep.route.key)
        self._gone = still
        return [*self.deployments.values(), *self._gone]


def split_path(raw_path: bytes) -> tuple[str, str, bytes] | None:
    """``/<workspace>/<deployment>/<rest>`` → (workspace, deployment, ``/<rest>``), raw bytes kept
    for the rest so that percent-encoding reaches the replica unchanged."""
    if not raw_path.startswith(b"/"):
        return None
    parts = raw_path.split(b"/", 3)
    if len(parts) < 3 or not parts[1] or not parts[2]:
        return None
    try:
        workspace, name = parts[1].decode("ascii"), parts[2].decode("ascii")
    except UnicodeDecodeError:
        return None
    rest = b"/" + parts[3] if len(parts) == 4 else b"/"
    return workspace, name, rest

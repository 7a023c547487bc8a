"""What the gateway reads (the routing table) and writes (load reports).

The table is built from the database on request: ready replicas of every deployment, and the
sha256 of every live token of its workspace for private ones. Load reports are kept in memory
(a short window per deployment) for the autoscaler; they are soft state a restart may lose.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.models.deployments import DeploymentSpec, ReplicaStatus
from nubis.models.routes import DeploymentRoute, LoadReport, ReplicaRoute, RoutingTable
from nubis.server.orm import DeploymentRow, ReplicaRow, TokenRow, WorkspaceRow

WINDOW_S = 600.0

LLM_TIMEOUT_S = 600.0
"""How long the gateway waits for an LLM replica's next bytes (a queued request's first token)."""
LLM_HOLD_S = 300.0
"""How long a request to an LLM deployment with no ready replica (from zero) waits for one: loading
a model takes longer than a photon's start (SmolLM2 on the transformers engine: 25 s on a quiet
2-core machine, a minute under load), and the 30 s of other deployments would answer 503 first."""


@dataclass
class DeploymentLoadBook:
    samples: deque[tuple[float, float]] = field(default_factory=deque)
    queued: int = 0
    last_traffic_at: float | None = None


class LoadBook:
    """Per (workspace, deployment): recent in-flight samples, queued demand, last traffic."""

    def __init__(self) -> None:
        self._books: dict[tuple[str, str], DeploymentLoadBook] = {}

    def record(self, report: LoadReport, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for load in report.deployments:
            book = self._books.setdefault((load.workspace, load.name), DeploymentLoadBook())
            book.samples.append((now, float(load.in_flight + load.queued)))
            book.queued = load.queued
            if load.in_flight or load.queued or load.requests:
                book.last_traffic_at = now
            while book.samples and book.samples[0][0] < now - WINDOW_S:
                book.samples.popleft()

    def get(self, workspace: str, name: str) -> DeploymentLoadBook:
        return self._books.get((workspace, name), DeploymentLoadBook())


def replica_key(replica: ReplicaRow) -> str | None:
    """The key the backend gave the replica (its handle's ``ref``), if it has one."""
    ref = (replica.handle or {}).get("ref") or {}
    return ref.get("replica_key") or None


async def routing_table(session: AsyncSession) -> RoutingTable:
    rows = (
        await session.execute(
            select(DeploymentRow, WorkspaceRow.name)
            .join(WorkspaceRow, WorkspaceRow.id == DeploymentRow.workspace_id)
            .where(DeploymentRow.deleting.is_(False))
        )
    ).all()
    replicas = (
        await session.scalars(
            select(ReplicaRow).where(ReplicaRow.status.in_([ReplicaStatus.ready, ReplicaStatus.draining]))
        )
    ).all()
    by_deployment: dict[str, list[ReplicaRow]] = {}
    for replica in replicas:
        by_deployment.setdefault(replica.deployment_id, []).append(replica)
    now = datetime.now(UTC)
    tokens = (
        await session.execute(
            select(TokenRow.workspace_id, TokenRow.hash, TokenRow.deployment, TokenRow.expires_at).where(
                TokenRow.revoked_at.is_(None),
                or_(TokenRow.expires_at.is_(None), TokenRow.expires_at > now),
            )
        )
    ).all()
    hashes: dict[str, list[str]] = {}  # workspace tokens: every deployment of the workspace
    scoped: dict[tuple[str, str], list[str]] = {}  # deployment-scoped tokens: that one only
    expiry: dict[str, datetime] = {}  # the gateway enforces these even without a new table
    for workspace_id, digest, deployment, expires_at in tokens:
        if expires_at is not None:
            expiry[digest] = expires_at
        if deployment is None:
            hashes.setdefault(workspace_id, []).append(digest)
        else:
            scoped.setdefault((workspace_id, deployment), []).append(digest)
    routes = []
    for row, workspace in rows:
        spec = DeploymentSpec.model_validate(row.spec)
        allowed = sorted(hashes.get(row.workspace_id, []) + scoped.get((row.workspace_id, row.name), []))
        routes.append(
            DeploymentRoute(
                workspace=workspace,
                name=row.name,
                access=spec.access,
                token_hashes=allowed,
                token_expires_at={h: expiry[h] for h in allowed if h in expiry},
                replicas=[
                    ReplicaRoute(replica_id=r.id, endpoint=r.endpoint, key=replica_key(r),
                                 ready=r.status == ReplicaStatus.ready)
                    for r in by_deployment.get(row.id, [])
                    if r.endpoint
                ],
                min_replicas=spec.autoscaling.min_replicas,
                max_replicas=spec.autoscaling.max_replicas,
                llm_model=spec.llm.model if spec.llm is not None else None,
                # a request queued behind others at an LLM replica sends nothing until its turn
                **({"timeout_s": LLM_TIMEOUT_S, "hold_s": LLM_HOLD_S} if spec.llm is not None else {}),
            )
        )
    digest = hashlib.sha256("".join(r.model_dump_json() for r in routes).encode()).digest()
    version = int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
    return RoutingTable(version=version, deployments=routes)

"""The one writer of a replica's status: checks the transition, records the reason, an event and
the replica's usage interval (opened at its launch, closed when its process is gone)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from nubis.models.deployments import ReplicaStatus
from nubis.server.orm import ReplicaRow, utcnow
from nubis.server.scheduler.replicas import check_replica_transition
from nubis.server.services import usage
from nubis.server.services.deployments import event


def switch_replica_status(
    session: AsyncSession, replica: ReplicaRow, new: ReplicaStatus, reason: str | None = None
) -> None:
    old = ReplicaStatus(replica.status)
    if old == new and replica.reason == reason:
        return
    check_replica_transition(old, new)
    replica.status = new.value
    replica.reason = reason[:2048] if reason else None
    replica.updated_at = utcnow()
    message = f"{old.value} → {new.value}" + (f": {reason}" if reason else "")
    event(session, replica.deployment_id, "replica", message, replica_id=replica.id)
    usage.replica_moved(session, replica, old, new)

"""The audit trail: who changed what, when. Recorded in the same transaction as the change."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.models.workspaces import AuditEvent
from nubis.server.deps import Caller
from nubis.server.orm import AuditEventRow


def record(
    session: AsyncSession,
    caller: Caller,
    action: str,
    target: str,
    details: dict[str, Any] | None = None,
    *,
    workspace_id: str | None = None,
) -> None:
    session.add(
        AuditEventRow(
            workspace_id=workspace_id or caller.workspace_id,
            actor=caller.actor,
            action=action,
            target=target[:1024],
            details=details,
        )
    )


def _listed(caller: Caller, action: str | None) -> Select[tuple[AuditEventRow]]:
    query = select(AuditEventRow).where(AuditEventRow.workspace_id == caller.workspace_id)
    if action:
        query = query.where(AuditEventRow.action == action)
    return query


async def list_events(
    session: AsyncSession, caller: Caller, *, limit: int = 100, action: str | None = None, offset: int = 0
) -> list[AuditEvent]:
    """The newest first; ``offset``: how many to skip (pages)."""
    query = _listed(caller, action).order_by(AuditEventRow.id.desc()).limit(limit).offset(offset)
    rows = (await session.scalars(query)).all()
    return [
        AuditEvent(
            id=r.id, workspace=caller.workspace, actor=r.actor, action=r.action, target=r.target,
            details=r.details, at=r.at,
        )
        for r in rows
    ]


async def count_events(session: AsyncSession, caller: Caller, *, action: str | None = None) -> int:
    """How many events :func:`list_events` pages through with the same filter."""
    return await session.scalar(_listed(caller, action).with_only_columns(func.count())) or 0

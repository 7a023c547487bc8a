"""Workspaces: the unit of tenancy. Only the platform admin creates and deletes them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.errors import ConflictError, ForbiddenError, IsolationUnavailableError, NotFoundError
from nubis.models.workspaces import QuotaRequest, Workspace, WorkspaceCreateRequest
from nubis.server.deps import Caller
from nubis.server.orm import WorkspaceRow
from nubis.server.services import audit
from nubis.storage import ObjectStore

DEFAULT_WORKSPACE = "default"


def to_model(row: WorkspaceRow) -> Workspace:
    return Workspace(
        id=row.id, name=row.name, storage_quota_bytes=row.storage_quota_bytes,
        cpu_quota=row.cpu_quota, memory_quota=row.memory_quota, gpu_quota=row.gpu_quota,
        created_at=row.created_at,
    )


async def get_by_name(session: AsyncSession, name: str) -> WorkspaceRow | None:
    return await session.scalar(select(WorkspaceRow).where(WorkspaceRow.name == name))


async def get_visible_or_raise(session: AsyncSession, caller: Caller, name: str) -> WorkspaceRow:
    """A workspace the caller may see; 404 (never 403) for any other, so names cannot be probed."""
    row = await get_by_name(session, name)
    if row is None or (not caller.superuser and row.id != caller.workspace_id):
        raise NotFoundError(f"workspace {name!r} not found")
    return row


async def create(session: AsyncSession, caller: Caller, request: WorkspaceCreateRequest, *,
                 contained: bool = True) -> Workspace:
    if not contained:
        raise IsolationUnavailableError(
            "workloads cannot be sandboxed on this machine, so a second workspace would not be kept "
            "apart from the first; restart with 'nubis up --trust-members' to allow it anyway "
            "(see docs/security.md)")
    if await get_by_name(session, request.name) is not None:
        raise ConflictError(f"workspace {request.name!r} already exists")
    row = WorkspaceRow(name=request.name, storage_quota_bytes=request.storage_quota_bytes)
    session.add(row)
    await session.flush()
    audit.record(session, caller, "workspace.create", request.name)
    await session.commit()
    return to_model(row)


async def list_visible(session: AsyncSession, caller: Caller) -> list[Workspace]:
    query = select(WorkspaceRow).order_by(WorkspaceRow.name)
    if not caller.superuser:
        query = query.where(WorkspaceRow.id == caller.workspace_id)
    return [to_model(r) for r in (await session.scalars(query)).all()]


async def delete(session: AsyncSession, caller: Caller, store: ObjectStore, name: str) -> None:
    row = await get_visible_or_raise(session, caller, name)
    if row.name == DEFAULT_WORKSPACE:
        raise ForbiddenError("the default workspace cannot be deleted")
    if row.id == caller.workspace_id:
        raise ConflictError("a token cannot delete its own workspace")
    await session.delete(row)
    audit.record(session, caller, "workspace.delete", name)
    await session.commit()
    store.drop_workspace(name)


async def set_quota(
    session: AsyncSession, caller: Caller, name: str, request: QuotaRequest
) -> Workspace:
    """Change the quotas the request names (storage, and CPU/memory/GPU for jobs)."""
    row = await get_visible_or_raise(session, caller, name)
    changes = request.model_dump(include=request.model_fields_set)
    for field, value in changes.items():
        setattr(row, field, value)
    audit.record(session, caller, "workspace.quota", name, changes, workspace_id=row.id)
    await session.commit()
    return to_model(row)

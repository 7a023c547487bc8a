"""/api/v1/workspaces"""

from __future__ import annotations

from fastapi import APIRouter

from nubis.models.workspaces import QuotaRequest, Workspace, WorkspaceCreateRequest
from nubis.server.deps import Context, Reader, Session, Superuser
from nubis.server.services import workspaces

router = APIRouter(prefix="/api/v1/workspaces", tags=["workspaces"])


@router.post("", status_code=201)
async def create_workspace(request: WorkspaceCreateRequest, caller: Superuser, session: Session,
                           ctx: Context) -> Workspace:
    return await workspaces.create(session, caller, request, contained=ctx.members_contained)


@router.get("")
async def list_workspaces(caller: Reader, session: Session) -> list[Workspace]:
    return await workspaces.list_visible(session, caller)


@router.get("/{name}")
async def get_workspace(name: str, caller: Reader, session: Session) -> Workspace:
    return workspaces.to_model(await workspaces.get_visible_or_raise(session, caller, name))


@router.patch("/{name}")
async def set_quota(name: str, request: QuotaRequest, caller: Superuser, session: Session) -> Workspace:
    return await workspaces.set_quota(session, caller, name, request)


@router.delete("/{name}", status_code=204)
async def delete_workspace(name: str, caller: Superuser, session: Session, ctx: Context) -> None:
    await workspaces.delete(session, caller, ctx.store, name)

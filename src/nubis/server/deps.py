"""FastAPI dependencies: the session, the caller (token → workspace + role), permissions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.errors import ForbiddenError, NotFoundError, UnauthorizedError
from nubis.models.auth import ROLE_PERMISSIONS, Permission, Role
from nubis.server.context import ServerContext
from nubis.server.orm import TokenRow, WorkspaceRow
from nubis.server.security import hash_token

WORKSPACE_HEADER = "X-Nubis-Workspace"


@dataclass(frozen=True)
class Caller:
    token_id: str
    token_name: str
    role: Role
    superuser: bool
    workspace_id: str
    workspace: str

    @property
    def actor(self) -> str:
        return f"{self.token_name} ({self.token_id[:8]})"

    def can(self, permission: Permission) -> bool:
        return self.superuser or permission in ROLE_PERMISSIONS[self.role]


def get_context(request: Request) -> ServerContext:
    return request.app.state.ctx


Context = Annotated[ServerContext, Depends(get_context)]


async def get_session(ctx: Context) -> AsyncIterator[AsyncSession]:
    async with ctx.db.sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(get_session)]


async def get_caller(
    session: Session,
    authorization: Annotated[str | None, Header()] = None,
    x_nubis_workspace: Annotated[str | None, Header()] = None,
) -> Caller:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise UnauthorizedError("missing token: send 'Authorization: Bearer <token>'")
    found = (await session.execute(
        select(TokenRow, WorkspaceRow)
        .join(WorkspaceRow, WorkspaceRow.id == TokenRow.workspace_id)
        .where(TokenRow.hash == hash_token(token.strip()))
    )).first()
    if found is None:
        raise UnauthorizedError("unknown token")
    return await caller_of(session, found[0], found[1], x_nubis_workspace)


async def caller_of(
    session: AsyncSession, row: TokenRow, home: WorkspaceRow, workspace_name: str | None
) -> Caller:
    """The caller a stored token makes (the console's sessions keep the token's id, not its secret):
    refused once revoked or expired; the platform admin token may act in another workspace."""
    if row.revoked_at is not None:
        raise UnauthorizedError("this token was revoked; ask an admin for a new one")
    if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
        raise UnauthorizedError("this token has expired; ask an admin for a new one")
    if row.deployment is not None:
        raise ForbiddenError(f"this token only calls deployment {row.deployment!r} through the gateway; "
                             "use a workspace token for the API")
    workspace: WorkspaceRow | None = home
    if workspace_name and workspace_name != home.name:
        workspace = None
        if row.superuser:
            workspace = await session.scalar(
                select(WorkspaceRow).where(WorkspaceRow.name == workspace_name)
            )
    if workspace is None:
        raise NotFoundError(f"workspace {workspace_name!r} not found")
    return Caller(
        token_id=row.id,
        token_name=row.name,
        role=Role(row.role),
        superuser=row.superuser,
        workspace_id=workspace.id,
        workspace=workspace.name,
    )


def require(permission: Permission) -> object:
    async def check(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
        if not caller.can(permission):
            raise ForbiddenError(
                f"a {caller.role.value} token cannot {permission.value} in workspace "
                f"{caller.workspace!r}; ask an admin for a token with more rights"
            )
        return caller

    return Depends(check)


async def _superuser(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    if not caller.superuser:
        raise ForbiddenError("only the platform admin token can manage workspaces")
    return caller


Reader = Annotated[Caller, require(Permission.read)]
Writer = Annotated[Caller, require(Permission.write)]
Admin = Annotated[Caller, require(Permission.manage)]
Superuser = Annotated[Caller, Depends(_superuser)]

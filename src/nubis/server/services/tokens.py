"""Tokens: random, shown once, stored hashed; they expire and can be revoked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.errors import (
    BadRequestError,
    ForbiddenError,
    IsolationUnavailableError,
    NotFoundError,
    ValidationError,
)
from nubis.models.auth import ROLE_PERMISSIONS, CreatedToken, Role, Token, TokenCreateRequest, WhoAmI
from nubis.server.deps import Caller
from nubis.server.orm import ConsoleSessionRow, DeploymentRow, TokenRow, WorkspaceRow
from nubis.server.security import generate_token, hash_token
from nubis.server.services import audit, workspaces

ADMIN_TOKEN_NAME = "admin"
MIN_ID_PREFIX = 4


def to_model(row: TokenRow, workspace: str) -> Token:
    return Token(
        id=row.id, name=row.name, workspace=workspace, role=Role(row.role), superuser=row.superuser,
        prefix=row.prefix, created_at=row.created_at, expires_at=row.expires_at,
        revoked_at=row.revoked_at, deployment=row.deployment,
    )


def new_row(workspace_id: str, name: str, role: Role, *, superuser: bool = False,
            expires_at: datetime | None = None, created_by: str | None = None) -> tuple[TokenRow, str]:
    secret = generate_token()
    row = TokenRow(
        workspace_id=workspace_id, name=name, role=role.value, superuser=superuser,
        hash=hash_token(secret), prefix=secret[:10], expires_at=expires_at, created_by=created_by,
    )
    return row, secret


async def create(session: AsyncSession, caller: Caller, request: TokenCreateRequest, *,
                 contained: bool = True) -> CreatedToken:
    if not contained and request.role != Role.admin and request.deployment is None:
        raise IsolationUnavailableError(
            f"workloads cannot be sandboxed on this machine, so a {request.role.value} token could do "
            "what an admin does; restart with 'nubis up --trust-members' to allow it anyway "
            "(see docs/security.md)")
    target = caller.workspace
    workspace_id = caller.workspace_id
    if request.workspace and request.workspace != caller.workspace:
        row = await workspaces.get_visible_or_raise(session, caller, request.workspace)
        target, workspace_id = row.name, row.id
    if not caller.superuser and not ROLE_PERMISSIONS[request.role] <= ROLE_PERMISSIONS[caller.role]:
        raise ForbiddenError(f"a {caller.role.value} token cannot create a {request.role.value} token")
    expires_at = None
    if request.expires_in_seconds:
        expires_at = datetime.now(UTC) + timedelta(seconds=request.expires_in_seconds)
    row, secret = new_row(workspace_id, request.name, request.role, expires_at=expires_at,
                          created_by=caller.token_id)
    if request.deployment is not None:
        await _check_deployment(session, workspace_id, target, request.deployment)
        row.deployment = request.deployment
    session.add(row)
    await session.flush()
    audit.record(session, caller, "token.create", f"{request.name} ({row.id[:8]})",
                 {"role": request.role.value}, workspace_id=workspace_id)
    await session.commit()
    return CreatedToken(**to_model(row, target).model_dump(), token=secret)


async def list_tokens(session: AsyncSession, caller: Caller) -> list[Token]:
    rows = (await session.scalars(
        select(TokenRow).where(TokenRow.workspace_id == caller.workspace_id)
        .order_by(TokenRow.created_at)
    )).all()
    return [to_model(r, caller.workspace) for r in rows]


async def console_last_seen(session: AsyncSession, caller: Caller) -> dict[str, datetime]:
    """Token id → the last time a live console session of it was seen (to the minute). The only
    use of a token the platform records: API calls are not; a session ends at logout."""
    rows = (await session.execute(
        select(ConsoleSessionRow.token_id, func.max(ConsoleSessionRow.last_seen_at))
        .join(TokenRow, TokenRow.id == ConsoleSessionRow.token_id)
        .where(TokenRow.workspace_id == caller.workspace_id)
        .group_by(ConsoleSessionRow.token_id)
    )).all()
    return {token_id: seen for token_id, seen in rows}


async def get_by_ref_or_raise(session: AsyncSession, caller: Caller, ref: str) -> TokenRow:
    """A token of the caller's workspace by its id, the start of its id (``nubis token list`` shows
    8 characters; at least 4) or its secret's prefix (``nbs_…``); a start that fits several is refused."""
    matches = or_(TokenRow.id == ref, TokenRow.prefix == ref)
    if len(ref) >= MIN_ID_PREFIX:
        matches = or_(matches, TokenRow.id.startswith(ref, autoescape=True))
    rows = (await session.scalars(
        select(TokenRow).where(TokenRow.workspace_id == caller.workspace_id, matches)
        .order_by(TokenRow.created_at)
    )).all()
    exact = [r for r in rows if ref in (r.id, r.prefix)]
    found = exact or rows
    if not found:
        raise NotFoundError(f"token {ref!r} not found in workspace {caller.workspace!r}")
    if len(found) > 1:
        ids = ", ".join(f"{r.id[:12]} ({r.name})" for r in found)
        raise BadRequestError(f"{ref!r} fits {len(found)} tokens: {ids}; give more of the id",
                              details={"matches": [r.id for r in found]})
    return found[0]


async def revoke(session: AsyncSession, caller: Caller, ref: str) -> Token:
    row = await get_by_ref_or_raise(session, caller, ref)
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        audit.record(session, caller, "token.revoke", f"{row.name} ({row.id[:8]})")
        await session.commit()
    return to_model(row, caller.workspace)


async def _check_deployment(session: AsyncSession, workspace_id: str, workspace: str, name: str) -> None:
    exists = await session.scalar(select(DeploymentRow.id).where(
        DeploymentRow.workspace_id == workspace_id, DeploymentRow.name == name))
    if exists is None:
        raise ValidationError(f"deployment {name!r} does not exist in workspace {workspace!r}: "
                              "a scoped token names one of its deployments")


def whoami(caller: Caller) -> WhoAmI:
    return WhoAmI(token_id=caller.token_id, token_name=caller.token_name, workspace=caller.workspace,
                  role=caller.role, superuser=caller.superuser)


async def bootstrap(session: AsyncSession, *, new_admin_token: bool = False) -> str | None:
    """First start: the default workspace and the platform admin token (returned once).

    ``new_admin_token`` issues another one even if one exists (its file was lost).
    """
    workspace = await workspaces.get_by_name(session, workspaces.DEFAULT_WORKSPACE)
    if workspace is None:
        workspace = WorkspaceRow(name=workspaces.DEFAULT_WORKSPACE)
        session.add(workspace)
        await session.flush()
    has_admin = await session.scalar(
        select(func.count()).select_from(TokenRow).where(
            TokenRow.superuser.is_(True), TokenRow.revoked_at.is_(None)
        )
    )
    if has_admin and not new_admin_token:
        await session.commit()
        return None
    row, secret = new_row(workspace.id, ADMIN_TOKEN_NAME, Role.admin, superuser=True)
    session.add(row)
    await session.commit()
    return secret

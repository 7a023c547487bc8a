"""/api/v1/whoami, /api/v1/tokens, /api/v1/audit."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from nubis.models.auth import CreatedToken, Token, TokenCreateRequest, WhoAmI
from nubis.models.workspaces import AuditEvent
from nubis.server.deps import Admin, Context, Reader, Session
from nubis.server.services import audit, tokens

router = APIRouter(prefix="/api/v1", tags=["auth"])


@router.get("/whoami")
async def whoami(caller: Reader) -> WhoAmI:
    return tokens.whoami(caller)


@router.post("/tokens", status_code=201)
async def create_token(request: TokenCreateRequest, caller: Admin, session: Session,
                       ctx: Context) -> CreatedToken:
    return await tokens.create(session, caller, request, contained=ctx.members_contained)


@router.get("/tokens")
async def list_tokens(caller: Admin, session: Session) -> list[Token]:
    return await tokens.list_tokens(session, caller)


@router.delete("/tokens/{token_id}")
async def revoke_token(token_id: str, caller: Admin, session: Session) -> Token:
    """``token_id``: the token's id, a unique start of it (at least 4 characters), or its prefix."""
    return await tokens.revoke(session, caller, token_id)


@router.get("/audit")
async def list_audit(
    caller: Admin,
    session: Session,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    action: str | None = None,
) -> list[AuditEvent]:
    return await audit.list_events(session, caller, limit=limit, action=action)

"""/api/v1/secrets — set, list (names and dates), delete. No route returns a value."""

from __future__ import annotations

from fastapi import APIRouter

from nubis.models.secrets import Secret, SecretSetRequest
from nubis.server.deps import Context, Reader, Session, Writer
from nubis.server.services import secrets

router = APIRouter(prefix="/api/v1/secrets", tags=["secrets"])


@router.put("/{name}")
async def set_secret(
    name: str, request: SecretSetRequest, caller: Writer, session: Session, ctx: Context
) -> Secret:
    """Create or replace a secret. The value is stored encrypted and never shown again."""
    return await secrets.set_secret(session, caller, ctx.box, name, request.value)


@router.get("")
async def list_secrets(caller: Reader, session: Session) -> list[Secret]:
    """Names and dates of the workspace's secrets, never their values."""
    return await secrets.list_secrets(session, caller)


@router.delete("/{name}", status_code=204)
async def delete_secret(name: str, caller: Writer, session: Session) -> None:
    await secrets.delete(session, caller, name)

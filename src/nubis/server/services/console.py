"""Console sessions and one-time login links. A session is made from a token and keeps the token's
id: it ends when the token is revoked or expires, when it expires itself, or at logout. Cookie
secrets and link codes are random and stored only as sha256 digests."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.errors import UnauthorizedError
from nubis.models.console import ConsoleLink
from nubis.server.deps import Caller, caller_of
from nubis.server.orm import ConsoleLinkRow, ConsoleSessionRow, TokenRow, WorkspaceRow
from nubis.server.security import SecretBox

SESSION_TTL = timedelta(hours=12)
LINK_TTL = timedelta(seconds=60)
SEEN_EVERY = timedelta(seconds=60)
"""``last_seen_at`` is written at most this often (not on every page and fragment)."""


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class ConsoleSession:
    """A live session: who is behind it (as the API would see them), its CSRF token, and the token
    itself (for calls through the gateway: the playground and the chat)."""

    id: str
    caller: Caller
    csrf: str
    token: str


async def open_session(session: AsyncSession, box: SecretBox, token_id: str, token: str, *,
                       now: datetime) -> str:
    """A new session for a token (already checked); returns the cookie's secret (shown once).
    Expired sessions of anyone are removed on the way."""
    await session.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.expires_at <= now))
    secret = secrets.token_urlsafe(32)
    row_id = digest(secret)
    nonce, sealed = box.encrypt(token.encode(), row_id.encode())
    session.add(ConsoleSessionRow(id=row_id, token_id=token_id, csrf=secrets.token_urlsafe(32),
                                  token_nonce=nonce, token_box=sealed,
                                  created_at=now, expires_at=now + SESSION_TTL, last_seen_at=now))
    await session.commit()
    return secret


def _unseal(box: SecretBox, row_id: str, nonce: bytes | None, sealed: bytes | None) -> str:
    if nonce is None or sealed is None:
        raise UnauthorizedError("this console session keeps no token: log in again")
    return box.decrypt(nonce, sealed, row_id.encode()).decode()


async def get_session_or_raise(session: AsyncSession, box: SecretBox, secret: str, *,
                               now: datetime) -> ConsoleSession:
    """The live session of a cookie; ``UnauthorizedError`` when there is none (never was, logged out,
    expired, or its token was revoked or has expired: then the session row goes too)."""
    found = (await session.execute(
        select(ConsoleSessionRow, TokenRow, WorkspaceRow)
        .join(TokenRow, TokenRow.id == ConsoleSessionRow.token_id)
        .join(WorkspaceRow, WorkspaceRow.id == TokenRow.workspace_id)
        .where(ConsoleSessionRow.id == digest(secret))
    )).first()
    if found is None:
        raise UnauthorizedError("no console session: log in with a token")
    row, token, home = found
    if row.expires_at <= now:
        await close_session(session, secret)
        raise UnauthorizedError("the console session has expired: log in again")
    try:
        caller = await caller_of(session, token, home, row.workspace)
    except UnauthorizedError:
        await close_session(session, secret)
        raise
    if now - row.last_seen_at >= SEEN_EVERY:
        row.last_seen_at = now
        await session.commit()
    return ConsoleSession(id=row.id, caller=caller, csrf=row.csrf,
                          token=_unseal(box, row.id, row.token_nonce, row.token_box))


async def switch_workspace(session: AsyncSession, secret: str, workspace: str | None) -> None:
    """The platform admin's session acts in ``workspace`` from now on (None: its token's own)."""
    row = await session.get(ConsoleSessionRow, digest(secret))
    if row is not None:
        row.workspace = workspace
        await session.commit()


async def close_session(session: AsyncSession, secret: str) -> None:
    await session.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.id == digest(secret)))
    await session.commit()


async def create_link(session: AsyncSession, box: SecretBox, caller: Caller, token: str, *,
                      now: datetime) -> ConsoleLink:
    """A one-time login link for the caller's token, valid for ``LINK_TTL``."""
    code = secrets.token_urlsafe(32)
    expires_at = now + LINK_TTL
    nonce, sealed = box.encrypt(token.encode(), digest(code).encode())
    session.add(ConsoleLinkRow(id=digest(code), token_id=caller.token_id, token_nonce=nonce, token_box=sealed,
                               expires_at=expires_at))
    await session.commit()
    return ConsoleLink(path=f"/login/{code}", expires_at=expires_at)


async def redeem_link(session: AsyncSession, box: SecretBox, code: str, *, now: datetime) -> str:
    """Use a link once: the token it was made for. Unknown, used or expired → refused
    (one answer for all three); expired links of anyone are removed on the way."""
    row = await session.get(ConsoleLinkRow, digest(code))
    await session.execute(delete(ConsoleLinkRow).where(
        (ConsoleLinkRow.id == digest(code)) | (ConsoleLinkRow.expires_at <= now)))
    await session.commit()
    if row is None or row.expires_at <= now:
        raise UnauthorizedError("this console link is not valid: it was used already or is older than "
                                f"{int(LINK_TTL.total_seconds())} s; run 'nubis console' again")
    return _unseal(box, row.id, row.token_nonce, row.token_box)

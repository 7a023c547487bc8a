"""/api/v1/console/links: a one-time link that logs a browser in to the console (``nubis console``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header

from nubis.models.console import ConsoleLink
from nubis.server.deps import Context, Reader, Session
from nubis.server.services import console

router = APIRouter(prefix="/api/v1", tags=["console"])


@router.post("/console/links", status_code=201)
async def create_console_link(caller: Reader, session: Session, ctx: Context,
                              authorization: Annotated[str, Header()]) -> ConsoleLink:
    """Open `path` on this address within 60 s, once: the browser is logged in with this token."""
    token = authorization.partition(" ")[2].strip()
    return await console.create_link(session, ctx.box, caller, token, now=datetime.now(UTC))

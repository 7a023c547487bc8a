"""/tokens: the workspace's tokens (admins): create — the secret is shown once, on the answer to the
form, never stored in plaintext — and revoke. Everyone else sees the token they logged in with."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from nubis.models.auth import Role, TokenCreateRequest
from nubis.server.console.auth import Admin, Page
from nubis.server.console.forms import parse_form
from nubis.server.console.responses import ConsoleRoute
from nubis.server.console.templating import render
from nubis.server.deps import Context, Session
from nubis.server.services import tokens

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
ROLES = [r.value for r in Role]
DAY_S = 86400


@router.get("/tokens")
async def token_list(request: Request, page: Page, session: Session) -> HTMLResponse:
    found = await tokens.list_tokens(session, page.caller) if page.can_manage else []
    seen = await tokens.console_last_seen(session, page.caller) if page.can_manage else {}
    return render(request, "tokens.html", {"page": page, "tokens": found, "roles": ROLES, "seen": seen,
                                           "me": tokens.whoami(page.caller)})


@router.post("/tokens")
async def create_token(
    request: Request, page: Admin, session: Session, ctx: Context,
    name: Annotated[str, Form(max_length=100)],
    role: Annotated[str, Form(max_length=16)] = Role.member.value,
    expires_in_days: Annotated[str, Form(max_length=8)] = "",
) -> HTMLResponse:
    days = expires_in_days.strip()
    wanted = parse_form(TokenCreateRequest, {
        "name": name.strip(), "role": role,
        "expires_in_seconds": round(float(days) * DAY_S) if _number(days) else days or None})
    created = await tokens.create(session, page.caller, wanted, contained=ctx.members_contained)
    response = render(request, "token_created.html", {"page": page, "created": created}, status_code=201)
    response.headers["Cache-Control"] = "no-store"
    return response


def _number(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


@router.post("/tokens/{ref}/revoke")
async def revoke_token(ref: str, page: Admin, session: Session) -> Response:
    await tokens.revoke(session, page.caller, ref)
    return RedirectResponse("/tokens", status_code=303)

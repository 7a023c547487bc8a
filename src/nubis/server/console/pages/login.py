"""/login (a token, or a one-time link from ``nubis console``), /logout, and the platform admin's
workspace switch."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.errors import CSRFError, ForbiddenError, NotFoundError, NubisError
from nubis.server.console import auth
from nubis.server.console.responses import ConsoleRoute, safe_next
from nubis.server.console.templating import render
from nubis.server.deps import Context, Session, get_caller
from nubis.server.security import SecretBox
from nubis.server.services import console

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


def login_form(request: Request, *, next_path: str, error: NubisError | None = None,
               status_code: int = 200) -> HTMLResponse:
    nonce = request.cookies.get(auth.LOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = render(request, "login.html", {"page": None, "next": next_path, "error": error,
                                              "login_csrf": nonce}, status_code=status_code)
    response.set_cookie(auth.LOGIN_COOKIE, nonce, max_age=3600, path="/login", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return response


async def replace_session(request: Request, session: AsyncSession, box: SecretBox, token_id: str,
                          token: str) -> str:
    """A new session (never the one the browser came with: that one ends, if it was live)."""
    old = request.cookies.get(auth.COOKIE)
    if old:
        await console.close_session(session, old)
    return await console.open_session(session, box, token_id, token, now=datetime.now(UTC))


def logged_in(request: Request, secret: str, target: str) -> Response:
    response = RedirectResponse(safe_next(target), status_code=303)
    auth.set_session_cookie(request, response, secret)
    response.delete_cookie(auth.LOGIN_COOKIE, path="/login")
    return response


@router.get("/login")
async def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return login_form(request, next_path=safe_next(next))


@router.post("/login")
async def login(request: Request, session: Session, ctx: Context,
                token: Annotated[str, Form(max_length=512)] = "",
                csrf: Annotated[str, Form(max_length=128)] = "",
                next: Annotated[str, Form(max_length=2048)] = "/") -> Response:
    if not auth.same(csrf, request.cookies.get(auth.LOGIN_COOKIE, "")):
        error: NubisError = CSRFError("the login form expired: try again")
        return login_form(request, next_path=safe_next(next), error=error, status_code=error.http_status)
    try:
        caller = await get_caller(session, authorization=f"Bearer {token.strip()}")
    except NubisError as exc:
        return login_form(request, next_path=safe_next(next), error=exc, status_code=exc.http_status)
    secret = await replace_session(request, session, ctx.box, caller.token_id, token.strip())
    return logged_in(request, secret, next)


@router.get("/login/{code}")
async def login_with_link(request: Request, code: str, session: Session, ctx: Context) -> Response:
    """``nubis console``'s one-time link: a session for the token that asked for it."""
    try:
        token = await console.redeem_link(session, ctx.box, code, now=datetime.now(UTC))
        caller = await get_caller(session, authorization=f"Bearer {token}")
    except NubisError as exc:
        return login_form(request, next_path="/", error=exc, status_code=exc.http_status)
    secret = await replace_session(request, session, ctx.box, caller.token_id, token)
    return logged_in(request, secret, "/")


@router.post("/logout")
async def logout(request: Request, page: auth.Form, session: Session) -> Response:
    """Ends the session on the server (the old cookie no longer works) and clears the cookie."""
    await console.close_session(session, auth.session_secret(request))
    response = RedirectResponse("/login", status_code=303)
    auth.clear_session_cookie(request, response)
    return response


@router.post("/workspace")
async def switch_workspace(request: Request, page: auth.Form, session: Session,
                           workspace: Annotated[str, Form(max_length=63)],
                           next: Annotated[str, Form(max_length=2048)] = "/") -> Response:
    """The platform admin acts in another workspace (others only ever see their own)."""
    if not page.caller.superuser:
        raise ForbiddenError("only the platform admin token can switch workspaces")
    if workspace not in page.workspaces:
        raise NotFoundError(f"workspace {workspace!r} not found")
    await console.switch_workspace(session, auth.session_secret(request), workspace)
    return RedirectResponse(safe_next(next), status_code=303)

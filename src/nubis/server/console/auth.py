"""Who is behind a console request: the session cookie, the CSRF check on every write, roles.

Every page and fragment takes :data:`Page` (a live session whose token is still valid, else back
to the login page). Every POST takes :data:`Form` (plus the CSRF token: a hidden ``csrf`` field,
or the ``X-CSRF-Token`` header htmx sends from ``<body hx-headers>``), or :data:`Writer` /
:data:`Admin` which also check the role, as the API does: a forged POST from a viewer gets 403.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request, Response

from nubis.errors import CSRFError, ForbiddenError, UnauthorizedError
from nubis.models.auth import Permission
from nubis.server.context import ServerContext
from nubis.server.deps import Caller, Context, Session
from nubis.server.services import console, workspaces

COOKIE = "nubis_session"
LOGIN_COOKIE = "nubis_login"
"""Login form's double-submit CSRF cookie (there is no session yet to hold the token)."""
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class ConsolePage:
    """What a console page knows of its viewer."""

    caller: Caller
    csrf: str
    token: str = field(repr=False)
    workspaces: list[str] = field(default_factory=list)
    """Every workspace, for the platform admin's selector (empty for everyone else)."""

    @property
    def can_write(self) -> bool:
        return self.caller.can(Permission.write)

    @property
    def can_manage(self) -> bool:
        return self.caller.can(Permission.manage)


def session_secret(request: Request) -> str:
    secret = request.cookies.get(COOKIE)
    if not secret:
        raise UnauthorizedError("no console session: log in with a token")
    return secret


async def console_page(request: Request, session: Session, ctx: Context) -> ConsolePage:
    live = await console.get_session_or_raise(session, ctx.box, session_secret(request),
                                              now=datetime.now(UTC))
    names: list[str] = []
    if live.caller.superuser:
        names = [w.name for w in await workspaces.list_visible(session, live.caller)]
    return ConsolePage(caller=live.caller, csrf=live.csrf, token=live.token, workspaces=names)


Page = Annotated[ConsolePage, Depends(console_page)]


async def live_caller(ctx: ServerContext, request: Request) -> Caller:
    """For streams that outlive the request's session: the caller now, or ``UnauthorizedError``
    once the session or its token is gone (a stream checks again before each update)."""
    async with ctx.db.sessions() as session:
        live = await console.get_session_or_raise(session, ctx.box, session_secret(request),
                                                  now=datetime.now(UTC))
    return live.caller


def same(given: str | None, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(str(given).encode(), expected.encode())


async def checked_form(request: Request, page: Page) -> ConsolePage:
    given = request.headers.get(CSRF_HEADER)
    if not given and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        given = (await request.form()).get("csrf")  # type: ignore[assignment]
    if not same(given, page.csrf):
        raise CSRFError("this form is missing the console's CSRF token (or has an old one): "
                        "reload the page and try again")
    return page


Form = Annotated[ConsolePage, Depends(checked_form)]


def allowed(permission: Permission) -> object:
    async def check(page: Form) -> ConsolePage:
        if not page.caller.can(permission):
            raise ForbiddenError(f"a {page.caller.role.value} token cannot {permission.value} in workspace "
                                 f"{page.caller.workspace!r}; ask an admin for a token with more rights")
        return page

    return Depends(check)


Writer = Annotated[ConsolePage, allowed(Permission.write)]
Admin = Annotated[ConsolePage, allowed(Permission.manage)]


def set_session_cookie(request: Request, response: Response, secret: str) -> None:
    response.set_cookie(COOKIE, secret, max_age=int(console.SESSION_TTL.total_seconds()), path="/",
                        httponly=True, samesite="strict", secure=request.url.scheme == "https")


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")

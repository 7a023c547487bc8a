"""/secrets: names and dates only; set (the value goes in a password field and is never shown
again) and delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from nubis.server.console.auth import Page, Writer
from nubis.server.console.responses import ConsoleRoute
from nubis.server.console.templating import render
from nubis.server.deps import Context, Session
from nubis.server.services import secrets

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
MAX_VALUE = 64 * 1024


@router.get("/secrets")
async def secret_list(request: Request, page: Page, session: Session) -> HTMLResponse:
    return render(request, "secrets.html", {"page": page,
                                            "secrets": await secrets.list_secrets(session, page.caller)})


@router.post("/secrets")
async def set_secret(page: Writer, session: Session, ctx: Context,
                     name: Annotated[str, Form(max_length=128)],
                     value: Annotated[str, Form(max_length=MAX_VALUE)]) -> Response:
    await secrets.set_secret(session, page.caller, ctx.box, name.strip(), value)
    return RedirectResponse("/secrets", status_code=303)


@router.post("/secrets/{name}/delete")
async def delete_secret(name: str, page: Writer, session: Session) -> Response:
    await secrets.delete(session, page.caller, name)
    return RedirectResponse("/secrets", status_code=303)

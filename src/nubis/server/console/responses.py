"""How every console response leaves: security headers, errors as pages (never JSON), a missing
or dead session as a way back to the login page."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from nubis.errors import NubisError, UnauthorizedError, ValidationError
from nubis.server.console.templating import render_text

log = logging.getLogger("nubis.console")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


def secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def is_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of this site only (never ``//host`` or a URL)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


def to_login(request: Request) -> Response:
    if is_stream(request):
        return Response(status_code=204)  # an EventSource stops reconnecting on 204
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    login = "/login" if target == "/" else f"/login?next={quote(safe_next(target), safe='')}"
    if is_htmx(request):
        return Response(status_code=200, headers={"HX-Redirect": login})
    return RedirectResponse(login, status_code=303)


def error_page(request: Request, exc: NubisError) -> Response:
    """An error as HTML: a flash message for htmx requests (swapped into ``#flash``), else a page."""
    if is_htmx(request):
        html = render_text("partials/flash.html", kind="error", message=exc.message, code=exc.code)
        return HTMLResponse(html, status_code=exc.http_status,
                            headers={"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"})
    html = render_text("error.html", error=exc, nav=[], page=None, request=request)
    return HTMLResponse(html, status_code=exc.http_status)


def _invalid(exc: RequestValidationError) -> ValidationError:
    fields = ", ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'} ({e['msg']})"
                       for e in exc.errors())
    return ValidationError(f"invalid input: {fields}")


class ConsoleRoute(APIRoute):
    """A console route: its errors are HTML, its responses carry the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except UnauthorizedError:
                response = to_login(request)
            except NubisError as exc:
                response = error_page(request, exc)
            except RequestValidationError as exc:
                response = error_page(request, _invalid(exc))
            except Exception:
                log.exception("unexpected error on %s %s", request.method, request.url.path)
                response = error_page(request, NubisError("internal error: the server logged the details"))
            return secure(response)

        return route


class ConsoleStatic(StaticFiles):
    """The console's CSS, JS and vendored libraries, with the same headers as its pages."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "public, max-age=3600"
        return secure(response)

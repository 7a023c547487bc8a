"""``build_app``: compile a photon class into an ASGI app (FastAPI), the same locally and deployed."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from nubis._version import __version__
from nubis.errors import MethodNotAllowedError, NotFoundError, NotReadyError, UnauthorizedError
from nubis.models.photons import PhotonManifest
from nubis.openapi_docs import install_docs
from nubis.photon.metrics import CONTENT_TYPE, PhotonMetrics
from nubis.photon.photon import Photon
from nubis.photon.routes import JSON, HandlerRoute, error_response
from nubis.photon.runtime import REPLICA_KEY_HEADER, PhotonRuntime, PhotonState, ServeSettings

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
REF = "#/components/schemas/{model}"


def build_app(
    photon_cls: type[Photon],
    settings: ServeSettings | None = None,
    *,
    manifest: PhotonManifest | None = None,
) -> FastAPI:
    """The photon as an ASGI app. ``init()`` runs in the background once the app starts."""
    settings = settings or ServeSettings()
    runtime = PhotonRuntime(photon_cls, settings)
    metrics = PhotonMetrics()
    metrics.add_source(lambda: runtime.instance.collectors() if runtime.instance else ())
    routes = [
        HandlerRoute(spec, runtime, metrics.for_handler(name))
        for name, spec in photon_cls.handlers.items()
    ]
    manifest = manifest or PhotonManifest(
        name=photon_cls.photon_name(),
        entrypoint=f"{photon_cls.__module__}:{photon_cls.__qualname__}",
        handlers=photon_cls.handler_infos(),
        requirements=list(photon_cls.requirements),
        resources=photon_cls.resources,
        nubis_version=__version__,
        python_version=sys.version.split()[0],
    )
    manifest_body = manifest.model_dump_json().encode()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for route in routes:
            route.start()
        init_task = asyncio.create_task(runtime.start())
        try:
            yield
        finally:
            runtime.state = PhotonState.stopping
            if not init_task.done():
                init_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await init_task
            for route in routes:
                await route.stop()
            await runtime.stop()

    app = FastAPI(
        title=f"{manifest.name} (nubis photon)",
        version=__version__,
        description=photon_cls.__doc__ or "",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_docs(app)
    app.state.runtime = runtime
    app.state.metrics = metrics
    app.state.manifest = manifest

    @app.get("/healthz", tags=["system"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "state": runtime.state.value}

    @app.get("/readyz", tags=["system"], summary="init() has finished: handlers can be called")
    async def readyz() -> Response:
        if runtime.state is PhotonState.ready:
            return Response(b'{"status":"ready"}', media_type=JSON)
        return error_response(NotReadyError(f"photon is {runtime.state.value}"))

    @app.get("/metrics", tags=["system"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/_nubis/manifest", tags=["system"], summary="Handlers and their schemas")
    async def get_manifest() -> Response:
        return Response(manifest_body, media_type=JSON)

    for route in routes:
        app.add_route(route.spec.path, route.handle, methods=[route.spec.options.method])

    paths = sorted({r.spec.path for r in routes})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            return error_response(
                MethodNotAllowedError(f"{request.method} is not allowed on {request.url.path}")
            )
        if exc.status_code == 404:
            served = ", ".join(paths) or "(no handlers)"
            return error_response(
                NotFoundError(f"no handler at {request.url.path}; this photon serves: {served}")
            )
        return Response(str(exc.detail), status_code=exc.status_code)

    app.openapi = lambda: _openapi(app, routes)  # type: ignore[method-assign]
    if settings.token:
        app.add_middleware(TokenMiddleware, token=settings.token)  # type: ignore[arg-type]
    if settings.replica_key:  # outermost: checked before anything else
        app.add_middleware(ReplicaKeyMiddleware, key=settings.replica_key)  # type: ignore[arg-type]
    return app


Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class TokenMiddleware:
    """Bearer-token check on every path but health (pure ASGI: no cost per body chunk)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = b""
        for key, value in scope["headers"]:
            if key == b"authorization":
                given = value
                break
        if not hmac.compare_digest(given, self.expected):
            err = UnauthorizedError(
                "missing or wrong token: send 'Authorization: Bearer <token>'"
            )
            await error_response(err)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class ReplicaKeyMiddleware:
    """A replica answers only its gateway: every path but health needs ``X-Nubis-Replica-Key``
    (compared in constant time), and the header is removed before the photon sees the request."""

    HEADER = REPLICA_KEY_HEADER.encode()

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.expected = key.encode()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = b""
        headers = []
        for key, value in scope["headers"]:
            if key == self.HEADER:
                given = value
            else:
                headers.append((key, value))
        if not hmac.compare_digest(given, self.expected):
            err = UnauthorizedError(
                "this replica answers only its gateway: call the deployment through the gateway",
                details={"header": REPLICA_KEY_HEADER},
            )
            await error_response(err)(scope, receive, send)
            return
        scope["headers"] = headers
        await self.app(scope, receive, send)


def _openapi(app: FastAPI, routes: list[HandlerRoute]) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = _ERROR_SCHEMA
    error_ref = {"$ref": "#/components/schemas/Error"}
    errors = {
        str(status): {"description": text, "content": {JSON: {"schema": error_ref}}}
        for status, text in (
            (422, "Wrong or missing fields"),
            (413, "Body too large"),
            (500, "The handler raised"),
            (503, "Not ready"),
            (504, "Timed out"),
        )
    }
    for route in routes:
        spec = route.spec
        req_name = spec.request_model.__name__
        req = spec.request_model.model_json_schema(ref_template=REF)
        components.update(req.pop("$defs", {}))
        components[req_name] = req
        resp = spec.response_adapter.json_schema(ref_template=REF, mode="serialization")
        components.update(resp.pop("$defs", {}))
        if spec.binary_response:
            ok = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
        elif spec.streaming:
            ok = {"text/event-stream": {"schema": {"type": "string"}, "x-item-schema": resp}}
        else:
            ok = {JSON: {"schema": resp}}
        operation: dict[str, Any] = {
            "operationId": spec.name,
            "summary": (spec.func.__doc__ or spec.name).strip().splitlines()[0],
            "tags": ["handlers"],
            "responses": {"200": {"description": "OK", "content": ok}, **errors},
        }
        ref = {"$ref": f"#/components/schemas/{req_name}"}
        if spec.options.method == "GET":
            operation["parameters"] = [
                {"name": n, "in": "query", "required": n in req.get("required", []), "schema": s}
                for n, s in req.get("properties", {}).items()
            ]
        else:
            content = {JSON: {"schema": ref}}
            if spec.file_params:
                content["multipart/form-data"] = {"schema": ref}
            operation["requestBody"] = {"required": True, "content": content}
        schema["paths"].setdefault(spec.path, {})[spec.options.method.lower()] = operation
    app.openapi_schema = schema
    return schema


_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {},
            },
        }
    },
}

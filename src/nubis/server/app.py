"""``create_app``: the control plane's FastAPI app. Errors are always {"error": {...}}."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from nubis._version import __version__
from nubis.backends.base import Backend, OrphansCapability
from nubis.backends.local import LocalBackend
from nubis.backends.nodes import NodeInfo
from nubis.backends.sandbox import Sandbox, harden_home
from nubis.errors import (
    BadRequestError,
    MethodNotAllowedError,
    NotFoundError,
    NubisError,
    ValidationError,
)
from nubis.home import write_private
from nubis.models.limits import MAX_JSON_BODY
from nubis.openapi_docs import install_docs
from nubis.server.backup.schedule import BackupSchedule
from nubis.server.body_limit import BodySizeLimit
from nubis.server.console import mount as mount_console
from nubis.server.context import ServerContext
from nubis.server.db import Database
from nubis.server.gateway_process import start_gateway, stop_gateway
from nubis.server.metrics import RequestMetrics
from nubis.server.reconcilers.alerts import AlertEvaluator
from nubis.server.reconcilers.deployments import DeploymentReconciler
from nubis.server.reconcilers.jobs import JobReconciler
from nubis.server.reconcilers.nodes import NodeWatcher
from nubis.server.routers import (
    alerts,
    auth,
    console,
    deployments,
    jobs,
    llm,
    metrics,
    models,
    nodes,
    photons,
    prometheus,
    secrets,
    storage,
    usage,
    workspaces,
)
from nubis.server.security import SecretBox, load_or_create_master_key
from nubis.server.services import tokens
from nubis.server.services.gateway import LoadBook
from nubis.server.services.metric_history import MetricStore
from nubis.server.services.nodes import known_workloads
from nubis.server.settings import ServerSettings
from nubis.storage import ObjectStore

log = logging.getLogger("nubis.server")
# Uploads that stream to disk with their own limits; every other body is JSON, 1 MiB at most.
STREAMED_UPLOADS = (("PUT", "/api/v1/storage/"), ("POST", "/api/v1/photons"), ("POST", "/storage/upload"))


def build_context(settings: ServerSettings) -> ServerContext:
    settings.home.mkdir(parents=True, exist_ok=True)
    state = settings.home / "backend"
    sandbox = Sandbox.off(state) if settings.trust_members else Sandbox.detect(state)
    ctx = ServerContext(
        settings=settings,
        db=Database(settings.database),
        box=SecretBox(load_or_create_master_key(settings.master_key_file)),
        store=ObjectStore.from_url(settings.storage),
        backend=make_backend(settings, state, sandbox),
        loads=LoadBook(),
        members_contained=sandbox.enabled or settings.trust_members,
        isolation=sandbox.describe(),
    )
    harden(settings)
    return ctx


def make_backend(settings: ServerSettings, state: Path, sandbox: Sandbox) -> Backend:
    """The local backend, or the Ray backend (``--backend ray``) once storage reaches every node."""
    if settings.backend == "local":
        return LocalBackend(state, sandbox=sandbox)
    from nubis.backends.ray_backend import RayBackend  # the optional extra: ray is heavy to import

    backend = RayBackend(state, address=settings.ray_address, storage=settings.storage)
    check_storage_reaches(settings, backend.nodes())
    return backend


def check_storage_reaches(settings: ServerSettings, nodes: list[NodeInfo]) -> None:
    """Workloads on several nodes read and write the workspace's storage: a folder on this machine
    is not there for the others (unless mounted at the same path everywhere: ``--shared-storage``)."""
    workers = [n for n in nodes if n.alive and n.total.cpu > 0]
    if settings.storage.startswith("s3://") or settings.shared_storage or len(workers) <= 1:
        return
    raise ValidationError(
        f"storage {settings.storage} is a folder on this machine, but the cluster has {len(workers)} nodes "
        "that run workloads: use S3 (--storage s3://bucket/prefix, e.g. MinIO), or --shared-storage if this "
        "folder is mounted at the same path on every node")


def harden(settings: ServerSettings) -> None:
    """State 0700/0600; only the folders on the way to workloads' own folders stay searchable."""
    storage = Path(settings.storage)
    open_dirs = [settings.home / "backend", settings.home / "cache", settings.home / "cache" / "photons"]
    if not settings.storage.startswith("s3://") and settings.home in storage.parents:
        open_dirs += [storage, storage / "workspaces"]
    harden_home(settings.home, open_dirs=open_dirs)
    for cache in (settings.home / "cache").iterdir():
        if cache.is_dir() and cache.name != "photons":
            cache.chmod(0o700)  # job code archives of every workspace: the control plane's only


async def collect_orphans(ctx: ServerContext) -> None:
    """Before the reconcilers start: workloads left on the backend that no row knows are removed."""
    if not isinstance(ctx.backend, OrphansCapability):
        return
    async with ctx.db.sessions() as session:
        known = await known_workloads(session)
    removed = await ctx.backend.collect_orphans(known)
    if removed:
        log.warning("removed %d workload(s) no deployment or job knows of (left by an earlier run)", removed)


async def prepare(ctx: ServerContext) -> None:
    """Apply migrations; on first start create the default workspace and the admin token file."""
    await ctx.db.migrate()
    token_file = ctx.settings.admin_token_file
    async with ctx.db.sessions() as session:
        token = await tokens.bootstrap(session, new_admin_token=not token_file.exists())
    if token is not None:
        write_private(token_file, (token + "\n").encode())
        log.info("admin token written to %s", token_file)


async def save_history(ctx: ServerContext) -> None:
    """The metric history for the next start (the gateway is stopped: nothing more comes in)."""
    try:
        size = await asyncio.to_thread(ctx.history.save, ctx.settings.metric_history_file, now=time.time())
    except OSError as e:
        log.warning("the metric history could not be saved (%s): the charts start empty next time", e)
    else:
        log.info("metric history saved (%d KiB)", size // 1024)


def create_app(ctx: ServerContext) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await prepare(ctx)
        harden(ctx.settings)  # the database file exists now
        await collect_orphans(ctx)
        ctx.history = await asyncio.to_thread(MetricStore.load, ctx.settings.metric_history_file,
                                              now=time.time())
        reconciler = DeploymentReconciler(ctx)
        job_reconciler = JobReconciler(ctx)
        task = asyncio.create_task(reconciler.run(), name="deployments")
        job_task = asyncio.create_task(job_reconciler.run(), name="jobs")
        node_task = asyncio.create_task(NodeWatcher(ctx).run(), name="nodes")
        evaluator = AlertEvaluator(ctx)
        alert_task = asyncio.create_task(evaluator.run(), name="alerts")
        backup_task = (asyncio.create_task(BackupSchedule(ctx.settings).run(), name="backups")
                       if ctx.settings.backup_every_s else None)
        gateway = None
        if ctx.settings.start_gateway:
            token = ctx.settings.admin_token_file.read_text().strip()
            gateway = await asyncio.to_thread(start_gateway, ctx.settings, token)
        try:
            yield
        finally:
            if gateway is not None:
                await asyncio.to_thread(stop_gateway, gateway, ctx.settings)
            for running in filter(None, (task, job_task, node_task, alert_task, backup_task)):
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
            await evaluator.shutdown()
            await job_reconciler.shutdown()
            await reconciler.shutdown()
            await save_history(ctx)
            await ctx.db.dispose()

    app = FastAPI(title="nubis", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="The nubis control plane. Every route but /healthz needs a token.")
    app.state.ctx = ctx
    install_docs(app)
    routers = (auth.router, workspaces.router, secrets.router, photons.router, storage.router,
               deployments.router, jobs.router, models.router, llm.router, nodes.router, metrics.router,
               prometheus.router, usage.router, alerts.router)
    for router in routers:
        app.include_router(router)
    app.include_router(console.router)
    mount_console(app)

    @app.get("/healthz", tags=["system"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    _install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_body=MAX_JSON_BODY, streamed=STREAMED_UPLOADS)
    app.add_middleware(RequestMetrics, metrics=ctx.metrics)  # outermost: 413s are counted too
    return app


def error_json(exc: NubisError) -> JSONResponse:
    return JSONResponse(exc.to_body(), status_code=exc.http_status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NubisError)
    async def nubis_error(request: Request, exc: NubisError) -> JSONResponse:
        return error_json(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"], "type": e["type"]}
            for e in exc.errors()
        ]
        fields = ", ".join(f"{d['field']} ({d['message']})" for d in details)
        return error_json(ValidationError(f"invalid request: {fields}", details=details))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 405:
            return error_json(MethodNotAllowedError(f"{request.method} is not allowed here"))
        if exc.status_code == 404:
            return error_json(NotFoundError(f"no route {request.url.path}; see /docs"))
        if exc.status_code == 400:
            return error_json(BadRequestError(_unreadable_body(exc)))
        err = NubisError(str(exc.detail))
        err.http_status = exc.status_code  # type: ignore[misc]
        return error_json(err)

    @app.exception_handler(ClientDisconnect)
    async def client_went_away(request: Request, exc: ClientDisconnect) -> JSONResponse:
        log.info("the client went away during %s %s", request.method, request.url.path)
        return error_json(BadRequestError("the client went away before the end of the request"))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_json(NubisError("internal error: the server logged the details"))


def _unreadable_body(exc: StarletteHTTPException) -> str:
    """FastAPI's "error parsing the body", said with its cause."""
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return "the request body is not UTF-8: send JSON encoded as UTF-8"
    if isinstance(cause, RecursionError):
        return "the JSON body is nested too deeply"
    if isinstance(cause, ClientDisconnect):
        return "the client went away before the end of the request"
    return str(exc.detail)

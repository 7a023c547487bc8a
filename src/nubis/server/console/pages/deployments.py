"""/deployments: the list (filters, pages, live), a deployment's page (replicas, events, logs that
follow, charts, playground) and its actions (scale, update, delete: writers only, CSRF-checked)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

import pydantic
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.errors import ForbiddenError, NotFoundError, NubisError, ValidationError
from nubis.models.deployments import Deployment, DeploymentUpdateRequest, split_photon_ref
from nubis.models.photons import HandlerInfo
from nubis.server.console import auth, live
from nubis.server.console.auth import Page, Writer, live_caller
from nubis.server.console.chat import ChatRequest, relay
from nubis.server.console.paging import Paged, clamp_page
from nubis.server.console.playground import call, playgrounds
from nubis.server.console.responses import ConsoleRoute, is_htmx
from nubis.server.console.templating import render, render_text
from nubis.server.context import ServerContext
from nubis.server.deps import Caller, Context, Session
from nubis.server.services import deployments, metric_history, photons

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
Status = Annotated[str, Query(max_length=32)]
Name = Annotated[str, Query(max_length=63)]
PageNumber = Annotated[int, Query(alias="page", ge=1, le=100_000)]
LOG_LINES = 100
EVENTS_SHOWN = 50


def filtered(found: list[Deployment], status: str, q: str) -> list[Deployment]:
    return [d for d in found if (not status or str(d.status) == status) and (not q or q in d.name)]


async def table(ctx: ServerContext, caller: Caller, *, status: str, q: str, page: int) -> tuple[str, Paged]:
    async with ctx.db.sessions() as session:
        found = filtered(await deployments.list_deployments(session, ctx, caller), status, q)
    paged = Paged(page=clamp_page(page, len(found)), total=len(found), filters={"status": status, "q": q})
    shown = found[paged.offset:paged.offset + paged.size]
    return render_text("partials/deployments_table.html", deployments=shown, pager=paged), paged


@router.get("/deployments")
async def deployment_list(request: Request, page: Page, ctx: Context, status: Status = "", q: Name = "",
                          p: PageNumber = 1) -> HTMLResponse:
    html, paged = await table(ctx, page.caller, status=status, q=q, page=p)
    return render(request, "deployments.html", {"page": page, "table": html, "pager": paged,
                                                "status": status, "q": q})


@router.get("/live/deployments")
async def deployment_list_live(request: Request, page: Page, ctx: Context, status: Status = "", q: Name = "",
                               p: PageNumber = 1) -> StreamingResponse:
    """The list's table again whenever it changes (a deployment created from the CLI appears)."""

    async def build(caller: Caller) -> str:
        return (await table(ctx, caller, status=status, q=q, page=p))[0]

    return live.stream(live.fragments(ctx, request, "table", build), ctx=ctx)


async def detail_parts(ctx: ServerContext, caller: Caller, name: str) -> tuple[Deployment, str]:
    async with ctx.db.sessions() as session:
        dep = await deployments.get(session, ctx, caller, name)
        events = await deployments.events(session, caller, name, limit=EVENTS_SHOWN)
    return dep, render_text("partials/deployment_state.html", dep=dep, events=events)


@router.get("/deployments/{name}")
async def deployment_page(request: Request, name: str, page: Page, session: Session,
                          ctx: Context) -> HTMLResponse:
    dep, state = await detail_parts(ctx, page.caller, name)
    try:
        lines = await deployments.logs(session, ctx, page.caller, name, tail=LOG_LINES)
    except ValidationError:
        lines = []
    try:
        handlers = await handlers_of(session, page.caller, dep)
    except NotFoundError:
        handlers = []  # its photon version was deleted: nothing to describe the handlers
    return render(request, "deployment.html", {
        "page": page, "dep": dep, "state": state, "lines": lines,
        "playgrounds": playgrounds(handlers, dep.endpoint, llm_model=dep.llm.model if dep.llm else None),
    })


async def handlers_of(session: AsyncSession, caller: Caller, dep: Deployment) -> list[HandlerInfo]:
    photon_name, version = split_photon_ref(dep.photon)
    return (await photons.get(session, caller, photon_name, str(version))).manifest.handlers


@router.get("/live/deployments/{name}")
async def deployment_live(request: Request, name: str, page: Page, session: Session,
                          ctx: Context) -> StreamingResponse:
    """Status, replicas and events again whenever they change."""
    await deployments.get_row_or_raise(session, page.caller, name)

    async def build(caller: Caller) -> str:
        return (await detail_parts(ctx, caller, name))[1]

    return live.stream(live.fragments(ctx, request, "state", build), ctx=ctx)


@router.get("/live/deployments/{name}/logs")
async def deployment_logs_live(request: Request, name: str, page: Page, session: Session,
                               ctx: Context) -> StreamingResponse:
    """New log lines of every replica as they are written (the page shows the lines before)."""
    row = await deployments.get_row_or_raise(session, page.caller, name)

    async def lines() -> AsyncIterator[str]:
        checked = time.monotonic()
        async for line in deployments.follow_logs(ctx, row.id, tail=0, seconds=None):
            if time.monotonic() - checked > live.POLL_S:
                try:
                    await live_caller(ctx, request)
                except NubisError:
                    return
                checked = time.monotonic()
            yield live.sse("line", render_text("partials/log_line.html", line=line))

    return live.stream(lines(), ctx=ctx)


@router.get("/deployments/{name}/metrics.json")
async def deployment_metrics(name: str, page: Page, session: Session, ctx: Context,
                             since: Annotated[str, Query(max_length=16)] = "1h") -> JSONResponse:
    """The charts' data: the same history as ``GET /api/v1/deployments/{name}/metrics``."""
    await deployments.get_row_or_raise(session, page.caller, name)
    history = metric_history.query(ctx.history, page.caller.workspace, name, since=since, step=None,
                                   now=time.time())
    return JSONResponse(history.model_dump(mode="json"))


@router.post("/deployments/{name}/call")
async def playground_call(request: Request, name: str, page: Page, session: Session, ctx: Context,
                          handler: Annotated[str, Form(max_length=512)],
                          body: Annotated[str, Form(max_length=1024 * 1024)] = "{}") -> HTMLResponse:
    """Call a handler through the gateway with the session's token (reading is enough, as for any
    client of the deployment; the deployment's own access rules apply at the gateway)."""
    dep = await deployments.get(session, ctx, page.caller, name)
    found = [h for h in await handlers_of(session, page.caller, dep) if h.path == handler]
    if not found:
        raise NotFoundError(f"deployment {name!r} has no handler {handler!r}")
    result = await call(found[0], f"{dep.endpoint}{handler}", body, page.token)
    template = "partials/call_result.html" if is_htmx(request) else "call.html"  # without JS: a page
    return render(request, template, {"page": page, "result": result, "dep": dep, "handler": handler})


@router.post("/deployments/{name}/chat")
async def chat(request: Request, name: str, page: auth.Form, session: Session,
               ctx: Context) -> StreamingResponse:
    """An LLM deployment's answer to the conversation, streamed as ``delta`` events (console.js's
    chat box sends the conversation as JSON with the CSRF header)."""
    dep = await deployments.get(session, ctx, page.caller, name)
    if dep.llm is None:
        raise NotFoundError(f"deployment {name!r} is not an LLM deployment: it has no chat")
    try:
        conversation = ChatRequest.model_validate_json(await request.body())
    except pydantic.ValidationError as exc:
        raise ValidationError(f"invalid conversation: {exc.errors()[0]['msg']}") from exc
    return live.stream(relay(dep.endpoint, dep.llm.model, conversation, page.token), ctx=ctx)


def _update_request(**fields: object) -> DeploymentUpdateRequest:
    try:
        return DeploymentUpdateRequest(**{k: v for k, v in fields.items() if v not in (None, "")})
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ValidationError(f"invalid update: {problems}") from exc


@router.post("/deployments/{name}/scale")
async def scale(name: str, page: Writer, session: Session, ctx: Context,
                min_replicas: Annotated[int, Form(ge=0, le=1000)],
                max_replicas: Annotated[int, Form(ge=1, le=1000)]) -> Response:
    await deployments.update(session, ctx, page.caller, name,
                             _update_request(min_replicas=min_replicas, max_replicas=max_replicas))
    return RedirectResponse(f"/deployments/{name}", status_code=303)


@router.post("/deployments/{name}/update")
async def update(name: str, page: Writer, session: Session, ctx: Context,
                 photon: Annotated[str, Form(max_length=128)]) -> Response:
    """Roll out another photon version (one replica at a time)."""
    await deployments.update(session, ctx, page.caller, name, _update_request(photon=photon.strip()))
    return RedirectResponse(f"/deployments/{name}", status_code=303)


@router.get("/deployments/{name}/delete")
async def confirm_delete(request: Request, name: str, page: Page, session: Session,
                         ctx: Context) -> HTMLResponse:
    """Asks first, saying what stops."""
    if not page.can_write:
        raise ForbiddenError(f"a {page.caller.role.value} token cannot delete deployments")
    dep = await deployments.get(session, ctx, page.caller, name)
    return render(request, "confirm.html", {
        "page": page, "title": f"Delete deployment {name}?",
        "message": f"Its {len(dep.replicas)} replica(s) stop and {dep.endpoint} stops answering.",
        "action": f"/deployments/{name}/delete", "fields": {}, "back": f"/deployments/{name}"})


@router.post("/deployments/{name}/delete")
async def delete(name: str, page: Writer, session: Session) -> Response:
    await deployments.delete(session, page.caller, name)
    return RedirectResponse("/deployments", status_code=303)

"""/api/v1/deployments, and the gateway's /api/v1/gateway/{routes,load}."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from nubis.models.deployments import Deployment, DeploymentEvent, DeploymentSpec, DeploymentUpdateRequest
from nubis.models.metric_history import MetricHistory
from nubis.models.routes import LoadReport, RoutingTable
from nubis.server.deps import Context, Reader, Session, Superuser, Writer
from nubis.server.services import deployments, gateway, metric_history

router = APIRouter(prefix="/api/v1", tags=["deployments"])


@router.post("/deployments", status_code=201)
async def create_deployment(
    spec: DeploymentSpec, caller: Writer, session: Session, ctx: Context
) -> Deployment:
    """Record the deployment; replicas start in the background (watch `status` and events)."""
    return await deployments.create(session, ctx, caller, spec)


@router.get("/deployments")
async def list_deployments(caller: Reader, session: Session, ctx: Context) -> list[Deployment]:
    return await deployments.list_deployments(session, ctx, caller)


@router.get("/deployments/{name}")
async def get_deployment(name: str, caller: Reader, session: Session, ctx: Context) -> Deployment:
    return await deployments.get(session, ctx, caller, name)


@router.patch("/deployments/{name}")
async def update_deployment(
    name: str, request: DeploymentUpdateRequest, caller: Writer, session: Session, ctx: Context
) -> Deployment:
    """A new photon version rolls out one replica at a time; new bounds rescale."""
    return await deployments.update(session, ctx, caller, name, request)


@router.delete("/deployments/{name}", status_code=204)
async def delete_deployment(name: str, caller: Writer, session: Session) -> None:
    await deployments.delete(session, caller, name)


@router.get("/deployments/{name}/events")
async def deployment_events(
    name: str, caller: Reader, session: Session, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[DeploymentEvent]:
    return await deployments.events(session, caller, name, limit=limit)


@router.get("/deployments/{name}/metrics")
async def deployment_metrics(
    name: str, caller: Reader, session: Session, ctx: Context,
    since: Annotated[str, Query(max_length=16, description="how far back: 90s, 15m, 1h; 24h at most")] = "1h",
    step: Annotated[str | None, Query(max_length=16, description="point width (default: 120 points)")] = None,
) -> MetricHistory:
    """Requests/s, 5xx/s and rate, p50/p95 latency from the gateway, in steps of 10 s or more."""
    await deployments.get_row_or_raise(session, caller, name)
    return metric_history.query(ctx.history, caller.workspace, name, since=since, step=step, now=time.time())


@router.get("/deployments/{name}/logs")
async def deployment_logs(
    name: str,
    caller: Reader,
    session: Session,
    ctx: Context,
    tail: Annotated[int, Query(ge=1, le=10000)] = 100,
) -> list[str]:
    """The last lines of every live replica's output, each prefixed by its replica id."""
    return await deployments.logs(session, ctx, caller, name, tail=tail)


@router.get("/deployments/{name}/logs/follow", response_class=StreamingResponse,
            responses={200: {"content": {"text/plain": {}}, "description": "lines as they are written"}})
async def follow_deployment_logs(
    name: str, caller: Reader, session: Session, ctx: Context,
    tail: Annotated[int, Query(ge=0, le=10000)] = 100,
    seconds: Annotated[float | None, Query(gt=0, le=86400, description="stop after this long")] = None,
) -> StreamingResponse:
    """Every replica's output as it is written (text, `[replica] line`), new replicas included."""
    row = await deployments.get_row_or_raise(session, caller, name)
    lines = deployments.follow_logs(ctx, row.id, tail=tail, seconds=seconds)
    return StreamingResponse((f"{line}\n" async for line in lines), media_type="text/plain; charset=utf-8")


@router.get("/gateway/routes", tags=["gateway"])
async def routes(caller: Superuser, session: Session) -> RoutingTable:
    """The gateway's routing table (platform admin token only)."""
    return await gateway.routing_table(session)


@router.post("/gateway/load", status_code=204, tags=["gateway"])
async def report_load(report: LoadReport, caller: Superuser, ctx: Context) -> None:
    """Per-deployment load from a gateway, each second (platform admin token only)."""
    ctx.loads.record(report)
    ctx.history.record(report, now=time.time())

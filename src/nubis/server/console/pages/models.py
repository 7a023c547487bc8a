"""/models: the model registry — versions with their metrics and lineage (job, dataset, parent), and
the actions the API has: quantize, export to ONNX, deploy."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from nubis.models.models import ModelDeployRequest
from nubis.server.console.auth import Page, Writer
from nubis.server.console.forms import parse_form
from nubis.server.console.responses import ConsoleRoute
from nubis.server.console.templating import render
from nubis.server.deps import Context, Session
from nubis.server.services import models

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


@router.get("/models")
async def model_list(request: Request, page: Page, session: Session) -> HTMLResponse:
    found = await models.list_models(session, page.caller)
    return render(request, "models.html", {"page": page, "models": found})


@router.get("/models/{name}")
async def model_versions(request: Request, name: str, page: Page, session: Session) -> HTMLResponse:
    model = await models.get_model(session, page.caller, name)
    return render(request, "model.html", {"page": page, "model": model,
                                          "versions": list(reversed(model.versions))})


@router.post("/models/{name}/{version}/quantize")
async def quantize(name: str, version: str, page: Writer, session: Session, ctx: Context) -> Response:
    job = await models.derive(session, ctx, page.caller, name, version, kind="quantize")
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.post("/models/{name}/{version}/export")
async def export_onnx(name: str, version: str, page: Writer, session: Session, ctx: Context) -> Response:
    job = await models.derive(session, ctx, page.caller, name, version, kind="export")
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.post("/models/{name}/{version}/deploy")
async def deploy(
    name: str, version: str, page: Writer, session: Session, ctx: Context,
    deployment: Annotated[str, Form(max_length=63)],
    access: Annotated[str, Form(max_length=16)] = "private",
    min_replicas: Annotated[int, Form(ge=0, le=100)] = 1,
) -> Response:
    request = parse_form(ModelDeployRequest, {
        "name": deployment.strip(), "access": access,
        "autoscaling": {"min_replicas": min_replicas, "max_replicas": max(1, min_replicas)}})
    created = await models.deploy(session, ctx, page.caller, name, version, request)
    return RedirectResponse(f"/deployments/{created.name}", status_code=303)

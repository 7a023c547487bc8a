"""/api/v1/models: the registry, derived versions and deploys."""

from __future__ import annotations

from fastapi import APIRouter

from nubis.models.deployments import Deployment
from nubis.models.jobs import Job
from nubis.models.models import Model, ModelDeployRequest, ModelExportRequest, ModelVersion
from nubis.server.deps import Context, Reader, Session, Writer
from nubis.server.services import models

router = APIRouter(prefix="/api/v1", tags=["models"])


@router.get("/models")
async def list_models(caller: Reader, session: Session) -> list[Model]:
    return await models.list_models(session, caller)


@router.get("/models/{name}")
async def get_model(name: str, caller: Reader, session: Session) -> Model:
    return await models.get_model(session, caller, name)


@router.get("/models/{name}/versions/{version}")
async def get_model_version(name: str, version: str, caller: Reader, session: Session) -> ModelVersion:
    """One version (a number or `latest`): files, metrics, lineage, comparison with its parent."""
    return await models.get_version(session, caller, name, version)


@router.delete("/models/{name}/versions/{version}", status_code=204)
async def delete_model_version(
    name: str, version: str, caller: Writer, session: Session, ctx: Context
) -> None:
    await models.delete_version(session, ctx, caller, name, version)


@router.post("/models/{name}/versions/{version}/quantize", status_code=202)
async def quantize_model(name: str, version: str, caller: Writer, session: Session, ctx: Context) -> Job:
    """Queue a dynamic int8 quantization job; its result is the model's next version."""
    return await models.derive(session, ctx, caller, name, version, kind="quantize")


@router.post("/models/{name}/versions/{version}/export", status_code=202)
async def export_model(
    name: str, version: str, request: ModelExportRequest, caller: Writer, session: Session, ctx: Context
) -> Job:
    """Queue an ONNX export job (served with onnxruntime); its result is the model's next version."""
    return await models.derive(session, ctx, caller, name, version, kind="export")


@router.post("/models/{name}/versions/{version}/deploy", status_code=201)
async def deploy_model(
    name: str, version: str, request: ModelDeployRequest, caller: Writer, session: Session, ctx: Context
) -> Deployment:
    """Deploy a version behind the gateway: `POST /<workspace>/<name>/predict {"inputs": [[...]]}`."""
    return await models.deploy(session, ctx, caller, name, version, request)

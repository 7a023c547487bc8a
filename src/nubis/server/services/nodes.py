"""Nodes: the backend's machines with what runs on each, and what happened to them.

Capacity comes from the backend (``Backend.nodes()``), workloads from the DB (the node a replica or
worker runs on is in its handle). Every caller sees every node's capacity; only the platform admin
sees other workspaces' workloads (a member sees them counted as ``hidden_workloads``).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.backends.nodes import LOCAL_NODE, Amounts, NodeInfo
from nubis.errors import NotFoundError, ValidationError
from nubis.models.deployments import ReplicaStatus
from nubis.models.jobs import WorkerStatus
from nubis.models.nodes import Node, NodeDetail, NodeEvent, NodeResources, NodeWorkload
from nubis.server.context import ServerContext
from nubis.server.deps import Caller
from nubis.server.orm import (
    DeploymentRow,
    JobRow,
    JobWorkerRow,
    NodeEventRow,
    ReplicaRow,
    WorkspaceRow,
)

EVENTS_SHOWN = 100
R = ReplicaStatus
_LIVE_REPLICAS = [s.value for s in (R.starting, R.ready, R.draining, R.stopping, R.unknown)]
MIN_PREFIX = 4


def node_of(handle: dict | None) -> str:
    """The node a handle runs on; handles of one-node backends name none."""
    return str((handle or {}).get("node") or LOCAL_NODE)


async def workloads_by_node(session: AsyncSession) -> dict[str, list[NodeWorkload]]:
    names = {r.id: r.name for r in (await session.scalars(select(WorkspaceRow))).all()}
    found: dict[str, list[NodeWorkload]] = defaultdict(list)
    replicas = await session.execute(
        select(ReplicaRow, DeploymentRow).join(DeploymentRow, DeploymentRow.id == ReplicaRow.deployment_id)
        .where(ReplicaRow.status.in_(_LIVE_REPLICAS), ReplicaRow.handle.is_not(None)))
    for replica, dep in replicas.all():
        found[node_of(replica.handle)].append(NodeWorkload(
            kind="replica", id=replica.id, workspace=names.get(dep.workspace_id, "?"), name=dep.name,
            status=replica.status))
    workers = await session.execute(
        select(JobWorkerRow, JobRow).join(JobRow, JobRow.id == JobWorkerRow.job_id)
        .where(JobWorkerRow.status == WorkerStatus.running.value, JobWorkerRow.handle.is_not(None)))
    for worker, job in workers.all():
        found[node_of(worker.handle)].append(NodeWorkload(
            kind="worker", id=worker.id, workspace=names.get(job.workspace_id, "?"),
            name=f"{job.name} rank {worker.rank}", status=worker.status))
    return found


def _resources(amounts: Amounts) -> NodeResources:
    return NodeResources(cpu=amounts.cpu, memory=amounts.memory, gpu=amounts.gpu)


def to_model(info: NodeInfo, workloads: list[NodeWorkload], caller: Caller) -> Node:
    shown = workloads if caller.superuser else [w for w in workloads if w.workspace == caller.workspace]
    used = Amounts(max(0.0, info.total.cpu - info.free.cpu), max(0, info.total.memory - info.free.memory),
                   max(0, info.total.gpu - info.free.gpu))
    return Node(id=info.id, address=info.address, alive=info.alive, total=_resources(info.total),
                free=_resources(info.free), used=_resources(used), labels=dict(info.labels),
                death_reason=info.death_reason, workloads=shown,
                hidden_workloads=len(workloads) - len(shown))


async def list_nodes(session: AsyncSession, ctx: ServerContext, caller: Caller) -> list[Node]:
    infos = await asyncio.to_thread(ctx.backend.nodes)
    workloads = await workloads_by_node(session)
    return [to_model(info, workloads.get(info.id, []), caller) for info in infos]


async def get_node(session: AsyncSession, ctx: ServerContext, caller: Caller, ref: str) -> NodeDetail:
    """A node by id, or by an unambiguous id prefix of at least four characters."""
    infos = await asyncio.to_thread(ctx.backend.nodes)
    matches = [i for i in infos if i.id == ref] or (
        [i for i in infos if i.id.startswith(ref)] if len(ref) >= MIN_PREFIX else [])
    if not matches:
        raise NotFoundError(f"node {ref!r} not found: `nubis node list` shows the nodes")
    if len(matches) > 1:
        raise ValidationError(f"node prefix {ref!r} matches {len(matches)} nodes: give more of its id")
    info = matches[0]
    workloads = await workloads_by_node(session)
    node = to_model(info, workloads.get(info.id, []), caller)
    rows = (await session.scalars(select(NodeEventRow).where(NodeEventRow.node_id == info.id)
                                  .order_by(NodeEventRow.id.desc()).limit(EVENTS_SHOWN))).all()
    events = [NodeEvent(node_id=r.node_id, kind=r.kind, message=r.message, at=r.at) for r in reversed(rows)]
    return NodeDetail(**node.model_dump(), events=events)


async def known_workloads(session: AsyncSession) -> set[str]:
    """Every replica and job worker id the database still knows (what is not an orphan)."""
    replicas = (await session.scalars(
        select(ReplicaRow.id).where(ReplicaRow.status != R.stopped.value))).all()
    workers = (await session.scalars(
        select(JobWorkerRow.id).join(JobRow, JobRow.id == JobWorkerRow.job_id)
        .where(JobRow.status.in_(("running", "stopping"))))).all()
    return {*replicas, *workers}


def record(session: AsyncSession, node_id: str, kind: str, message: str) -> None:
    session.add(NodeEventRow(node_id=node_id, kind=kind, message=message[:2048]))

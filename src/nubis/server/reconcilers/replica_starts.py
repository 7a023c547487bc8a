"""Starting replicas in two steps: placed while the round holds its session, launched after it.

The deployment reconciler ``plan``s each start inside its short DB session (photon row, secrets,
a node chosen by the one placement check against what the round has not yet given out); once the
session is closed, ``launch_all`` does the slow part concurrently (fetch the bundle, start the
replica) and hands back what happened, which the reconciler applies with a guarded update: a
replica that was deleted, stopped or moved to another generation meanwhile is not started again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.backends.artifacts import Artifact, ArtifactCache
from nubis.backends.base import NodeFetchCapability, ReplicaHandle, ReplicaSpec
from nubis.backends.nodes import NodeInfo
from nubis.errors import NoCapacityError, NubisError
from nubis.models.deployments import DeploymentSpec
from nubis.models.photons import PhotonManifest
from nubis.server.context import ServerContext
from nubis.server.orm import DeploymentRow, PhotonRow, ReplicaRow
from nubis.server.scheduler.demand import Demand
from nubis.server.scheduler.placement import Nodes, Strategy, vec, views
from nubis.server.services import photons, secrets

LIVE = ("starting", "ready", "draining")


@dataclass(frozen=True)
class StartOrder:
    replica_id: str
    generation: int
    spec: ReplicaSpec


@dataclass(frozen=True)
class StartResult:
    order: StartOrder
    handle: ReplicaHandle | None = None
    error: NubisError | OSError | None = None


class ReplicaStarts:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.cache = ArtifactCache(ctx.store, ctx.settings.home / "cache" / "photons")
        self.orders: list[StartOrder] = []
        self.nodes = Nodes([], [])
        self._placed: dict[str, set[str]] = {}  # deployment → nodes given a replica this round

    def begin_round(self, nodes: Sequence[NodeInfo]) -> None:
        self.orders = []
        self._placed = {}
        self.nodes = Nodes(views(nodes, free=True), views(nodes, free=False))

    async def plan(self, session: AsyncSession, dep: DeploymentRow, workspace: str, spec: DeploymentSpec,
                   replica: ReplicaRow) -> None:
        """Choose the replica's node and write its spec; ``NoCapacityError`` when no node has room."""
        row = await session.scalar(select(PhotonRow).where(
            PhotonRow.workspace_id == dep.workspace_id, PhotonRow.name == dep.photon_name,
            PhotonRow.version == replica.photon_version))
        if row is None:
            raise NubisError(f"photon {dep.photon_name}:{replica.photon_version} was deleted "
                             "from the registry")
        resources = spec.resources or PhotonManifest.model_validate(row.manifest).resources
        need = vec(Demand(cpu=resources.cpu, memory=resources.memory, gpu=resources.gpu))
        placement = self.nodes.place(need, 1, Strategy.pack, spec.node_selector,
                                     avoid=await self._nodes_of(session, dep))
        if not placement.placed:
            never = self.nodes.never(need, 1, Strategy.pack, spec.node_selector)
            raise NoCapacityError(placement.reason if never.placed else f"can never fit: {never.reason}")
        values = await secrets.decrypt_for_workload(session, self.ctx.box, dep.workspace_id)
        env = {**spec.env, **{k: values[k] for k in spec.secrets if k in values},
               "NUBIS_DEPLOYMENT": dep.name, "NUBIS_WORKSPACE": workspace}
        path = photons.bundle_path(row.name, row.version)
        artifact = Artifact(workspace, "photons", path, row.content_hash)
        self.nodes.take(placement.nodes, need)
        self._placed.setdefault(dep.id, set()).add(placement.nodes[0])
        self.orders.append(StartOrder(replica.id, replica.generation, ReplicaSpec(
            replica_id=replica.id, deployment=dep.name, workspace=workspace, bundle=None,
            content_hash=row.content_hash, env=env, resources=resources, artifact=artifact,
            node=placement.nodes[0])))

    async def _nodes_of(self, session: AsyncSession, dep: DeploymentRow) -> set[str]:
        """Where the deployment's replicas run: a new one goes elsewhere when it can (spread)."""
        handles = (await session.scalars(select(ReplicaRow.handle).where(
            ReplicaRow.deployment_id == dep.id, ReplicaRow.status.in_(LIVE)))).all()
        return {h["node"] for h in handles if h and h.get("node")} | self._placed.get(dep.id, set())

    async def launch_all(self) -> list[StartResult]:
        orders, self.orders = self.orders, []
        return list(await asyncio.gather(*(self._launch(o) for o in orders)))

    async def _launch(self, order: StartOrder) -> StartResult:
        spec = order.spec
        try:
            if not isinstance(self.ctx.backend, NodeFetchCapability):
                assert spec.artifact is not None
                spec = replace(spec, bundle=await asyncio.to_thread(self.cache.fetch, spec.artifact))
            return StartResult(order, handle=await self.ctx.backend.start_replica(spec))
        except (NubisError, OSError) as exc:
            return StartResult(order, error=exc)

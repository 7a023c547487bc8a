"""The targets a Prometheus scrapes (HTTP service discovery): the control plane, the gateway and
every ready replica, the replicas through the gateway (they answer only their gateway's key).

Each target is scraped with the token that found it (see docs/observability.md): an admin token
of a workspace reads the control plane's /metrics and its own replicas' through the gateway; the
gateway's own /metrics (every workspace's traffic) takes the gateway's token, so it is listed for
the platform admin only.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.models.deployments import ReplicaStatus
from nubis.models.prometheus import REPLICA_METRICS_PATH, TargetGroup
from nubis.server.context import ServerContext
from nubis.server.deps import Caller
from nubis.server.orm import DeploymentRow, ReplicaRow, WorkspaceRow
from nubis.server.services.nodes import node_of

METRICS_PATH = "/metrics"
ROLE = "nubis_role"


def _own(role: str) -> dict[str, str]:
    return {"__metrics_path__": METRICS_PATH, ROLE: role}


def _address(url: str) -> str:
    return urlsplit(url).netloc


async def targets(session: AsyncSession, ctx: ServerContext, caller: Caller) -> list[TargetGroup]:
    """The caller's workspace's targets; every workspace's (and the gateway) for the platform admin."""
    settings = ctx.settings
    gateway = _address(settings.gateway_url)
    groups = [TargetGroup(targets=[_address(settings.url)], labels=_own("control-plane"))]
    if caller.superuser:
        groups.append(TargetGroup(targets=[gateway], labels=_own("gateway")))
    query = (select(ReplicaRow, DeploymentRow.name, WorkspaceRow.name)
             .join(DeploymentRow, DeploymentRow.id == ReplicaRow.deployment_id)
             .join(WorkspaceRow, WorkspaceRow.id == DeploymentRow.workspace_id)
             .where(ReplicaRow.status == ReplicaStatus.ready.value, ReplicaRow.endpoint.is_not(None))
             .order_by(WorkspaceRow.name, DeploymentRow.name, ReplicaRow.created_at))
    if not caller.superuser:
        query = query.where(DeploymentRow.workspace_id == caller.workspace_id)
    for replica, deployment, workspace in (await session.execute(query)).all():
        groups.append(TargetGroup(targets=[gateway], labels={
            "__metrics_path__": REPLICA_METRICS_PATH.format(replica_id=replica.id), ROLE: "replica",
            "workspace": workspace, "deployment": deployment, "replica": replica.id,
            "node": node_of(replica.handle)}))
    return groups

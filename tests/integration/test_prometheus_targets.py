"""GET /api/v1/prometheus/targets through the real app: the Prometheus HTTP SD shape, the control
plane, the gateway (platform admin only) and every ready replica (through the gateway's replica
path) with its labels; a workspace admin sees its own replicas only; members, viewers and no token
are refused."""

from __future__ import annotations

from sqlalchemy import select

from nubis.server.orm import ReplicaRow, WorkspaceRow

import rows
from platform_fixtures import Platform


async def ready_replica(p: Platform, workspace: str, name: str, *, status: str = "ready") -> str:
    """A deployment of one replica in ``status``; no handle, so the running reconciler leaves it be."""
    dep = await rows.deployment(p.ctx, name, ws=workspace)
    async with p.ctx.db.sessions() as session:
        replica = ReplicaRow(deployment_id=dep.id, generation=1, photon_version=1, status=status,
                             endpoint="http://127.0.0.1:1")
        session.add(replica)
        await session.commit()
        return replica.id


async def test_targets_for_the_platform_admin_and_a_workspace_admin(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    team_admin = await p.token("admin", "team")
    for workspace in ("default", "team"):
        await rows.photon(p.ctx, ws=workspace)
    echo = await ready_replica(p, "default", "echo")
    api = await ready_replica(p, "team", "api")
    await ready_replica(p, "team", "starting", status="starting")  # not scraped before it is ready
    settings = p.ctx.settings
    control, gateway = f"{settings.host}:{settings.port}", f"{settings.host}:{settings.gateway_port}"

    r = await p.http.get("/api/v1/prometheus/targets", headers=p.admin)
    assert r.status_code == 200, r.text
    assert r.json() == [
        {"targets": [control], "labels": {"__metrics_path__": "/metrics", "nubis_role": "control-plane"}},
        {"targets": [gateway], "labels": {"__metrics_path__": "/metrics", "nubis_role": "gateway"}},
        {"targets": [gateway], "labels": {"__metrics_path__": f"/-/replicas/{echo}/metrics",
                                          "nubis_role": "replica", "workspace": "default",
                                          "deployment": "echo", "replica": echo, "node": "local"}},
        {"targets": [gateway], "labels": {"__metrics_path__": f"/-/replicas/{api}/metrics",
                                          "nubis_role": "replica", "workspace": "team", "deployment": "api",
                                          "replica": api, "node": "local"}},
    ]
    own = (await p.http.get("/api/v1/prometheus/targets", headers=p.auth(team_admin))).json()
    assert [(g["labels"]["nubis_role"], g["labels"].get("deployment")) for g in own] == [
        ("control-plane", None), ("replica", "api")]


async def test_only_admins_discover_targets(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    for role in ("member", "viewer"):
        r = await p.http.get("/api/v1/prometheus/targets", headers=p.auth(await p.token(role, "team")))
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = await p.http.get("/api/v1/prometheus/targets")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    async with p.ctx.db.sessions() as session:
        assert await session.scalar(select(WorkspaceRow).where(WorkspaceRow.name == "team")) is not None

"""Nodes through the real app: the local backend's one node, then several nodes (FakeBackend):
capacity, labels, whose workloads a caller sees, and the watcher's joined/lost events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from nubis.backends.base import ReplicaSpec
from nubis.backends.nodes import LOCAL_NODE
from nubis.server.app import build_context, create_app, prepare
from nubis.server.orm import DeploymentRow, ReplicaRow, WorkspaceRow
from nubis.server.reconcilers.nodes import NodeWatcher
from nubis.server.settings import ServerSettings

from fake_backend import FakeBackend, node
from platform_fixtures import Platform


async def test_the_local_backend_is_one_node(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    r = await p.http.get("/api/v1/nodes", headers=p.admin)
    assert r.status_code == 200
    (only,) = r.json()
    assert only["id"] == LOCAL_NODE and only["alive"] is True
    assert only["total"]["cpu"] == p.ctx.backend.capacity().cpu
    events = (await p.http.get("/api/v1/nodes/loca", headers=p.admin)).json()["events"]
    assert [e["kind"] for e in events] in ([], ["joined"])  # the watcher's first round may be done
    r = await p.http.get("/api/v1/nodes/nope", headers=p.admin)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert (await p.http.get("/api/v1/nodes")).status_code == 401


@pytest.fixture
async def quiet_platform(tmp_path: Path) -> AsyncIterator[Platform]:
    """The app on a FakeBackend of two nodes, without its reconcilers: the test moves everything."""
    ctx = build_context(ServerSettings(home=tmp_path / "home", start_gateway=False))
    ctx.backend = FakeBackend([node("n-gpu-1", gpu=2, pool="a100"), node("n-cpu-2", cpu=2)])
    await prepare(ctx)
    app = create_app(ctx)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://nubis") as http:
        yield Platform(app=app, ctx=ctx, http=http,
                       admin_token=ctx.settings.admin_token_file.read_text().strip())
    await ctx.db.dispose()


async def test_several_nodes_workloads_by_workspace_and_node_loss(quiet_platform: Platform) -> None:
    p = quiet_platform
    fake = p.ctx.backend
    assert isinstance(fake, FakeBackend)
    watcher = NodeWatcher(p.ctx)
    assert await watcher.check_once() == []
    await add_replica(p, fake, "default", "echo", "n-gpu-1")
    await add_replica(p, fake, "team", "other", "n-gpu-1")
    member = await p.token("member", "team")

    listed = {n["id"]: n for n in (await p.http.get("/api/v1/nodes", headers=p.admin)).json()}
    assert listed["n-gpu-1"]["labels"] == {"pool": "a100"}
    assert listed["n-gpu-1"]["used"] == {"cpu": 2.0, "memory": 2 * 2**30, "gpu": 0}
    assert sorted(w["name"] for w in listed["n-gpu-1"]["workloads"]) == ["echo", "other"]
    seen = {n["id"]: n for n in (await p.http.get("/api/v1/nodes", headers=p.auth(member))).json()}
    assert [w["name"] for w in seen["n-gpu-1"]["workloads"]] == ["other"]
    assert seen["n-gpu-1"]["hidden_workloads"] == 1

    fake.kill_node("n-gpu-1", "health check failed due to missing too many heartbeats")
    lost = await watcher.check_once()
    assert [n.id for n in lost] == ["n-gpu-1"]
    assert await watcher.check_once() == []  # said once
    detail = (await p.http.get("/api/v1/nodes/n-gpu", headers=p.admin)).json()
    assert detail["alive"] is False
    assert [e["kind"] for e in detail["events"]] == ["joined", "lost"]
    assert "missing too many heartbeats" in detail["events"][-1]["message"]
    restarted = NodeWatcher(p.ctx)  # a control plane restart does not repeat the history
    assert await restarted.check_once() == []
    detail = (await p.http.get("/api/v1/nodes/n-gpu", headers=p.admin)).json()
    assert len(detail["events"]) == 2


async def add_replica(p: Platform, fake: FakeBackend, workspace: str, deployment: str, on: str) -> None:
    """A replica row as the deployment reconciler leaves it, on the fake backend's node ``on``."""
    handle = await fake.start_replica(ReplicaSpec(replica_id=f"r-{deployment}", deployment=deployment,
                                                  workspace=workspace, bundle=None, content_hash="", node=on))
    async with p.ctx.db.sessions() as session:
        ws = await session.scalar(select(WorkspaceRow).where(WorkspaceRow.name == workspace))
        if ws is None:
            ws = WorkspaceRow(name=workspace)
            session.add(ws)
            await session.flush()
        dep = DeploymentRow(workspace_id=ws.id, name=deployment, photon_name="echo",
                            spec={"name": deployment, "photon": "echo"},
                            photon_version=1, generation=1)
        session.add(dep)
        await session.flush()
        session.add(ReplicaRow(id=handle.replica_id, deployment_id=dep.id, generation=1, photon_version=1,
                               status="ready", handle=handle.to_dict(), endpoint=handle.endpoint))
        await session.commit()

"""GET /api/v1/usage through the real app: resource-seconds per workspace, deployment, job and day
from recorded intervals (a running one up to the answer's time), prices, quotas beside them, who
may read whose usage, and the 4xx answers to bad input."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from nubis.server.orm import UsageIntervalRow, WorkspaceRow
from nubis.server.reconcilers.deployments import DeploymentReconciler
from nubis.server.reconcilers.jobs import JobReconciler

import rows
from fake_backend import FakeBackend, node
from platform_fixtures import Platform

H = 3600.0


async def record(p: Platform, workspace: str, kind: str, name: str, *, cpu: float, memory_gib: float = 0.0,
                 gpu: int = 0, started: datetime, stopped: datetime | None) -> None:
    async with p.ctx.db.sessions() as session:
        ws = await session.scalar(select(WorkspaceRow).where(WorkspaceRow.name == workspace))
        assert ws is not None
        session.add(UsageIntervalRow(workspace_id=ws.id, kind=kind, object_name=name, object_id=f"id-{name}",
                                     unit_id=f"{name}-{started.timestamp()}", node="local", cpu=cpu,
                                     memory_gib=memory_gib, gpu=gpu, started_at=started, stopped_at=stopped))
        await session.commit()


def midnight_of_yesterday() -> date:
    return datetime.now(UTC).date() - timedelta(days=1)


@pytest.fixture
async def recorded(platform: Platform) -> dict[str, str]:
    """Two workspaces' intervals around midnight two days ago; tokens of the second one."""
    tokens = {role: await platform.token(role, "team-b") for role in ("member", "viewer")}
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    await record(platform, "default", "replica", "web", cpu=2, memory_gib=4, gpu=1,
                 started=midnight - timedelta(hours=1), stopped=midnight + timedelta(hours=2))
    await record(platform, "default", "job", "train", cpu=4, memory_gib=8,
                 started=midnight + timedelta(hours=1), stopped=midnight + timedelta(hours=1, minutes=30))
    await record(platform, "default", "job", "train", cpu=4, memory_gib=8,  # a second attempt, long ago
                 started=midnight - timedelta(days=40), stopped=midnight - timedelta(days=39))
    await record(platform, "team-b", "replica", "api", cpu=1, memory_gib=1,
                 started=datetime.now(UTC) - timedelta(hours=1), stopped=None)
    return tokens


async def test_usage_by_workspace_deployment_job_and_day(platform: Platform,
                                                         recorded: dict[str, str]) -> None:
    r = await platform.http.get("/api/v1/usage", params={"since": "30d"}, headers=platform.admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["by"] == "workspace" and body["daily"] is False
    [default] = body["rows"]  # only the caller's workspace; the 40-day-old attempt is outside
    assert default["workspace"] == "default"
    assert default["cpu_seconds"] == pytest.approx(2 * 3 * H + 4 * 0.5 * H)
    assert default["memory_gib_seconds"] == pytest.approx(4 * 3 * H + 8 * 0.5 * H)
    assert default["gpu_seconds"] == pytest.approx(1 * 3 * H)
    assert default["cost"] is None and body["total"]["cpu_seconds"] == default["cpu_seconds"]

    by_job = (await platform.http.get("/api/v1/usage", params={"by": "job", "since": "60d"},
                                      headers=platform.admin)).json()
    assert [(r["kind"], r["name"], r["cpu_seconds"]) for r in by_job["rows"]] == [
        ("job", "train", pytest.approx(4 * 0.5 * H + 4 * 24 * H))]

    daily = (await platform.http.get("/api/v1/usage", params={"by": "deployment", "daily": "true"},
                                     headers=platform.admin)).json()
    assert [(r["name"], r["cpu_seconds"]) for r in daily["rows"]] == [
        ("web", pytest.approx(2 * 1 * H)), ("web", pytest.approx(2 * 2 * H))]  # split at midnight UTC
    assert [r["day"] for r in daily["rows"]] == [(midnight_of_yesterday() - timedelta(days=1)).isoformat(),
                                                  midnight_of_yesterday().isoformat()]


async def test_a_running_workload_counts_up_to_the_answer(platform: Platform,
                                                         recorded: dict[str, str]) -> None:
    r = await platform.http.get("/api/v1/usage", params={"since": "2h", "by": "deployment"},
                                headers=platform.auth(recorded["viewer"]))
    assert r.status_code == 200, r.text
    body = r.json()
    [api] = body["rows"]
    started = datetime.fromisoformat(body["until"]) - datetime.fromisoformat(body["since"])
    assert api["name"] == "api" and api["workspace"] == "team-b"
    held = api["cpu_seconds"]
    assert held == pytest.approx(H, abs=60) and held < started.total_seconds()
    [quota] = body["quotas"]
    assert quota["workspace"] == "team-b"
    assert quota["replicas"] == {"cpu": 1.0, "memory": 2**30, "gpu": 0}
    assert quota["jobs"] == {"cpu": 0.0, "memory": 0, "gpu": 0}


async def test_prices_give_a_cost(platform: Platform, recorded: dict[str, str]) -> None:
    prices = {"cpu_hour": 0.5, "memory_gib_hour": 0.25, "gpu_hour": 2}
    body = (await platform.http.get("/api/v1/usage", params={"by": "deployment", **prices},
                                    headers=platform.admin)).json()
    [web] = body["rows"]
    assert web["cost"] == pytest.approx(2 * 3 * 0.5 + 4 * 3 * 0.25 + 1 * 3 * 2)
    assert body["total"]["cost"] == pytest.approx(web["cost"])


async def test_quotas_beside_usage(platform: Platform, recorded: dict[str, str]) -> None:
    r = await platform.http.patch("/api/v1/workspaces/default",
                                  json={"cpu_quota": 8, "memory_quota": 2**34, "gpu_quota": 2},
                                  headers=platform.admin)
    assert r.status_code == 200, r.text
    body = (await platform.http.get("/api/v1/usage", headers=platform.admin)).json()
    assert [(q["workspace"], q["cpu_quota"], q["memory_quota"], q["gpu_quota"]) for q in body["quotas"]] == [
        ("default", 8.0, 2**34, 2)]


async def test_each_workspace_sees_its_own_and_the_platform_admin_all(platform: Platform,
                                                                      recorded: dict[str, str]) -> None:
    member = platform.auth(recorded["member"])
    own = (await platform.http.get("/api/v1/usage", headers=member)).json()
    assert {r["workspace"] for r in own["rows"]} == {"team-b"}
    assert [q["workspace"] for q in own["quotas"]] == ["team-b"]
    r = await platform.http.get("/api/v1/usage", params={"all_workspaces": "true"}, headers=member)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = await platform.http.get("/api/v1/usage", headers={**member, "x-nubis-workspace": "default"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    every = (await platform.http.get("/api/v1/usage", params={"all_workspaces": "true"},
                                     headers=platform.admin)).json()
    assert [r["workspace"] for r in every["rows"]] == ["default", "team-b"]
    assert [q["workspace"] for q in every["quotas"]] == ["default", "team-b"]
    assert (await platform.http.get("/api/v1/usage")).status_code == 401


@pytest.mark.parametrize(("params", "field"), [
    ({"since": "yesterday"}, "since"), ({"since": "3y"}, "since"), ({"since": "2999-01-01"}, "since"),
    ({"since": "99999d"}, "since"), ({"by": "node"}, "query.by"), ({"cpu_hour": "-1"}, "query.cpu_hour"),
    ({"gpu_hour": "inf"}, "query.gpu_hour"), ({"daily": "often"}, "query.daily"),
])
async def test_bad_input_is_a_422_that_names_the_field(sqlite_platform: Platform, params: dict[str, str],
                                                       field: str) -> None:
    r = await sqlite_platform.http.get("/api/v1/usage", params=params, headers=sqlite_platform.admin)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    assert field in str(error["details"])


async def test_recording_on_each_database(db_url: str, tmp_path: Path) -> None:
    """The reconcilers' status changes open and close intervals in the same flush (a before_flush
    hook) on SQLite and PostgreSQL; a restart closes what no longer runs."""
    fake = FakeBackend([node("a", cpu=8)])
    async with rows.context(tmp_path, fake, db_url=db_url) as ctx:
        await rows.photon(ctx)
        await rows.deployment(ctx, "web", resources={"cpu": 2, "memory": "1Gi"},
                              autoscaling={"min_replicas": 2, "max_replicas": 2})
        await rows.job(ctx, "ddp", workers=2, resources={"cpu": 1, "memory": "1Gi"})
        await DeploymentReconciler(ctx).reconcile_once()
        await JobReconciler(ctx).reconcile_once()
        async with ctx.db.sessions() as session:
            opened = (await session.scalars(select(UsageIntervalRow))).all()
        assert sorted((i.kind, i.cpu) for i in opened) == [("job", 1), ("job", 1),
                                                           ("replica", 2), ("replica", 2)]
        assert all(i.stopped_at is None for i in opened)
        fake.replicas.clear()  # everything died while the control plane was down
        await DeploymentReconciler(ctx).adopt()
        await JobReconciler(ctx).adopt()
        await JobReconciler(ctx).reconcile_once()  # the workers are seen gone
        async with ctx.db.sessions() as session:
            closed = (await session.scalars(select(UsageIntervalRow))).all()
        assert len(closed) == 4 and all(i.stopped_at is not None for i in closed)

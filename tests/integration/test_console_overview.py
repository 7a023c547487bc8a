"""The console's overview, deployments list (filters, pages) and charts' data, in-process against the
real app: what they show, and to whom."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx

from nubis.server.services import deployments

import rows
from platform_fixtures import Platform

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@contextlib.asynccontextmanager
async def logged_in(platform: Platform, token: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser of its own (cookie jar) logged in with ``token``."""
    transport = httpx.ASGITransport(app=platform.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://nubis") as http:
        form = await http.get("/login")
        r = await http.post("/login", data={"token": token, "csrf": CSRF.search(form.text).group(1)})
        assert r.status_code == 303, r.text
        yield http


async def test_the_overview_shows_quota_use_of_every_workspace_to_the_platform_admin_only(
    sqlite_platform: Platform,
) -> None:
    member = await sqlite_platform.token("member", workspace="team")
    r = await sqlite_platform.http.patch("/api/v1/workspaces/team", json={"cpu_quota": 4},
                                         headers=sqlite_platform.admin)
    assert r.status_code == 200
    async with logged_in(sqlite_platform, sqlite_platform.admin_token) as admin:
        page = (await admin.get("/")).text
        assert 'data-workspace="default"' in page and 'data-workspace="team"' in page
        assert "0.0 / 4.0" in page  # team: nothing running of a 4-CPU job quota
        assert 'data-node="' in page
    async with logged_in(sqlite_platform, member) as http:
        page = (await http.get("/")).text
        assert 'data-workspace="team"' in page and 'data-workspace="default"' not in page


async def test_the_deployments_list_filters_and_pages(sqlite_platform: Platform) -> None:
    for i in range(55):
        await rows.deployment(sqlite_platform.ctx, f"web-{i:02d}", autoscaling={"min_replicas": 0})
    await rows.deployment(sqlite_platform.ctx, "api", autoscaling={"min_replicas": 0})
    async with logged_in(sqlite_platform, sqlite_platform.admin_token) as http:
        first = (await http.get("/deployments")).text
        assert first.count('data-deployment="') == 50 and "page 1 of 2 · 56 in all" in first
        second = (await http.get("/deployments?page=2")).text
        assert second.count('data-deployment="') == 6
        named = (await http.get("/deployments?q=api")).text
        assert re.findall(r'data-deployment="([^"]+)"', named) == ["api"]
        none = (await http.get("/deployments?status=failed&q=api")).text
        assert "No deployments match these filters" in none
        assert (await http.get("/deployments?page=0")).status_code == 422


async def test_the_charts_data_is_the_metric_history(sqlite_platform: Platform) -> None:
    await rows.deployment(sqlite_platform.ctx, "echo", autoscaling={"min_replicas": 0})
    report = {"gateway_id": "g", "at": datetime.now(UTC).isoformat(), "routes_version": 1,
              "deployments": [{"workspace": "default", "name": "echo", "in_flight": 0, "queued": 0,
                               "requests": 20, "errors": 5, "latency_counts": [0, 20]}]}
    r = await sqlite_platform.http.post("/api/v1/gateway/load", json=report, headers=sqlite_platform.admin)
    assert r.status_code == 204
    api = await sqlite_platform.http.get("/api/v1/deployments/echo/metrics", params={"since": "1m"},
                                         headers=sqlite_platform.admin)
    assert api.status_code == 200
    last = api.json()["points"][-1]
    assert last["requests_per_s"] == 2.0 and last["error_rate"] == 0.25 and 5 < last["p50_ms"] <= 10
    async with logged_in(sqlite_platform, sqlite_platform.admin_token) as http:
        charts = await http.get("/deployments/echo/metrics.json?since=1m")
        assert charts.json() == api.json()
        bad = await http.get("/deployments/echo/metrics.json?since=1w")
        assert bad.status_code == 422 and "between 10s and 1d" in bad.text
    bad_api = await sqlite_platform.http.get("/api/v1/deployments/echo/metrics", params={"since": "2d"},
                                             headers=sqlite_platform.admin)
    assert bad_api.status_code == 422 and bad_api.json()["error"]["code"] == "validation_error"


async def test_deleting_a_deployment_asks_first(sqlite_platform: Platform) -> None:
    await rows.deployment(sqlite_platform.ctx, "gone", autoscaling={"min_replicas": 0})
    async with logged_in(sqlite_platform, sqlite_platform.admin_token) as http:
        asked = await http.get("/deployments/gone/delete")
        assert asked.status_code == 200 and "Delete deployment gone?" in asked.text
        csrf = CSRF.search(asked.text).group(1)
        r = await http.post("/deployments/gone/delete", data={"csrf": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/deployments"
    found = await sqlite_platform.http.get("/api/v1/deployments/gone", headers=sqlite_platform.admin)
    assert found.status_code == 404


async def test_the_overview_shows_recent_deployment_events_of_the_workspace_only(
    sqlite_platform: Platform,
) -> None:
    mine = await rows.deployment(sqlite_platform.ctx, "mine", autoscaling={"min_replicas": 0})
    await sqlite_platform.token("viewer", workspace="elsewhere")
    theirs = await rows.deployment(sqlite_platform.ctx, "theirs", ws="elsewhere",
                                   autoscaling={"min_replicas": 0})
    async with sqlite_platform.ctx.db.sessions() as session:
        deployments.event(session, mine.id, "note", "a thing happened to mine")
        deployments.event(session, theirs.id, "note", "a thing happened to theirs")
        await session.commit()
    async with logged_in(sqlite_platform, sqlite_platform.admin_token) as http:
        page = (await http.get("/")).text
    assert "a thing happened to mine" in page and "theirs" not in page
    assert 'href="/deployments/mine"' in page

"""The metric history across a stop and start of the control plane (the real app's lifespan, twice on
one home): the charts' numbers come back, and the alert rules know the history covers the time
before the restart."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from nubis.server.settings import ServerSettings

import rows
from platform_fixtures import running_platform


async def test_a_stop_and_start_keeps_the_metric_history(tmp_path: Path) -> None:
    settings = ServerSettings(home=tmp_path / "home")
    report = {"gateway_id": "g", "at": datetime.now(UTC).isoformat(), "routes_version": 1,
              "deployments": [{"workspace": "default", "name": "echo", "in_flight": 0, "queued": 0,
                               "requests": 20, "errors": 5, "latency_counts": [0, 20]}]}
    async with running_platform(settings) as p:
        await rows.deployment(p.ctx, "echo", autoscaling={"min_replicas": 0})
        assert (await p.http.post("/api/v1/gateway/load", json=report, headers=p.admin)).status_code == 204
        before = (await p.http.get("/api/v1/deployments/echo/metrics", params={"since": "5m"},
                                   headers=p.admin)).json()
        covered = p.ctx.history.covered_since
    assert settings.metric_history_file.stat().st_mode & 0o777 == 0o600
    async with running_platform(settings) as p:
        after = (await p.http.get("/api/v1/deployments/echo/metrics", params={"since": "5m"},
                                  headers=p.admin)).json()
        assert sum(pt["requests_per_s"] for pt in after["points"]) > 0
        assert [pt for pt in after["points"] if pt["requests_per_s"]] == [
            pt for pt in before["points"] if pt["requests_per_s"]]
        assert p.ctx.history.covered_since == covered
        assert not settings.metric_history_file.exists()  # read once

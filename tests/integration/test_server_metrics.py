"""The control plane's /metrics on the real app: who may read it, requests by route template and
status, reconciler rounds, the job queue by workspace and reason, workers and replicas by status."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from platform_fixtures import Platform

Metric = Callable[[str, str], float | None]
PY = "python"


async def scrape(p: Platform) -> str:
    r = await p.http.get("/metrics", headers=p.admin)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return r.text


def series(text: str, name: str) -> list[dict[str, str]]:
    return [s.labels for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


async def test_metrics_need_an_admin_token(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    r = await p.http.get("/metrics")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    r = await p.http.get("/metrics", headers=p.auth("nbs_not-a-token"))
    assert (r.status_code, r.json()["error"]["message"]) == (401, "unknown token")
    r = await p.http.get("/metrics", headers=p.auth(await p.token("member")))
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"
    assert "a member token cannot manage" in r.json()["error"]["message"]
    r = await p.http.get("/metrics", headers=p.auth(await p.token("admin", "research")))
    assert r.status_code == 200, r.text  # an admin of any workspace


async def test_requests_are_counted_by_route_template_and_status(platform: Platform, metric: Metric) -> None:
    p = platform
    assert (await p.http.get("/api/v1/jobs/no-such-job", headers=p.admin)).status_code == 404
    assert (await p.http.get("/api/v1/workspaces/default", headers=p.admin)).status_code == 200
    assert (await p.http.get("/api/v1/workspaces/default", headers=p.admin)).status_code == 200
    assert (await p.http.get("/no/such/path-x1")).status_code == 404
    assert (await p.http.delete("/api/v1/whoami", headers=p.admin)).status_code == 405
    assert (await p.http.get("/metrics")).status_code == 401
    text = await scrape(p)
    requests = "nubis_api_requests_total{{method=\"{}\",route=\"{}\",status=\"{}\"}}"
    assert metric(text, requests.format("GET", "/api/v1/jobs/{ref}", 404)) == 1
    assert metric(text, requests.format("GET", "/api/v1/workspaces/{name}", 200)) == 2
    assert metric(text, requests.format("GET", "unmatched", 404)) == 1
    assert metric(text, requests.format("DELETE", "/api/v1/whoami", 405)) == 1
    assert metric(text, requests.format("GET", "/metrics", 401)) == 1
    latency = 'nubis_api_request_duration_seconds_count{method="GET",route="/api/v1/workspaces/{name}"}'
    assert metric(text, latency) == 2
    routes = {labels["route"] for labels in series(text, "nubis_api_requests_total")}
    assert all(r.startswith("/") or r == "unmatched" for r in routes)
    assert "no-such-job" not in text and "path-x1" not in text  # raw paths never become labels
    assert "_created" not in text


async def test_reconciler_rounds_are_timed(platform: Platform, metric: Metric) -> None:
    deadline = time.monotonic() + 30
    while True:  # the loops started with the app; wait until each has finished a round
        text = await scrape(platform)
        rounds = [metric(text, f'nubis_reconciler_round_duration_seconds_count{{reconciler="{name}"}}')
                  for name in ("deployments", "jobs")]
        if all(rounds):
            break
        assert time.monotonic() < deadline, text
        await asyncio.sleep(0.2)
    for name in ("deployments", "jobs"):
        assert metric(text, f'nubis_reconciler_round_errors_total{{reconciler="{name}"}}') == 0
    assert metric(text, 'nubis_replicas{status="ready"}') == 0  # every status, zero when none


async def wait_job(p: Platform, ref: str, headers: dict[str, str], until: Callable[[dict], bool]) -> None:
    deadline = time.monotonic() + 60
    while True:
        job = (await p.http.get(f"/api/v1/jobs/{ref}", headers=headers)).json()
        if until(job):
            return
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.1)


async def test_queue_by_workspace_and_reason_and_workers_by_status(platform: Platform,
                                                                   metric: Metric) -> None:
    p = platform
    r = await p.http.post("/api/v1/workspaces", json={"name": "small"}, headers=p.admin)
    assert r.status_code == 201, r.text
    r = await p.http.patch("/api/v1/workspaces/small", json={"cpu_quota": 0.5}, headers=p.admin)
    assert r.status_code == 200, r.text
    member = p.auth(await p.token("member", "small"))
    spec = {"resources": {"cpu": 0.5, "memory": "64Mi"},
            "command": [PY, "-c", "import time; time.sleep(120)"]}
    for name in ("hog", "waiter"):
        r = await p.http.post("/api/v1/jobs", json={"name": name, **spec}, headers=member)
        assert r.status_code == 201, r.text
    await wait_job(p, "hog", member, lambda job: job["status"] == "running")
    await wait_job(p, "waiter", member, lambda job: (job["reason"] or "").startswith("workspace quota"))

    text = await scrape(p)
    assert series(text, "nubis_jobs_queued") == [{"workspace": "small", "reason": "quota"}]
    assert metric(text, 'nubis_jobs_queued{workspace="small",reason="quota"}') == 1
    assert metric(text, 'nubis_job_workers{status="running"}') == 1
    assert metric(text, 'nubis_job_workers{status="failed"}') == 0

    for name in ("waiter", "hog"):
        assert (await p.http.post(f"/api/v1/jobs/{name}/cancel", headers=member)).status_code == 200
    for name in ("waiter", "hog"):
        await wait_job(p, name, member, lambda job: job["status"] == "cancelled")
    text = await scrape(p)
    assert series(text, "nubis_jobs_queued") == []
    assert metric(text, 'nubis_job_workers{status="running"}') == 0

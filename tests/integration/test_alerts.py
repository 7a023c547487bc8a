"""/api/v1/alerts on the real app in-process, and the evaluator with its dispatcher against a real
webhook receiver on 127.0.0.1: roles (only admins set the webhook or thresholds, writers silence),
another workspace's objects 404, the URL and secret never come back, signed deliveries, retries of a
receiver that is down, and 4xx answers with stable codes for bad input."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from nubis.models.routes import DeploymentLoad, LoadReport
from nubis.server.orm import AlertWebhookRow
from nubis.server.reconcilers.alerts import AlertEvaluator
from nubis.server.services.alert_delivery import AlertDispatcher
from nubis.server.settings import ServerSettings
from webhook_receiver import WebhookReceiver, verify, webhook_receiver

import rows
from platform_fixtures import Platform, running_platform

API = "/api/v1/alerts"


@pytest.fixture
async def quiet_platform(db_url: str, tmp_path: Path) -> AsyncIterator[Platform]:
    """On SQLite and PostgreSQL; the app's own evaluator waits an hour: each test runs its rounds."""
    settings = ServerSettings(home=tmp_path / "home", db_url=db_url, alert_interval_s=3600)
    async with running_platform(settings) as p:
        yield p


@pytest.fixture
def receiver() -> AsyncIterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def report(name: str, *, requests: int, errors: int, workspace: str = "default") -> LoadReport:
    load = DeploymentLoad(workspace=workspace, name=name, in_flight=0, queued=0, requests=requests,
                          errors=errors, latency_counts=[requests])
    return LoadReport(gateway_id="g", at="2026-01-01T00:00:00Z", routes_version=None, deployments=[load])


async def test_only_an_admin_sets_the_webhook_and_its_url_and_secret_never_come_back(
        quiet_platform: Platform, receiver: WebhookReceiver) -> None:
    p = quiet_platform
    member, viewer = await p.token("member"), await p.token("viewer")
    r = await p.http.put(f"{API}/webhook", json={"url": receiver.url}, headers=p.auth(member))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = await p.http.put(f"{API}/webhook", json={"url": receiver.url, "format": "json"}, headers=p.admin)
    assert r.status_code == 200, r.text
    secret = r.json()["signing_secret"]
    target = r.json()["target"]
    assert secret.startswith("whsec_") and target.endswith("/…") and "hooks" not in target
    shown = await p.http.get(f"{API}/webhook", headers=p.auth(viewer))
    assert shown.status_code == 200 and "signing_secret" not in shown.json()
    assert "hooks/nubis" not in shown.text and "key=k" not in shown.text
    async with p.ctx.db.sessions() as session:  # stored encrypted
        row = await session.scalar(select(AlertWebhookRow))
        assert b"hooks/nubis" not in row.url_box and secret.encode() not in row.secret_box
    for bad in ("ftp://example.com/x", "file:///etc/passwd", "http://", "not a url", "http://a.b/\x00x"):
        r = await p.http.put(f"{API}/webhook", json={"url": bad}, headers=p.admin)
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", bad
    r = await p.http.post(f"{API}/test", headers=p.auth(member))
    assert r.status_code == 403

    tested = await p.http.post(f"{API}/test", headers=p.admin)
    assert tested.status_code == 200 and tested.json()["ok"] is True and tested.json()["status_code"] == 200
    got = receiver.received[-1]
    assert verify(secret, got.headers["X-Nubis-Signature"], got.body)
    assert not verify("whsec_other", got.headers["X-Nubis-Signature"], got.body)
    assert got.json["status"] == "test" and got.json["version"] == 1 and got.json["workspace"] == "default"
    log = (await p.http.get(f"{API}/deliveries", headers=p.auth(viewer))).json()
    assert [(d["status"], d["ok"], d["status_code"]) for d in log] == [("test", True, 200)]

    other = await p.token("admin", "team-b")
    assert (await p.http.get(f"{API}/webhook", headers=p.auth(other))).status_code == 404
    assert (await p.http.get(f"{API}/deliveries", headers=p.auth(other))).json() == []
    r = await p.http.delete(f"{API}/webhook", headers=p.auth(other))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert (await p.http.delete(f"{API}/webhook", headers=p.admin)).status_code == 204
    assert (await p.http.post(f"{API}/test", headers=p.admin)).status_code == 404


async def test_rules_show_defaults_and_a_workspaces_overrides(quiet_platform: Platform) -> None:
    p = quiet_platform
    rules = {r["name"]: r for r in (await p.http.get(f"{API}/rules", headers=p.admin)).json()}
    assert set(rules) == {"crash_loop", "error_rate", "latency_slo", "job_failed", "node_lost",
                          "quota_near_full", "disk_low"}
    assert rules["crash_loop"]["settings"] == {"enabled": True, "repeat": 14400, "for": 0, "restarts": 3,
                                               "window": 600}
    assert rules["quota_near_full"]["settings"]["percent"] == 90
    r = await p.http.patch(f"{API}/rules/error_rate", json={"set": {"rate": "0.5", "for": "2m"}},
                           headers=p.admin)
    assert r.status_code == 200, r.text
    assert r.json()["settings"]["rate"] == 0.5 and r.json()["settings"]["for"] == 120
    assert r.json()["overridden"] == ["for", "rate"]
    other = await p.token("admin", "team-b")
    theirs = {x["name"]: x for x in (await p.http.get(f"{API}/rules", headers=p.auth(other))).json()}
    assert theirs["error_rate"]["settings"]["rate"] == 0.05 and theirs["error_rate"]["overridden"] == []
    member = await p.token("member")
    r = await p.http.patch(f"{API}/rules/error_rate", json={"set": {"rate": 0.1}}, headers=p.auth(member))
    assert r.status_code == 403
    for body, rule in (({"set": {"rate": "2"}}, "error_rate"), ({"set": {"nope": 1}}, "error_rate"),
                       ({"set": {"for": "soon"}}, "error_rate"), ({"set": {"rate": 0.1}}, "no_such_rule"),
                       ({}, "error_rate"), ({"set": {"restarts": 2.5}}, "crash_loop"),
                       ({"set": {"enabled": "maybe"}}, "crash_loop")):
        r = await p.http.patch(f"{API}/rules/{rule}", json=body, headers=p.admin)
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", (body, r.text)
    r = await p.http.patch(f"{API}/rules/error_rate", json={"reset": ["rate"]}, headers=p.admin)
    assert r.json()["settings"]["rate"] == 0.05 and r.json()["overridden"] == ["for"]


async def test_silences_are_the_workspaces_own(quiet_platform: Platform) -> None:
    p = quiet_platform
    viewer, member = await p.token("viewer"), await p.token("member")
    body = {"rule": "crash_loop", "object": "web", "duration": "2h", "comment": "deploying a fix"}
    assert (await p.http.post(f"{API}/silences", json=body, headers=p.auth(viewer))).status_code == 403
    r = await p.http.post(f"{API}/silences", json=body, headers=p.auth(member))
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["active"] and made["created_by"].startswith("member-token")
    for bad in ({"duration": "2h"}, {"rule": "nope", "duration": "2h"},
                {"rule": "crash_loop", "duration": "0s"}, {"rule": "crash_loop", "duration": "forever"},
                {"rule": "crash_loop", "duration": "400d"}, {"object": "a\x00b", "duration": "1h"},
                {"rule": "crash_loop", "duration": "1h", "comment": "line\nbreak"}):
        r = await p.http.post(f"{API}/silences", json=bad, headers=p.auth(member))
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", bad
    other = await p.token("admin", "team-b")
    assert (await p.http.get(f"{API}/silences", headers=p.auth(other))).json() == []
    r = await p.http.delete(f"{API}/silences/{made['id']}", headers=p.auth(other))
    assert r.status_code == 404
    for odd in ("a%00b", "x" * 64, "%E2%9C%93"):
        assert (await p.http.delete(f"{API}/silences/{odd}", headers=p.auth(member))).status_code == 404, odd
    listed = (await p.http.get(f"{API}/silences", headers=p.auth(viewer))).json()
    assert [s["id"] for s in listed] == [made["id"]]
    assert (await p.http.delete(f"{API}/silences/{made['id']}", headers=p.auth(member))).status_code == 204
    assert (await p.http.get(f"{API}/silences", headers=p.admin)).json() == []


async def test_error_rate_fires_once_resolves_once_signed_and_silences_hold_it_back(
        quiet_platform: Platform, receiver: WebhookReceiver) -> None:
    p = quiet_platform
    secret = (await p.http.put(f"{API}/webhook", json={"url": receiver.url}, headers=p.admin)).json()[
        "signing_secret"]
    await rows.deployment(p.ctx, "api", autoscaling={"min_replicas": 0})
    evaluator = AlertEvaluator(p.ctx, dispatcher=AlertDispatcher(p.ctx, retry_s=0.05))
    now = time.time()
    p.ctx.history.record(report("api", requests=10, errors=10), now=now)
    await evaluator.evaluate_once(now)  # fewer than min_requests (20): nothing
    assert (await p.http.get(API, headers=p.admin)).json() == []
    p.ctx.history.record(report("api", requests=30, errors=5), now=now + 1)
    step = await evaluator.evaluate_once(now + 1)
    assert [(n.status, n.alert.rule, n.alert.object) for n in step.notifications] == [
        ("firing", "error_rate", "api")]
    await wait_until(lambda: len(receiver.received) == 1)
    got = receiver.received[0]
    assert verify(secret, got.headers["X-Nubis-Signature"], got.body)
    assert got.json["status"] == "firing" and got.json["rule"] == "error_rate" and got.json["object"] == "api"
    assert got.json["details"]["requests"] == 40 and got.json["started_at"]
    assert got.json["resolved_at"] is None
    await evaluator.evaluate_once(now + 2)  # still firing: not sent again before `repeat`
    listed = (await p.http.get(API, headers=p.admin)).json()
    assert [(a["rule"], a["state"]) for a in listed] == [("error_rate", "firing")]
    resolved = await evaluator.evaluate_once(now + 400)  # the 5 min window has passed
    assert [n.status for n in resolved.notifications] == ["resolved"]
    await wait_until(lambda: len(receiver.received) == 2)
    assert receiver.received[1].json["status"] == "resolved" and receiver.received[1].json["resolved_at"]

    silence = {"rule": "error_rate", "object": "api", "duration": "1h"}
    assert (await p.http.post(f"{API}/silences", json=silence, headers=p.admin)).status_code == 201
    p.ctx.history.record(report("api", requests=50, errors=50), now=time.time())
    step = await evaluator.evaluate_once(time.time())
    assert step.notifications == []
    listed = (await p.http.get(API, headers=p.admin)).json()
    assert listed[0]["state"] == "firing" and listed[0]["silenced"] is True
    await asyncio.sleep(0.3)
    assert len(receiver.received) == 2
    await evaluator.shutdown()


async def test_a_receiver_that_is_down_gets_retries_and_the_log_says_so(
        quiet_platform: Platform, receiver: WebhookReceiver) -> None:
    p = quiet_platform
    receiver.status = 503
    await p.http.put(f"{API}/webhook", json={"url": receiver.url, "format": "slack"}, headers=p.admin)
    await rows.deployment(p.ctx, "api", autoscaling={"min_replicas": 0})
    evaluator = AlertEvaluator(p.ctx, dispatcher=AlertDispatcher(p.ctx, retry_s=0.05))
    p.ctx.history.record(report("api", requests=40, errors=40), now=time.time())
    await evaluator.evaluate_once()
    await wait_until(lambda: len(receiver.received) == 5)
    assert "[FIRING] error_rate · api" in receiver.received[0].json["text"]
    assert len({r.headers["X-Nubis-Delivery"] for r in receiver.received}) == 1

    async def attempts() -> list[dict]:
        return (await p.http.get(f"{API}/deliveries", headers=p.admin)).json()

    deadline = time.monotonic() + 10
    while len(await attempts()) < 5 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    log = await attempts()
    assert [(d["attempt"], d["status_code"], d["ok"], d["error"]) for d in log] == [
        (n, 503, False, "HTTP 503") for n in (5, 4, 3, 2, 1)]
    await asyncio.sleep(0.3)
    assert len(receiver.received) == 5  # bounded: no sixth attempt
    await evaluator.shutdown()

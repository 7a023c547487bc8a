"""Alerts as a user drives them: a real `nubis up --alert-interval 2s`, `nubis alert …`, and a webhook
receiver on 127.0.0.1. A crash-looping deployment is notified once firing and once resolved (after an
update fixes it), signed; an always-500 handler fires error_rate within two evaluation intervals of
the minimum number of requests; a silence holds a notification back until it is deleted; a failed
job, a slow handler (latency_slo), a storage quota near full and a disk below its threshold are each
notified, signed; a receiver that is down gets retries and `nubis alert deliveries` says so. The
tests run in file order."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from webhook_receiver import WebhookReceiver, verify, webhook_receiver

from platform_process import PlatformProcess, nubis_up
from servers import free_port

pytestmark = pytest.mark.e2e
INTERVAL_S = 2.0
REPORT_S = 1.0  # the gateway reports its load each second
PHOTON = '''import nubis


class {cls}(nubis.Photon):
    resources = nubis.Resources(cpu=0.1, memory="128Mi")

    def init(self) -> None:
        {init}

    @nubis.handler
    def hello(self) -> str:
        {body}
'''


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    home = tmp_path_factory.mktemp("alerts") / "home"
    with nubis_up(home, "--alert-interval", f"{INTERVAL_S:g}s", "--alert-retry", "1s") as running:
        yield running


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


@pytest.fixture(scope="module")
def secret(platform: PlatformProcess, receiver: WebhookReceiver) -> str:
    out = ok(platform.cli("alert", "webhook", "set", receiver.url))
    assert "webhook set: http://127.0.0.1:" in out and "hooks/nubis" not in out
    return out.split("signing secret (shown once): ", 1)[1].split()[0]


def ok(result: Any) -> str:
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def photon(tmp: Path, name: str, *, init: str = "pass", body: str = 'return "hello"') -> Path:
    folder = tmp / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "photon.py").write_text(PHOTON.format(cls=name.title().replace("_", ""), init=init, body=body))
    return folder


def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.2)
    return found


def notified(receiver: WebhookReceiver, rule: str, obj: str, status: str | None = None) -> list[Any]:
    return [r for r in receiver.received if r.json.get("rule") == rule and r.json.get("object") == obj
            and (status is None or r.json["status"] == status)]


def alerts(platform: PlatformProcess) -> list[dict[str, Any]]:
    return json.loads(ok(platform.cli("alert", "list", "--output", "json")))


def test_a_crash_loop_is_notified_once_firing_and_once_resolved_signed(
        platform: PlatformProcess, receiver: WebhookReceiver, secret: str, tmp_path: Path) -> None:
    ok(platform.cli("photon", "push", str(photon(tmp_path, "crashy", init='raise SystemExit("bad config")'))))
    ok(platform.cli("deploy", "crashy:1", "--name", "crashy", "--no-wait"))
    [firing] = until(lambda: notified(receiver, "crash_loop", "crashy"), 120, "a crash_loop notification")
    assert verify(secret, firing.headers["X-Nubis-Signature"], firing.body)
    body = firing.json
    assert (body["version"], body["status"], body["workspace"]) == (1, "firing", "default")
    assert body["details"]["restarts"] >= 3 and "crashy" in body["summary"] and body["resolved_at"] is None
    listed = [a for a in alerts(platform) if a["rule"] == "crash_loop"]
    assert [(a["object"], a["state"]) for a in listed] == [("crashy", "firing")]

    fixed = photon(tmp_path / "v2", "crashy")
    ok(platform.cli("photon", "push", str(fixed)))
    ok(platform.cli("deployment", "update", "crashy", "--photon", "crashy:2"))
    until(lambda: notified(receiver, "crash_loop", "crashy", "resolved"), 120, "the resolved notification")
    time.sleep(3 * INTERVAL_S)  # a few more rounds: nothing more is sent
    sent = notified(receiver, "crash_loop", "crashy")
    assert [r.json["status"] for r in sent] == ["firing", "resolved"]
    resolved = sent[1]
    assert verify(secret, resolved.headers["X-Nubis-Signature"], resolved.body)
    assert resolved.json["started_at"] == body["started_at"] and resolved.json["resolved_at"]
    assert resolved.headers["X-Nubis-Delivery"] != firing.headers["X-Nubis-Delivery"]
    table = ok(platform.cli("alert", "list"))
    assert "crash_loop" in table and "resolved" in table


def test_an_always_500_handler_fires_error_rate_within_two_intervals(
        platform: PlatformProcess, receiver: WebhookReceiver, secret: str, tmp_path: Path) -> None:
    ok(platform.cli("photon", "push", str(photon(tmp_path, "fails", body='raise RuntimeError("always")'))))
    ok(platform.cli("deploy", "fails:1", "--name", "fails"))
    assert "min_requests=5" in ok(platform.cli("alert", "rules", "set", "error_rate", "min_requests=5"))
    rules = {r["name"]: r for r in json.loads(ok(platform.cli("alert", "rules", "--output", "json")))}
    assert rules["error_rate"]["overridden"] == ["min_requests"]
    auth = {"authorization": f"Bearer {platform.admin_token}"}
    url = f"{platform.gateway_url}/default/fails/hello"
    for _ in range(4):
        assert httpx.post(url, json={}, headers=auth, timeout=30).status_code == 500
    time.sleep(REPORT_S + 2 * INTERVAL_S)
    assert notified(receiver, "error_rate", "fails") == []  # 4 < min_requests
    assert httpx.post(url, json={}, headers=auth, timeout=30).status_code == 500
    reached = time.time()
    [firing] = until(lambda: notified(receiver, "error_rate", "fails"), 60, "an error_rate notification")
    started = datetime.fromisoformat(firing.json["started_at"]).timestamp()
    assert started - reached <= REPORT_S + 2 * INTERVAL_S + 0.5, (started - reached)
    assert firing.json["details"]["requests"] == 5 and firing.json["details"]["rate"] == 1.0
    assert verify(secret, firing.headers["X-Nubis-Signature"], firing.body)


def test_a_silence_holds_the_notification_until_it_is_deleted(
        platform: PlatformProcess, receiver: WebhookReceiver, secret: str) -> None:
    made = ok(platform.cli("alert", "silence", "crash_loop", "--object", "crashy2", "--for", "1h",
                           "--comment", "known bad config"))
    assert "silenced crash_loop on crashy2" in made
    silence_id = made.rsplit("(id ", 1)[1].rstrip(")\n")
    ok(platform.cli("deploy", "crashy:1", "--name", "crashy2", "--no-wait"))
    until(lambda: [a for a in alerts(platform) if a["object"] == "crashy2" and a["state"] == "firing"], 120,
          "crash_loop firing for crashy2")
    [listed] = [a for a in alerts(platform) if a["object"] == "crashy2"]
    assert listed["silenced"] is True
    time.sleep(2 * INTERVAL_S)
    assert notified(receiver, "crash_loop", "crashy2") == []
    silences = json.loads(ok(platform.cli("alert", "silence", "list", "--output", "json")))
    assert [(s["id"], s["comment"], s["active"]) for s in silences] == [
        (silence_id, "known bad config", True)]
    ok(platform.cli("alert", "silence", "delete", silence_id))
    [firing] = until(lambda: notified(receiver, "crash_loop", "crashy2"), 30,
                     "the notification after the silence")
    assert firing.json["status"] == "firing"
    ok(platform.cli("deployment", "delete", "crashy2", "--yes"))
    until(lambda: notified(receiver, "crash_loop", "crashy2", "resolved"), 60, "resolved once deleted")


def test_a_failed_job_is_notified_with_its_reason(
        platform: PlatformProcess, receiver: WebhookReceiver, secret: str) -> None:
    ok(platform.cli("job", "submit", "--name", "broken", "--no-code", "--cpu", "0.1", "--memory", "64Mi",
                    "--", "python", "-c", "raise SystemExit(3)"))
    [firing] = until(lambda: notified(receiver, "job_failed", "broken"), 90, "a job_failed notification")
    assert verify(secret, firing.headers["X-Nubis-Signature"], firing.body)
    assert firing.json["status"] == "firing" and "exited with code 3" in firing.json["summary"]
    job = json.loads(ok(platform.cli("job", "get", "broken", "--output", "json")))
    assert firing.json["details"]["job_id"] == job["id"] and job["status"] == "failed"


def test_a_slow_handler_fires_latency_slo(
        platform: PlatformProcess, receiver: WebhookReceiver, secret: str, tmp_path: Path) -> None:
    slow = photon(tmp_path, "slow", body='__import__("time").sleep(0.3); return "late"')
    ok(platform.cli("photon", "push", str(slow)))
    ok(platform.cli("deploy", "slow:1", "--name", "slow"))
    ok(platform.cli("alert", "rules", "set", "latency_slo", "p95_ms=100", "min_requests=5", "for=0s"))
    auth = {"authorization": f"Bearer {platform.admin_token}"}
    for _ in range(5):
        assert httpx.post(f"{platform.gateway_url}/default/slow/hello", json={}, headers=auth,
                          timeout=30).status_code == 200
    [firing] = until(lambda: notified(receiver, "latency_slo", "slow"), 60, "a latency_slo notification")
    assert verify(secret, firing.headers["X-Nubis-Signature"], firing.body)
    details = firing.json["details"]
    assert details["requests"] == 5 and details["p95_ms"] >= 300 and details["target_ms"] == 100
    ok(platform.cli("alert", "rules", "reset", "latency_slo", "p95_ms", "min_requests", "for"))
    until(lambda: notified(receiver, "latency_slo", "slow", "resolved"), 60,
          "resolved under the default target")
    ok(platform.cli("deployment", "delete", "slow", "--yes"))


def test_a_storage_quota_near_full_fires_and_resolves_when_files_go(
        platform: PlatformProcess, receiver: WebhookReceiver, secret: str, tmp_path: Path) -> None:
    ok(platform.cli("alert", "rules", "set", "quota_near_full", "for=0s"))
    ok(platform.cli("workspace", "quota", "default", "1Mi"))
    try:
        big = tmp_path / "big.bin"
        big.write_bytes(b"x" * 980_000)  # 93% of 1 MiB
        ok(platform.cli("storage", "put", str(big), "alerts/big.bin"))
        [firing] = until(lambda: notified(receiver, "quota_near_full", "storage"), 60,
                         "a quota_near_full notification")
        assert verify(secret, firing.headers["X-Nubis-Signature"], firing.body)
        assert firing.json["details"]["percent"] >= 90 and firing.json["details"]["quota"] == 2**20
        ok(platform.cli("storage", "rm", "alerts/big.bin"))
        until(lambda: notified(receiver, "quota_near_full", "storage", "resolved"), 60,
              "resolved once the file is gone")
    finally:
        ok(platform.cli("workspace", "quota", "default", "none"))
        ok(platform.cli("alert", "rules", "reset", "quota_near_full", "for"))


def test_disk_low_fires_on_the_platforms_folders_and_resolves(
        platform: PlatformProcess, receiver: WebhookReceiver, secret: str) -> None:
    # no disk is that free
    ok(platform.cli("alert", "rules", "set", "disk_low", "free_percent=100", "for=0s"))
    try:
        fired = until(lambda: [r for r in receiver.received if r.json.get("rule") == "disk_low"], 60,
                      "a disk_low notification")
        assert verify(secret, fired[0].headers["X-Nubis-Signature"], fired[0].body)
        assert fired[0].json["workspace"] == "default" and fired[0].json["details"]["free_bytes"] > 0
    finally:
        ok(platform.cli("alert", "rules", "reset", "disk_low", "free_percent", "for"))
    obj = fired[0].json["object"]
    until(lambda: notified(receiver, "disk_low", obj, "resolved"), 60, "resolved at the default threshold")


def test_a_receiver_that_is_down_gets_retries_and_the_log_says_so(platform: PlatformProcess) -> None:
    down = f"http://127.0.0.1:{free_port()}/hook"
    ok(platform.cli("alert", "webhook", "set", down, "--format", "slack"))
    shown = json.loads(ok(platform.cli("alert", "webhook", "show", "--output", "json")))
    assert shown["format"] == "slack" and shown["target"] == down.rsplit("/", 1)[0] + "/…"
    tested = platform.cli("alert", "test")
    assert tested.returncode == 1 and "not delivered" in tested.stdout
    ok(platform.cli("deployment", "delete", "fails", "--yes"))  # error_rate resolves: one notification

    def attempts() -> list[dict[str, Any]]:
        log = json.loads(ok(platform.cli("alert", "deliveries", "--output", "json")))
        return [d for d in log if d["rule"] == "error_rate" and d["status"] == "resolved"]

    log = until(lambda: len(attempts()) == 5 and attempts(), 90, "five attempts in the delivery log")
    assert [d["attempt"] for d in log] == [5, 4, 3, 2, 1] and len({d["delivery"] for d in log}) == 1
    assert all(not d["ok"] and d["status_code"] is None and "Connect" in d["error"] for d in log)
    gaps = [(datetime.fromisoformat(b["at"]) - datetime.fromisoformat(a["at"])).total_seconds()
            for a, b in zip(log[::-1], log[::-1][1:], strict=False)]
    assert gaps == sorted(gaps)  # backing off: each wait at least as long as the one before
    table = ok(platform.cli("alert", "deliveries"))
    assert "resolved" in table and "error_rate" in table
    ok(platform.cli("alert", "webhook", "delete"))
    gone = platform.cli("alert", "webhook", "show")
    assert gone.returncode == 1 and "(not_found)" in gone.stderr

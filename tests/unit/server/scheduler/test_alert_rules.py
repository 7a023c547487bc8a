"""The alert rules and state machine on hand-made snapshots: time is a number passed in, nothing sleeps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from nubis.errors import ValidationError
from nubis.server.scheduler.alerts import (
    RESOLVED_KEPT_S,
    AlertRecord,
    DeploymentFacts,
    DiskFacts,
    Finding,
    JobFacts,
    NodeFacts,
    QuotaFacts,
    Snapshot,
    Traffic,
    advance,
    effective,
    evaluate,
    parse_setting,
)

WS = "ws1"
BUCKETS_FAST = [100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]  # every request under 5 ms
BUCKETS_SLOW = [0, 0, 0, 0, 0, 0, 0, 0, 0, 100, 0, 0, 0]  # every request 2.5–5 s


def snap(overrides: dict[str, dict] | None = None, **facts: Sequence) -> Snapshot:
    return Snapshot(platform_workspace_id=WS, settings={WS: effective(overrides or {})}, **facts)


def never(alert: AlertRecord) -> bool:
    return False


class World:
    """Rounds of evaluate + advance with the states carried over, as the evaluator does."""

    def __init__(self, snapshot: Snapshot, silenced=never) -> None:
        self.snapshot = snapshot
        self.silenced = silenced
        self.states: dict[str, AlertRecord] = {}

    def round(self, now: float, findings: list[Finding] | None = None) -> list[tuple[str, str]]:
        found = evaluate(self.snapshot, now=now) if findings is None else findings
        step = advance(self.states.values(), found, snapshot=self.snapshot, silenced=self.silenced, now=now)
        for a in step.removed:
            self.states.pop(a.key, None)
        for a in step.changed:
            self.states[a.key] = a
        return [(n.status, n.alert.key) for n in step.notifications]

    def state(self, key: str) -> str | None:
        found = self.states.get(key)
        return found.state if found else None


def finding(rule: str = "latency_slo", obj: str = "web") -> Finding:
    return Finding(WS, rule, f"{rule}/{obj}", obj, f"{rule} on {obj}")


def test_pending_becomes_firing_only_after_for_and_is_notified_once() -> None:
    w = World(snap())  # latency_slo: for 60 s
    assert w.round(0, [finding()]) == [] and w.state("latency_slo/web") == "pending"
    assert w.round(59, [finding()]) == [] and w.state("latency_slo/web") == "pending"
    assert w.round(60, [finding()]) == [("firing", "latency_slo/web")]
    assert w.states["latency_slo/web"].started_at == 60
    assert w.round(75, [finding()]) == []


def test_a_pending_alert_whose_condition_goes_away_is_dropped_without_a_word() -> None:
    w = World(snap())
    w.round(0, [finding()])
    assert w.round(30, []) == [] and w.state("latency_slo/web") is None


def test_firing_then_resolved_then_back_is_a_new_alert() -> None:
    w = World(snap())
    w.round(0, [finding("crash_loop")])  # crash_loop: for 0 → fires at once
    assert w.state("crash_loop/web") == "firing"
    assert w.round(10, []) == [("resolved", "crash_loop/web")]
    assert w.states["crash_loop/web"].resolved_at == 10 and w.round(20, []) == []
    assert w.round(30, [finding("crash_loop")]) == [("firing", "crash_loop/web")]
    assert w.states["crash_loop/web"].started_at == 30 and w.states["crash_loop/web"].resolved_at is None
    w.round(40, [])
    w.round(40 + RESOLVED_KEPT_S + 1, [])
    assert w.state("crash_loop/web") is None  # forgotten a day after it resolved


def test_a_still_firing_alert_is_notified_again_every_repeat() -> None:
    w = World(snap({"crash_loop": {"repeat": 600.0}}))
    sent = [t for t in range(0, 1900, 15) if w.round(t, [finding("crash_loop")])]
    assert sent == [0, 600, 1200, 1800]


def test_one_alert_per_rule_and_object() -> None:
    w = World(snap())
    found = [finding("crash_loop", "a"), finding("crash_loop", "b"), finding("error_rate", "a")]
    assert len(w.round(0, found)) == 3
    assert w.round(15, found) == []
    assert World(snap()).round(0, [found[0], found[0]]) == [("firing", "crash_loop/a")]
    assert sorted(w.states) == ["crash_loop/a", "crash_loop/b", "error_rate/a"]


def test_a_silence_holds_notifications_back_and_its_end_lets_them_through() -> None:
    silent = {"on": True}
    w = World(snap(), silenced=lambda a: silent["on"] and a.rule == "crash_loop")
    assert w.round(0, [finding("crash_loop"), finding("error_rate")]) == [("firing", "error_rate/web")]
    assert w.state("crash_loop/web") == "firing"  # still listed
    silent["on"] = False
    assert w.round(15, [finding("crash_loop"), finding("error_rate")]) == [("firing", "crash_loop/web")]
    silent["on"] = True
    assert w.round(30, [finding("error_rate")]) == []  # its resolution is silenced too


def test_an_alert_silenced_all_along_resolves_without_a_notification() -> None:
    w = World(snap(), silenced=lambda a: True)
    w.round(0, [finding("crash_loop")])
    w.round(15, [finding("crash_loop")])
    assert w.round(30, []) == [] and w.state("crash_loop/web") == "resolved"


def test_crash_loop_counts_restarts_of_live_replicas_in_the_window() -> None:
    now = 10_000.0
    dep = DeploymentFacts(WS, "web", crash_times=[now - 700, now - 300, now - 5])  # one is out of 10 min
    assert evaluate(snap(deployments=[dep]), now=now) == []
    dep = DeploymentFacts(WS, "web", crash_times=[now - 500, now - 300, now - 5])
    [f] = evaluate(snap(deployments=[dep]), now=now)
    assert (f.rule, f.object, f.details["restarts"]) == ("crash_loop", "web", 3)
    assert evaluate(snap({"crash_loop": {"restarts": 4}}, deployments=[dep]), now=now) == []
    assert evaluate(snap({"crash_loop": {"enabled": False}}, deployments=[dep]), now=now) == []


def test_error_rate_needs_the_minimum_of_requests_and_the_share() -> None:
    few = DeploymentFacts(WS, "api", [], errors=Traffic(19, 19, BUCKETS_FAST))
    low = DeploymentFacts(WS, "api", [], errors=Traffic(100, 4, BUCKETS_FAST))
    bad = DeploymentFacts(WS, "api", [], errors=Traffic(100, 5, BUCKETS_FAST))
    assert evaluate(snap(deployments=[few]), now=0) == [] and evaluate(snap(deployments=[low]), now=0) == []
    [f] = evaluate(snap(deployments=[bad]), now=0)
    assert f.rule == "error_rate" and f.details["rate"] == 0.05
    assert evaluate(snap({"error_rate": {"rate": 0.5}}, deployments=[bad]), now=0) == []


def test_latency_slo_reads_p95_from_the_histogram() -> None:
    fast = DeploymentFacts(WS, "api", [], latency=Traffic(100, 0, BUCKETS_FAST))
    slow = DeploymentFacts(WS, "api", [], latency=Traffic(100, 0, BUCKETS_SLOW))
    assert evaluate(snap(deployments=[fast]), now=0) == []
    [f] = evaluate(snap(deployments=[slow]), now=0)
    assert f.rule == "latency_slo" and 2500 < f.details["p95_ms"] <= 5000
    assert evaluate(snap({"latency_slo": {"p95_ms": 6000.0}}, deployments=[slow]), now=0) == []


def test_jobs_nodes_quotas_and_disks() -> None:
    s = snap(failed_jobs=[JobFacts(WS, "j1", "train", finished_at=0, reason="exit 1"),
                          JobFacts(WS, "j2", "old", finished_at=-4000, reason="exit 1")],
             nodes=[NodeFacts("n1", True, "node 10.0.0.2 was lost"), NodeFacts("n2", False, "up")],
             quotas=[QuotaFacts(WS, "cpu", 9, 10), QuotaFacts(WS, "gpu", 1, 2),
                     QuotaFacts(WS, "storage", 95, 100)],
             disks=[DiskFacts("storage", "/data", free_bytes=5, total_bytes=100),
                    DiskFacts("home", "/home", free_bytes=50, total_bytes=100)])
    keys = sorted(f.key for f in evaluate(s, now=10))
    assert keys == ["disk_low/storage", "job_failed/j1", "node_lost/n1", "quota_near_full/cpu",
                    "quota_near_full/storage"]


@pytest.mark.parametrize(("rule", "key", "value"), [
    ("error_rate", "rate", "0"), ("error_rate", "rate", "1.5"), ("error_rate", "window", "5s"),
    ("error_rate", "for", "-1m"), ("crash_loop", "restarts", "0"), ("crash_loop", "repeat", "10s"),
    ("disk_low", "free_percent", "101"), ("node_lost", "window", "1h"), ("nope", "for", "1m"),
    ("latency_slo", "p95_ms", "nan"), ("latency_slo", "p95_ms", "fast"), ("job_failed", "enabled", "maybe"),
])
def test_bad_settings_are_refused_with_what_is_allowed(rule: str, key: str, value: str) -> None:
    with pytest.raises(ValidationError):
        parse_setting(rule, key, value)


def test_settings_read_durations_numbers_and_booleans() -> None:
    assert parse_setting("error_rate", "window", "10m") == 600
    assert parse_setting("error_rate", "for", "0s") == 0
    assert parse_setting("latency_slo", "p95_ms", "250") == 250
    assert parse_setting("disk_low", "enabled", "off") is False


def test_after_a_restart_a_metric_alert_is_not_resolved_before_the_history_covers_its_window() -> None:
    before = AlertRecord(WS, "error_rate/api", "error_rate", "api", "firing", since=100, summary="5xx",
                         started_at=100, last_notified_at=100)
    crash = replace(before, key="crash_loop/api", rule="crash_loop")
    restarted = replace(snap(), history_since=1000)  # the control plane started again at 1000
    step = advance([before, crash], [], snapshot=restarted, silenced=never, now=1010)
    assert [(n.status, n.alert.key) for n in step.notifications] == [("resolved", "crash_loop/api")]
    step = advance([before], [], snapshot=restarted, silenced=never, now=1000 + 300)  # a whole window
    assert [(n.status, n.alert.key) for n in step.notifications] == [("resolved", "error_rate/api")]
    fired_since = replace(before, since=1005, started_at=1005)  # fired on the new history: it can resolve
    step = advance([fired_since], [], snapshot=restarted, silenced=never, now=1010)
    assert [n.status for n in step.notifications] == ["resolved"]

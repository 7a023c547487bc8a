"""Alert rules and their state machine: pure functions of a snapshot and ``now``.

``evaluate(snapshot, settings, now)`` says which conditions hold (a :class:`Finding` per rule and
object); ``advance(states, findings, ...)`` moves each alert pending → firing → resolved and says
which notifications to send. Neither reads a clock, the database or the network, so both are tested
on fake snapshots (see ``tests/unit/server/scheduler/test_alert_rules.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from nubis.errors import ValidationError
from nubis.models.durations import parse_duration
from nubis.server.services.metric_history import percentile_ms

RESOLVED_KEPT_S = 24 * 3600.0
"""A resolved alert stays listed this long, then is forgotten."""
MAX_DURATION_S = 365 * 86400  # a rule's for, repeat and window
DURATION_KEYS = frozenset({"for", "repeat", "window"})


@dataclass(frozen=True)
class RuleDefinition:
    name: str
    description: str
    defaults: Mapping[str, float | bool]


COMMON = {"enabled": True, "repeat": 4 * 3600.0}
RULES: dict[str, RuleDefinition] = {r.name: r for r in (
    RuleDefinition("crash_loop", "a deployment's live replicas restarted `restarts` times within `window`",
                   {**COMMON, "for": 0.0, "restarts": 3, "window": 600.0}),
    RuleDefinition("error_rate", "a deployment's share of 5xx answers over `window` is at least `rate`, "
                   "with at least `min_requests` requests", {**COMMON, "for": 0.0, "rate": 0.05,
                                                             "min_requests": 20, "window": 300.0}),
    RuleDefinition("latency_slo", "a deployment's p95 latency over `window` is above `p95_ms`, with at least "
                   "`min_requests` requests", {**COMMON, "for": 60.0, "p95_ms": 1000.0, "min_requests": 20,
                                                 "window": 300.0}),
    RuleDefinition("job_failed", "a job failed (listed for `window` after it ended)",
                   {**COMMON, "for": 0.0, "window": 3600.0}),
    RuleDefinition("node_lost", "a node of the cluster was lost (until it joins again)",
                   {**COMMON, "for": 0.0}),
    RuleDefinition("quota_near_full", "what a workspace holds is at least `percent` % of a quota "
                   "(CPU, memory, GPU, storage)", {**COMMON, "for": 300.0, "percent": 90.0}),
    RuleDefinition("disk_low", "the free space of the storage folder or of NUBIS_HOME is below "
                   "`free_percent` %", {**COMMON, "for": 60.0, "free_percent": 10.0}),
)}
PLATFORM_RULES = frozenset({"node_lost", "disk_low"})
METRIC_RULES = frozenset({"error_rate", "latency_slo"})
"""Read from the metric history, which a restart empties: until it covers their window, their firing
alerts are neither confirmed nor resolved."""
"""About the whole platform: raised in the platform admin's workspace (``default``)."""


def parse_setting(rule: str, key: str, value: str | float | bool) -> float | bool:
    """A user's ``key=value`` for ``rule``, checked: 422 with what is allowed."""
    definition = get_rule_or_raise(rule)
    if key not in definition.defaults:
        raise ValidationError(f"rule {rule} has no setting {key!r}; it has: {', '.join(definition.defaults)}")
    if key == "enabled":
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return str(value).strip().lower() in ("true", "yes", "on", "1")
        raise ValidationError(f"{rule}.enabled must be true or false, not {str(value)[:40]!r}")
    if isinstance(value, bool):
        raise ValidationError(f"{rule}.{key} must be a number, not {value}")
    name = f"{rule}.{key}"
    number = (parse_duration(value, name=name, high=MAX_DURATION_S) if key in DURATION_KEYS
              else _number(rule, key, value))
    if key == "rate" and not 0 < number <= 1:
        raise ValidationError(f"{rule}.rate is a share of requests: more than 0 and at most 1, e.g. 0.05")
    if key in ("percent", "free_percent") and not 0 < number <= 100:
        raise ValidationError(f"{rule}.{key} must be more than 0 and at most 100")
    if key in ("restarts", "min_requests") and (number != int(number) or number < 1):
        raise ValidationError(f"{rule}.{key} must be a whole number of at least 1")
    if key == "repeat" and number < 60:
        raise ValidationError(f"{rule}.repeat must be at least 60s (how often a firing alert is resent)")
    if key == "window" and number < 10:
        raise ValidationError(f"{rule}.window must be at least 10s")
    return number


def _number(rule: str, key: str, value: str | float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValidationError(f"{rule}.{key} must be a number, not {str(value)[:40]!r}") from None
    if number != number or number in (float("inf"), float("-inf")) or number <= 0:
        raise ValidationError(f"{rule}.{key} must be a positive number, not {str(value)[:40]!r}")
    return number


def get_rule_or_raise(rule: str) -> RuleDefinition:
    found = RULES.get(rule)
    if found is None:
        raise ValidationError(f"unknown rule {rule[:64]!r}; the rules are: {', '.join(RULES)}")
    return found


def effective(overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every rule's settings: nubis's defaults with a workspace's overrides (unknown keys dropped)."""
    return {name: {**d.defaults, **{k: v for k, v in overrides.get(name, {}).items() if k in d.defaults}}
            for name, d in RULES.items()}


# --- the snapshot ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Traffic:
    """A deployment's totals over a rule's window: requests, 5xx, latency bucket counts."""

    requests: int
    errors: int
    buckets: Sequence[int]


@dataclass(frozen=True)
class DeploymentFacts:
    workspace_id: str
    name: str
    crash_times: Sequence[float]
    """When each live (not stopped) replica crashed: the reconciler keeps the last ten per replica."""
    errors: Traffic | None = None
    """Over the error_rate window; None: no traffic recorded."""
    latency: Traffic | None = None
    """Over the latency_slo window."""


@dataclass(frozen=True)
class JobFacts:
    workspace_id: str
    id: str
    name: str
    finished_at: float
    reason: str


@dataclass(frozen=True)
class NodeFacts:
    id: str
    lost: bool
    message: str


@dataclass(frozen=True)
class QuotaFacts:
    workspace_id: str
    resource: str
    used: float
    quota: float


@dataclass(frozen=True)
class DiskFacts:
    label: str
    path: str
    free_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class Snapshot:
    platform_workspace_id: str
    settings: Mapping[str, Mapping[str, Mapping[str, Any]]]
    """workspace id → rule → effective settings (a workspace missing here: the defaults)."""
    deployments: Sequence[DeploymentFacts] = ()
    failed_jobs: Sequence[JobFacts] = ()
    nodes: Sequence[NodeFacts] = ()
    quotas: Sequence[QuotaFacts] = ()
    disks: Sequence[DiskFacts] = ()
    history_since: float | None = None
    """When the metric history started filling (it is in memory: the control plane's start)."""

    def rule(self, workspace_id: str, rule: str) -> Mapping[str, Any]:
        return self.settings.get(workspace_id, {}).get(rule) or RULES[rule].defaults


@dataclass(frozen=True)
class Finding:
    """A rule's condition holds for an object now."""

    workspace_id: str
    rule: str
    key: str
    object: str
    summary: str
    details: Mapping[str, Any] = field(default_factory=dict)


# --- the rules ------------------------------------------------------------------------------------


def evaluate(snapshot: Snapshot, *, now: float) -> list[Finding]:
    found: list[Finding] = []
    for dep in snapshot.deployments:
        found += _deployment_findings(snapshot, dep, now)
    for job in snapshot.failed_jobs:
        s = snapshot.rule(job.workspace_id, "job_failed")
        if s["enabled"] and now - job.finished_at <= s["window"]:
            found.append(Finding(job.workspace_id, "job_failed", f"job_failed/{job.id}", job.name,
                                 f"job {job.name} failed: {job.reason}"[:500], {"job_id": job.id}))
    found += _platform_findings(snapshot)
    for q in snapshot.quotas:
        s = snapshot.rule(q.workspace_id, "quota_near_full")
        share = 100 * q.used / q.quota if q.quota > 0 else 0.0
        if s["enabled"] and share >= s["percent"]:
            found.append(Finding(q.workspace_id, "quota_near_full", f"quota_near_full/{q.resource}",
                                 q.resource,
                                 f"{q.resource} use is {share:.0f}% of the workspace's quota",
                                 {"used": q.used, "quota": q.quota, "percent": round(share, 1)}))
    return found


def _deployment_findings(snapshot: Snapshot, dep: DeploymentFacts, now: float) -> list[Finding]:
    found = []
    ws = dep.workspace_id
    s = snapshot.rule(ws, "crash_loop")
    if s["enabled"] and dep.crash_times:
        crashes = sum(1 for t in dep.crash_times if t >= now - s["window"])
        if crashes >= s["restarts"]:
            found.append(Finding(ws, "crash_loop", f"crash_loop/{dep.name}", dep.name,
                                 f"deployment {dep.name}: {crashes} replica restarts in the last "
                                 f"{_span(s['window'])}", {"restarts": crashes, "window_s": s["window"]}))
    s = snapshot.rule(ws, "error_rate")
    t = dep.errors
    if (s["enabled"] and t is not None and t.requests >= s["min_requests"]
            and t.errors >= s["rate"] * t.requests):
        found.append(Finding(ws, "error_rate", f"error_rate/{dep.name}", dep.name,
                             f"deployment {dep.name}: {t.errors / t.requests:.0%} of {t.requests} requests "
                             f"answered 5xx in the last {_span(s['window'])}",
                             {"requests": t.requests, "errors": t.errors,
                              "rate": round(t.errors / t.requests, 4), "window_s": s["window"]}))
    s = snapshot.rule(ws, "latency_slo")
    t = dep.latency
    if s["enabled"] and t is not None and t.requests >= s["min_requests"]:
        p95 = percentile_ms(list(t.buckets), 0.95)
        if p95 is not None and p95 > s["p95_ms"]:
            found.append(Finding(ws, "latency_slo", f"latency_slo/{dep.name}", dep.name,
                                 f"deployment {dep.name}: p95 latency {p95:.0f} ms over the last "
                                 f"{_span(s['window'])} (target {s['p95_ms']:g} ms)",
                                 {"p95_ms": round(p95, 1), "target_ms": s["p95_ms"], "requests": t.requests}))
    return found


def _platform_findings(snapshot: Snapshot) -> list[Finding]:
    ws = snapshot.platform_workspace_id
    found = []
    if snapshot.rule(ws, "node_lost")["enabled"]:
        found += [Finding(ws, "node_lost", f"node_lost/{n.id}", n.id, n.message[:500])
                  for n in snapshot.nodes if n.lost]
    s = snapshot.rule(ws, "disk_low")
    for d in snapshot.disks if s["enabled"] else ():
        free = 100 * d.free_bytes / d.total_bytes if d.total_bytes else 100.0
        if free < s["free_percent"]:
            found.append(Finding(ws, "disk_low", f"disk_low/{d.label}", d.label,
                                 f"{d.label} ({d.path}) has {free:.1f}% free "
                                 f"({d.free_bytes / 2**30:.1f} GiB)",
                                 {"path": d.path, "free_bytes": d.free_bytes, "total_bytes": d.total_bytes}))
    return found


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


# --- the state machine ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertRecord:
    """One alert's state (a row of ``alert_states`` as data)."""

    workspace_id: str
    key: str
    rule: str
    object: str
    state: str
    since: float
    summary: str
    details: Mapping[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    resolved_at: float | None = None
    last_notified_at: float | None = None


@dataclass(frozen=True)
class Notification:
    status: str  # firing or resolved
    alert: AlertRecord


@dataclass(frozen=True)
class Step:
    changed: list[AlertRecord]
    """Records to write (new or moved)."""
    removed: list[AlertRecord]
    """Records to delete: a pending alert whose condition went away, or a resolved one past keeping."""
    notifications: list[Notification]


Silenced = Callable[[AlertRecord], bool]


def advance(states: Iterable[AlertRecord], findings: Iterable[Finding], *, snapshot: Snapshot,
            silenced: Silenced, now: float) -> Step:
    """One evaluation round: each alert's next state, and what to notify (none while silenced; a
    firing one again every ``repeat``; a resolved one only if its firing was notified)."""
    current = {(a.workspace_id, a.key): a for a in states}
    seen = set()
    step = Step([], [], [])
    for f in findings:
        if (f.workspace_id, f.key) in seen:  # the same rule and object twice: one alert
            continue
        seen.add((f.workspace_id, f.key))
        _holds(step, current.get((f.workspace_id, f.key)), f, snapshot.rule(f.workspace_id, f.rule),
               silenced, now)
    for k, a in current.items():
        if k in seen or _blind(snapshot, a, now):
            continue
        if a.state == "pending":
            step.removed.append(a)
        elif a.state == "firing":
            done = replace(a, state="resolved", since=now, resolved_at=now)
            if a.last_notified_at is not None and not silenced(done):
                step.notifications.append(Notification("resolved", done))
            step.changed.append(done)
        elif a.state == "resolved" and now - a.since > RESOLVED_KEPT_S:
            step.removed.append(a)
    return step


def _blind(snapshot: Snapshot, a: AlertRecord, now: float) -> bool:
    """A metric rule's alert still firing from before a restart, while the history is shorter than
    the rule's window: its absence from the findings says nothing yet."""
    since = snapshot.history_since
    if a.rule not in METRIC_RULES or a.state != "firing" or since is None or a.since >= since:
        return False
    return now - since < snapshot.rule(a.workspace_id, a.rule)["window"]


def _holds(step: Step, a: AlertRecord | None, f: Finding, rule: Mapping[str, Any], silenced: Silenced,
           now: float) -> None:
    old = a
    if a is None or a.state not in ("pending", "firing"):  # new, or back after it resolved
        a = AlertRecord(f.workspace_id, f.key, f.rule, f.object, "pending", now, f.summary, dict(f.details))
    else:
        a = replace(a, summary=f.summary, details=dict(f.details), object=f.object)
    if a.state == "pending" and now - a.since >= rule["for"]:
        a = replace(a, state="firing", since=now, started_at=now)
    if a.state == "firing" and not silenced(a) and (
            a.last_notified_at is None or now - a.last_notified_at >= rule["repeat"]):
        a = replace(a, last_notified_at=now)
        step.notifications.append(Notification("firing", a))
    if a != old:
        step.changed.append(a)

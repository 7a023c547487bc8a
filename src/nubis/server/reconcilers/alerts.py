"""The alert evaluator: every ``--alert-interval`` (15 s), load a snapshot (a short session), measure
disks and storage (no session), run the pure rules and state machine (``scheduler.alerts``), write the
alerts that moved (a short session) and hand notifications to the dispatcher (never waited on)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.models.deployments import ReplicaStatus
from nubis.models.jobs import JobStatus
from nubis.server.context import ServerContext
from nubis.server.orm import (
    AlertRuleSettingsRow,
    AlertSilenceRow,
    AlertStateRow,
    DeploymentRow,
    JobRow,
    NodeEventRow,
    ReplicaRow,
    WorkspaceRow,
)
from nubis.server.scheduler.alerts import (
    AlertRecord,
    DeploymentFacts,
    DiskFacts,
    JobFacts,
    NodeFacts,
    Notification,
    QuotaFacts,
    Silenced,
    Snapshot,
    Step,
    Traffic,
    advance,
    effective,
    evaluate,
)
from nubis.server.services.alert_delivery import AlertDispatcher, Message
from nubis.server.services.metric_history import MetricStore
from nubis.server.services.usage import quota_use
from nubis.server.services.workspaces import DEFAULT_WORKSPACE

log = logging.getLogger("nubis.reconciler.alerts")
SLOW_ROUND_S = 2.0


@dataclass
class Loaded:
    """What one round reads from the database."""

    workspaces: dict[str, WorkspaceRow]
    overrides: dict[str, dict[str, dict]]
    deployments: list[tuple[DeploymentRow, list[float]]]
    failed_jobs: list[JobRow]
    nodes: list[NodeFacts]
    quotas: list[QuotaFacts]
    states: list[AlertRecord]
    silences: list[AlertSilenceRow]


def ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def dt(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def record_of(row: AlertStateRow) -> AlertRecord:
    return AlertRecord(workspace_id=row.workspace_id, key=row.key, rule=row.rule, object=row.object,
                       state=row.state, since=row.since.timestamp(), summary=row.summary,
                       details=row.details or {}, started_at=ts(row.started_at),
                       resolved_at=ts(row.resolved_at), last_notified_at=ts(row.last_notified_at))


async def load(session: AsyncSession, *, now: float) -> Loaded:
    workspaces = {w.id: w for w in (await session.scalars(select(WorkspaceRow))).all()}
    overrides: dict[str, dict[str, dict]] = {}
    for o in (await session.scalars(select(AlertRuleSettingsRow))).all():
        overrides.setdefault(o.workspace_id, {})[o.rule] = o.settings or {}
    crashes: dict[str, list[float]] = {}
    replicas = await session.execute(select(ReplicaRow.deployment_id, ReplicaRow.crash_times)
                                     .where(ReplicaRow.status != ReplicaStatus.stopped.value))
    for dep_id, times in replicas.all():
        crashes.setdefault(dep_id, []).extend(times or [])
    deps = (await session.scalars(select(DeploymentRow).where(DeploymentRow.deleting.is_(False)))).all()
    oldest = max((s["window"] for o in [*overrides.values(), {}] for s in effective(o).values()
                  if "window" in s), default=3600.0)
    failed = (await session.scalars(select(JobRow).where(
        JobRow.status == JobStatus.failed.value, JobRow.finished_at >= dt(now - oldest)))).all()
    return Loaded(workspaces=workspaces, overrides=overrides,
                  deployments=[(d, crashes.get(d.id, [])) for d in deps], failed_jobs=list(failed),
                  nodes=await node_facts(session), quotas=await quota_facts(session),
                  states=[record_of(r) for r in (await session.scalars(select(AlertStateRow))).all()],
                  silences=list((await session.scalars(select(AlertSilenceRow).where(
                      AlertSilenceRow.until > dt(now)))).all()))


async def node_facts(session: AsyncSession) -> list[NodeFacts]:
    """Each node as its last joined/lost event left it."""
    last: dict[str, NodeEventRow] = {}
    rows = await session.scalars(select(NodeEventRow).where(NodeEventRow.kind.in_(("joined", "lost")))
                                 .order_by(NodeEventRow.id))
    for row in rows.all():
        last[row.node_id] = row
    return [NodeFacts(node_id, row.kind == "lost", row.message) for node_id, row in last.items()]


async def quota_facts(session: AsyncSession) -> list[QuotaFacts]:
    """What each workspace's jobs hold against its CPU, memory and GPU quotas."""
    ids = {w.name: w.id for w in (await session.scalars(select(WorkspaceRow))).all()}
    found = []
    for use in await quota_use(session, None):
        for resource, quota, used in (("cpu", use.cpu_quota, use.jobs.cpu),
                                      ("memory", use.memory_quota, use.jobs.memory),
                                      ("gpu", use.gpu_quota, use.jobs.gpu)):
            if quota:
                found.append(QuotaFacts(ids[use.workspace], resource, float(used), float(quota)))
    return found


def disk_facts(home: Path, storage: str) -> list[DiskFacts]:
    """The storage folder and NUBIS_HOME (once if they share a file system); S3 has no such limit."""
    found: list[DiskFacts] = []
    seen: set[int] = set()
    for label, path in (("storage", None if storage.startswith("s3://") else Path(storage)), ("home", home)):
        if path is None or not path.exists():
            continue
        device = path.stat().st_dev
        if device in seen:
            continue
        seen.add(device)
        usage = shutil.disk_usage(path)
        found.append(DiskFacts(label, str(path), usage.free, usage.total))
    return found


def traffic(history: MetricStore, workspace: str, name: str, *, window: float, now: float) -> Traffic | None:
    totals = history.totals(workspace, name, since_s=window, now=now)
    return None if totals is None else Traffic(totals[0], totals[1], totals[2:])


def snapshot_of(loaded: Loaded, history: MetricStore, *, disks: Sequence[DiskFacts],
                storage_quotas: Sequence[QuotaFacts], now: float,
                history_since: float | None = None) -> Snapshot:
    settings = {ws: effective(loaded.overrides.get(ws, {})) for ws in loaded.workspaces}
    platform = next((w.id for w in loaded.workspaces.values() if w.name == DEFAULT_WORKSPACE),
                    next(iter(loaded.workspaces), ""))
    deployments = []
    for dep, crash_times in loaded.deployments:
        ws = loaded.workspaces.get(dep.workspace_id)
        if ws is None:
            continue
        rules = settings[ws.id]
        errors_s, latency_s = rules["error_rate"]["window"], rules["latency_slo"]["window"]
        errors = traffic(history, ws.name, dep.name, window=errors_s, now=now)
        latency = errors if latency_s == errors_s else traffic(history, ws.name, dep.name, window=latency_s,
                                                               now=now)
        deployments.append(DeploymentFacts(ws.id, dep.name, crash_times, errors=errors, latency=latency))
    jobs = [JobFacts(j.workspace_id, j.id, j.name, j.finished_at.timestamp(),
                     j.reason or "no reason recorded")
            for j in loaded.failed_jobs if j.finished_at is not None]
    return Snapshot(platform_workspace_id=platform, settings=settings, deployments=deployments,
                    failed_jobs=jobs, nodes=loaded.nodes, quotas=[*loaded.quotas, *storage_quotas],
                    disks=disks, history_since=history_since)


def silencer(silences: Sequence[AlertSilenceRow], *, now: float) -> Silenced:
    active = [s for s in silences if s.until.timestamp() > now]

    def silenced(alert: AlertRecord) -> bool:
        return any(s.workspace_id == alert.workspace_id and s.rule in (None, alert.rule)
                   and s.object in (None, alert.object) for s in active)

    return silenced


def message_of(n: Notification, workspace: str) -> Message:
    a = n.alert
    return Message(workspace_id=a.workspace_id, workspace=workspace, status=n.status, rule=a.rule,
                   object=a.object, key=a.key, summary=a.summary, details=dict(a.details),
                   started_at=dt(a.started_at), resolved_at=dt(a.resolved_at))


class AlertEvaluator:
    def __init__(self, ctx: ServerContext, *, dispatcher: AlertDispatcher | None = None) -> None:
        self.ctx = ctx
        self.interval_s = ctx.settings.alert_interval_s
        self.dispatcher = dispatcher or AlertDispatcher(ctx)

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.evaluate_once()
            except Exception:
                log.exception("alert evaluation round failed; retrying")
            took = time.monotonic() - started
            if took > SLOW_ROUND_S:
                log.warning("alert evaluation round took %.1f s", took)
            await asyncio.sleep(max(0.0, self.interval_s - took))

    async def evaluate_once(self, now: float | None = None) -> Step:
        now = time.time() if now is None else now
        async with self.ctx.db.sessions() as session:
            loaded = await load(session, now=now)
        disks = await asyncio.to_thread(disk_facts, self.ctx.settings.home, self.ctx.settings.storage)
        storage = await asyncio.to_thread(self._storage_quotas, loaded)
        snapshot = snapshot_of(loaded, self.ctx.history, disks=disks, storage_quotas=storage, now=now,
                               history_since=self.ctx.history.covered_since)
        step = advance(loaded.states, evaluate(snapshot, now=now), snapshot=snapshot,
                       silenced=silencer(loaded.silences, now=now), now=now)
        async with self.ctx.db.sessions() as session:
            await apply(session, step)
        for n in step.notifications:
            ws = loaded.workspaces.get(n.alert.workspace_id)
            if ws is not None:
                self.dispatcher.submit(message_of(n, ws.name))
        return step

    def _storage_quotas(self, loaded: Loaded) -> list[QuotaFacts]:
        return [QuotaFacts(w.id, "storage", float(self.ctx.store.files(w.name).usage()),
                           float(w.storage_quota_bytes))
                for w in loaded.workspaces.values() if w.storage_quota_bytes]

    async def shutdown(self) -> None:
        await self.dispatcher.shutdown()


async def apply(session: AsyncSession, step: Step) -> None:
    for a in step.changed:
        row = await session.get(AlertStateRow, (a.workspace_id, a.key))
        if row is None:
            row = AlertStateRow(workspace_id=a.workspace_id, key=a.key)
            session.add(row)
        row.rule, row.object, row.state, row.since = a.rule, a.object[:200], a.state, dt(a.since)
        row.summary, row.details = a.summary[:1024], dict(a.details)
        row.started_at, row.resolved_at = dt(a.started_at), dt(a.resolved_at)
        row.last_notified_at = dt(a.last_notified_at)
    for a in step.removed:
        await session.execute(delete(AlertStateRow).where(AlertStateRow.workspace_id == a.workspace_id,
                                                          AlertStateRow.key == a.key))
    await session.commit()

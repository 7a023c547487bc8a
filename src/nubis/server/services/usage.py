"""Usage: which replica or job worker held which resources from when to when (``usage_intervals``),
and the resource-seconds per workspace, deployment or job (and UTC day) in a window.

Recording happens at status changes only: a replica holds its resources from its launch
(``starting``) until it leaves the statuses with a process (``stopped``, ``failed``, ``crash_loop``,
``pending``); a job worker from the launch of its gang until its status leaves ``running``. The
status setters are synchronous, so they queue the change on the session and it is written in the
same flush (a ``before_flush`` hook on that session): the interval and the status commit together.
A control plane that crashed changes no status, so the intervals of what it adopts stay open; what
it finds gone is switched to ``failed`` (replicas) or seen exited (workers) and closed then; at each
start the reconcilers also close the open intervals of whatever no longer runs (``close_gone``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import event, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session as SyncSession

from nubis.errors import ForbiddenError
from nubis.models.deployments import ReplicaStatus
from nubis.models.jobs import WorkerStatus
from nubis.models.resources import Resources
from nubis.models.usage import Prices, QuotaUse, Usage, UsageBy, UsageKind, UsageRow
from nubis.server.deps import Caller
from nubis.server.orm import (
    DeploymentRow,
    JobRow,
    JobWorkerRow,
    ReplicaRow,
    UsageIntervalRow,
    WorkspaceRow,
    utcnow,
)
from nubis.server.services.nodes import node_of

R = ReplicaStatus
HOLDING = frozenset({R.starting, R.ready, R.draining, R.stopping, R.unknown})
"""A replica in these statuses has (or may have) a process holding its resources."""
GIB = 2**30
_QUEUE = "nubis.usage"


@dataclass(frozen=True)
class _Open:
    unit_id: str
    build: Callable[[SyncSession], UsageIntervalRow | None]


@dataclass(frozen=True)
class _Close:
    unit_id: str
    at: datetime


def replica_moved(session: AsyncSession, replica: ReplicaRow, old: ReplicaStatus, new: ReplicaStatus) -> None:
    """``switch_replica_status`` calls this: open an interval at the launch, close it at the end."""
    if (old in HOLDING) == (new in HOLDING):
        return
    at = replica.updated_at
    if new not in HOLDING:
        _queue(session).append(_Close(replica.id, at))
        return

    def build(sync: SyncSession) -> UsageIntervalRow | None:
        deployment = sync.get(DeploymentRow, replica.deployment_id)
        if deployment is None:
            return None
        resources = Resources.model_validate((deployment.spec or {}).get("resources") or {})
        return _row(UsageKind.replica, workspace_id=deployment.workspace_id, name=deployment.name,
                    object_id=deployment.id, unit_id=replica.id, handle=replica.handle,
                    resources=resources, at=at)

    _queue(session).append(_Open(replica.id, build))


def worker_started(session: AsyncSession, job: JobRow, worker: JobWorkerRow, resources: Resources,
                   *, at: datetime) -> None:
    """A job worker was launched (its gang started)."""
    row = _row(UsageKind.job, workspace_id=job.workspace_id, name=job.name, object_id=job.id,
               unit_id=worker.id, handle=worker.handle, resources=resources, at=at)
    _queue(session).append(_Open(worker.id, lambda _: row))


def worker_stopped(session: AsyncSession, worker: JobWorkerRow, *, at: datetime) -> None:
    """A job worker's status left ``running`` (it exited, or its gang was stopped)."""
    _queue(session).append(_Close(worker.id, at))


def _row(kind: UsageKind, *, workspace_id: str, name: str, object_id: str, unit_id: str,
         handle: dict[str, Any] | None, resources: Resources, at: datetime) -> UsageIntervalRow:
    return UsageIntervalRow(workspace_id=workspace_id, kind=kind.value, object_name=name, object_id=object_id,
                            unit_id=unit_id, node=node_of(handle), cpu=resources.cpu,
                            memory_gib=resources.memory / GIB, gpu=resources.gpu, started_at=at)


def _queue(session: AsyncSession) -> list[_Open | _Close]:
    sync = session.sync_session
    if not event.contains(sync, "before_flush", _apply):
        event.listen(sync, "before_flush", _apply)
        event.listen(sync, "after_soft_rollback", _forget)
    queued: list[_Open | _Close] = sync.info.setdefault(_QUEUE, [])
    return queued


def _forget(sync: SyncSession, previous_transaction: Any) -> None:
    sync.info.pop(_QUEUE, None)


def _apply(sync: SyncSession, flush_context: Any, instances: Any) -> None:
    """Write the queued changes in this flush. A unit opened and closed within one flush (a launch
    that failed at once) leaves no interval; opening one that is already open is a no-op."""
    opened: dict[str, UsageIntervalRow] = {}
    for change in sync.info.pop(_QUEUE, []):
        if isinstance(change, _Open):
            if change.unit_id in opened or sync.scalar(select(exists().where(
                    UsageIntervalRow.unit_id == change.unit_id, UsageIntervalRow.stopped_at.is_(None)))):
                continue
            row = change.build(sync)
            if row is not None:
                sync.add(row)
                opened[change.unit_id] = row
            continue
        pending = opened.pop(change.unit_id, None)
        if pending is not None:
            sync.expunge(pending)
            continue
        sync.execute(update(UsageIntervalRow)
                     .where(UsageIntervalRow.unit_id == change.unit_id, UsageIntervalRow.stopped_at.is_(None))
                     .values(stopped_at=change.at).execution_options(synchronize_session=False))


async def close_gone(session: AsyncSession, kind: UsageKind, *, at: datetime) -> int:
    """At a start: close the open intervals of ``kind`` whose replica or worker no longer holds
    anything (its row is gone, or its status was changed by a writer that does not record usage,
    such as a restore); how many."""
    if kind == UsageKind.replica:  # a replica left stopping by a crash is not adopted: gone too
        adoptable = [s.value for s in HOLDING - {R.stopping}]
        holding = select(ReplicaRow.id).where(ReplicaRow.status.in_(adoptable))
    else:
        holding = select(JobWorkerRow.id).where(JobWorkerRow.status == WorkerStatus.running.value)
    closed = await session.execute(
        update(UsageIntervalRow)
        .where(UsageIntervalRow.kind == kind.value, UsageIntervalRow.stopped_at.is_(None),
               UsageIntervalRow.unit_id.not_in(holding))
        .values(stopped_at=at).execution_options(synchronize_session=False))
    return int(getattr(closed, "rowcount", 0) or 0)


@dataclass(frozen=True)
class Interval:
    """One interval as the report reads it (``stopped_at`` None: still running)."""

    workspace: str
    kind: UsageKind
    name: str
    cpu: float
    memory_gib: float
    gpu: int
    started_at: datetime
    stopped_at: datetime | None


def _pieces(interval: Interval, *, since: datetime, until: datetime,
            daily: bool) -> Iterator[tuple[date | None, float]]:
    """(UTC day or None, seconds) of the interval inside [since, until], split at midnights if daily."""
    start = max(interval.started_at, since)
    end = min(interval.stopped_at or until, until)
    while start < end:
        if not daily:
            yield None, (end - start).total_seconds()
            return
        midnight = datetime.combine(start.date() + timedelta(days=1), time(), tzinfo=UTC)
        cut = min(end, midnight)
        yield start.date(), (cut - start).total_seconds()
        start = cut


def summarize(intervals: Iterable[Interval], *, since: datetime, until: datetime, by: UsageBy,
              daily: bool, prices: Prices | None) -> tuple[list[UsageRow], UsageRow]:
    """Resource-seconds per group (and day): a pure function of the intervals and the window."""
    groups: dict[tuple[str, UsageKind | None, str | None, date | None], list[float]] = defaultdict(
        lambda: [0.0, 0.0, 0.0])
    for interval in intervals:
        kind, name = (None, None) if by == UsageBy.workspace else (interval.kind, interval.name)
        for day, seconds in _pieces(interval, since=since, until=until, daily=daily):
            sums = groups[(interval.workspace, kind, name, day)]
            sums[0] += interval.cpu * seconds
            sums[1] += interval.memory_gib * seconds
            sums[2] += interval.gpu * seconds
    rows = [_priced(UsageRow(workspace=ws, kind=kind, name=name, day=day, cpu_seconds=s[0],
                             memory_gib_seconds=s[1], gpu_seconds=s[2]), prices)
            for (ws, kind, name, day), s in groups.items()]
    rows.sort(key=lambda r: (r.workspace, r.kind or "", r.name or "", r.day or date.min))
    total = _priced(UsageRow(workspace="*", cpu_seconds=sum(r.cpu_seconds for r in rows),
                             memory_gib_seconds=sum(r.memory_gib_seconds for r in rows),
                             gpu_seconds=sum(r.gpu_seconds for r in rows)), prices)
    return rows, total


def _priced(row: UsageRow, prices: Prices | None) -> UsageRow:
    if prices is None:
        return row
    row.cost = prices.cost(cpu_seconds=row.cpu_seconds, memory_gib_seconds=row.memory_gib_seconds,
                           gpu_seconds=row.gpu_seconds)
    return row


async def get_usage(session: AsyncSession, caller: Caller, *, since: datetime, by: UsageBy, daily: bool,
                    all_workspaces: bool, prices: Prices | None, now: datetime | None = None) -> Usage:
    """The caller's workspace (every workspace with ``all_workspaces``: the platform admin only)."""
    if all_workspaces and not caller.superuser:
        raise ForbiddenError("only the platform admin token can read every workspace's usage; "
                             "leave out all_workspaces for your own")
    until = now or utcnow()
    r = UsageIntervalRow  # columns, not ORM objects: a month of intervals loads several times faster
    query = (select(WorkspaceRow.name, r.kind, r.object_name, r.cpu, r.memory_gib, r.gpu, r.started_at,
                    r.stopped_at)
             .join(WorkspaceRow, WorkspaceRow.id == r.workspace_id)
             .where(r.started_at < until, r.stopped_at.is_(None) | (r.stopped_at > since)))
    if not all_workspaces:
        query = query.where(r.workspace_id == caller.workspace_id)
    if by != UsageBy.workspace:
        kind = UsageKind.replica if by == UsageBy.deployment else UsageKind.job
        query = query.where(r.kind == kind.value)
    found = (await session.execute(query)).all()
    intervals = [Interval(ws, UsageKind(k), name, cpu, memory_gib, gpu, started, stopped)
                 for ws, k, name, cpu, memory_gib, gpu, started, stopped in found]
    rows, total = summarize(intervals, since=since, until=until, by=by, daily=daily, prices=prices)
    return Usage(since=since, until=until, by=by, daily=daily, rows=rows, total=total,
                 quotas=await quota_use(session, None if all_workspaces else caller.workspace_id))


async def quota_use(session: AsyncSession, workspace_id: str | None) -> list[QuotaUse]:
    """Each workspace's job quota beside what its open intervals hold now (all when ``None``)."""
    query = select(WorkspaceRow).order_by(WorkspaceRow.name)
    held = select(UsageIntervalRow).where(UsageIntervalRow.stopped_at.is_(None))
    if workspace_id is not None:
        query = query.where(WorkspaceRow.id == workspace_id)
        held = held.where(UsageIntervalRow.workspace_id == workspace_id)
    uses = {w.id: QuotaUse(workspace=w.name, cpu_quota=w.cpu_quota, memory_quota=w.memory_quota,
                           gpu_quota=w.gpu_quota) for w in (await session.scalars(query)).all()}
    for row in (await session.scalars(held)).all():
        use = uses.get(row.workspace_id)
        if use is None:
            continue
        held = use.jobs if row.kind == UsageKind.job.value else use.replicas
        held.cpu += row.cpu
        held.memory += round(row.memory_gib * GIB)
        held.gpu += row.gpu
    return list(uses.values())

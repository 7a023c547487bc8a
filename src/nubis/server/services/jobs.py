"""Jobs: requests record intent (the spec, a queue position); the reconciler in
``server/reconcilers/jobs.py`` admits, starts, watches, retries and stops them."""

from __future__ import annotations

import asyncio
import re
import time
import zipfile
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.backends.base import LogsCapability, ReplicaHandle
from nubis.errors import ConflictError, NotFoundError, ValidationError
from nubis.models.jobs import (
    TERMINAL_JOB_STATUSES,
    Job,
    JobEvent,
    JobSpec,
    JobStatus,
    MetricsReport,
    Worker,
    job_outputs_path,
)
from nubis.models.limits import check_code_archive
from nubis.models.resources import Resources
from nubis.server.context import ServerContext
from nubis.server.deps import Caller
from nubis.server.orm import JobEventRow, JobRow, JobWorkerRow, TokenRow, WorkspaceRow, new_id, utcnow
from nubis.server.scheduler.admission import Demand, Quota, beyond_quota
from nubis.server.scheduler.jobs import check_job_transition
from nubis.server.scheduler.placement import never_placeable
from nubis.server.services import audit, secrets
from nubis.server.services.nodes import node_of

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
ACTIVE = tuple(s.value for s in JobStatus if s not in TERMINAL_JOB_STATUSES)
MAX_HISTORY = 10_000
FOLLOW_POLL_S = 0.5


def event(session: AsyncSession, job_id: str, kind: str, message: str) -> None:
    session.add(JobEventRow(job_id=job_id, kind=kind, message=message[:2048]))


def switch_job_status(session: AsyncSession, job: JobRow, new: JobStatus, reason: str | None = None) -> None:
    """The one writer of ``JobRow.status``: checks the move, keeps the reason, records an event."""
    old = JobStatus(job.status)
    if old == new and job.reason == reason:
        return
    check_job_transition(old, new)
    job.status = new.value
    job.reason = reason[:2048] if reason else None
    job.updated_at = utcnow()
    if new == JobStatus.running and job.started_at is None:
        job.started_at = utcnow()
    if new in TERMINAL_JOB_STATUSES:
        job.finished_at = utcnow()
    event(session, job.id, "status", f"{old.value} → {new.value}" + (f": {reason}" if reason else ""))


def to_model(row: JobRow, workers: list[JobWorkerRow]) -> Job:
    spec = JobSpec.model_validate(row.spec)
    return Job(
        id=row.id, name=row.name, status=row.status, reason=row.reason, kind=row.kind,
        command=spec.command, requirements=spec.requirements, workers=spec.workers, spread=spec.spread,
        node_selector=spec.node_selector,
        resources=spec.resources, priority=row.priority, attempt=row.attempt, max_retries=spec.max_retries,
        worker_status=[
            Worker(rank=w.rank, status=w.status, exit_code=w.exit_code, reason=w.reason,
                   node=node_of(w.handle))
            for w in sorted(workers, key=lambda w: w.rank) if w.attempt == row.attempt
        ],
        metrics=row.metrics or {}, history=row.history or [], model=row.model_ref,
        outputs=job_outputs_path(row.id) if row.attempt else None,
        created_at=row.created_at, started_at=row.started_at, finished_at=row.finished_at,
    )


async def workers_of(session: AsyncSession, job: JobRow) -> list[JobWorkerRow]:
    return list((await session.scalars(
        select(JobWorkerRow).where(JobWorkerRow.job_id == job.id, JobWorkerRow.attempt == job.attempt)
    )).all())


async def get_row_or_raise(session: AsyncSession, caller: Caller, ref: str) -> JobRow:
    """A job of the caller's workspace by id, or the latest one with that name."""
    query = select(JobRow).where(JobRow.workspace_id == caller.workspace_id)
    if JOB_ID.match(ref):
        row = await session.scalar(query.where(JobRow.id == ref))
    else:
        latest = query.where(JobRow.name == ref).order_by(JobRow.created_at.desc()).limit(1)
        row = await session.scalar(latest)
    if row is None:
        raise NotFoundError(f"job {ref!r} not found in workspace {caller.workspace!r}")
    return row


def check_gang_fits(ctx: ServerContext, spec: JobSpec) -> None:
    """Refuse a gang that could never run here, whatever else finishes."""
    r = spec.resources
    why = never_placeable(ctx.backend.nodes(), Demand(cpu=r.cpu, memory=r.memory, gpu=r.gpu), spec.workers,
                          spread=spec.spread, selector=spec.node_selector)
    if why:
        raise ValidationError(
            f"the job's workers need more than this platform has: {why}; "
            "ask for fewer workers or smaller resources",
            details={"workers": spec.workers, "resources": r.model_dump()},
        )


async def check_gang_within_quota(
    session: AsyncSession, caller: Caller, resources: Resources, workers: int
) -> None:
    """Refuse a gang its workspace's quota could never hold, even with nothing else running."""
    ws = await session.get(WorkspaceRow, caller.workspace_id)
    if ws is None:
        return
    quota = Quota(cpu=ws.cpu_quota, memory=ws.memory_quota, gpu=ws.gpu_quota)
    per_worker = Demand(cpu=resources.cpu, memory=resources.memory, gpu=resources.gpu)
    why = beyond_quota(caller.workspace, workers, per_worker, quota)
    if why is not None:
        raise ValidationError(
            f"the job can never run within its workspace's quota: {why}; ask for fewer workers or "
            "smaller resources, or ask an admin to raise the quota (`nubis workspace quota`)",
            details={"workers": workers, "resources": resources.model_dump(),
                     "quota": {"cpu": ws.cpu_quota, "memory": ws.memory_quota, "gpu": ws.gpu_quota}},
        )


def _check_code(ctx: ServerContext, caller: Caller, code: str | None) -> None:
    """The code archive is in storage, is a zip, and stays within the limits once unpacked."""
    if code is None:
        return
    try:
        fh, size = ctx.store.files(caller.workspace).open_sized(code)
    except NotFoundError:
        raise ValidationError(f"the job's code archive {code!r} is not in storage: upload it first") from None
    try:
        with fh, zipfile.ZipFile(fh) as zf:  # reads the central directory only
            check_code_archive(zf.infolist(), archive_size=size)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValidationError(f"the job's code archive {code!r} is not a zip file: {exc}") from None
    except ValueError as exc:
        raise ValidationError(str(exc), details={"code": code}) from None


async def create(
    session: AsyncSession, ctx: ServerContext, caller: Caller, spec: JobSpec, *,
    kind: str = "command", purpose: dict[str, Any] | None = None,
) -> Job:
    """Queue a job; the reconciler admits it when its gang fits."""
    check_gang_fits(ctx, spec)
    await check_gang_within_quota(session, caller, spec.resources, spec.workers)
    await secrets.check_exist(session, caller, spec.secrets)
    _check_code(ctx, caller, spec.code)
    row = JobRow(
        workspace_id=caller.workspace_id, kind=kind, spec=spec.model_dump(mode="json"), purpose=purpose,
        status=JobStatus.queued.value, reason="waiting for admission", priority=spec.priority,
        seq=time.time_ns(), attempt=0, failures=0, cancel_requested=False, metrics={}, history=[],
        created_by=caller.token_id,
    )
    row.id = new_id()  # the column default only fills in at flush
    row.name = spec.name or f"{kind}-{row.id[:8]}"
    if spec.name:
        active = await session.scalar(select(JobRow.id).where(
            JobRow.workspace_id == caller.workspace_id, JobRow.name == spec.name, JobRow.status.in_(ACTIVE)))
        if active is not None:
            raise ConflictError(f"job {spec.name!r} is still active: cancel it (`nubis job cancel "
                                f"{spec.name}`) or choose another name")
    session.add(row)
    await session.flush()
    event(session, row.id, "created",
          f"{spec.workers} worker(s) × {spec.resources.cpu:g} CPU: {' '.join(spec.command)[:400]}"
          + (f"; requirements: {', '.join(spec.requirements)[:400]}" if spec.requirements else ""))
    audit.record(session, caller, "job.create", row.name, {"id": row.id, "kind": kind})
    await session.commit()
    return to_model(row, [])


def _listed(caller: Caller, status: str | None, name: str | None) -> Select[tuple[JobRow]]:
    query = select(JobRow).where(JobRow.workspace_id == caller.workspace_id)
    if status:
        query = query.where(JobRow.status == status)
    if name:
        query = query.where(JobRow.name.contains(name, autoescape=True))
    return query


async def list_jobs(session: AsyncSession, caller: Caller, *, status: str | None = None,
                    name: str | None = None, limit: int = 100, offset: int = 0) -> list[Job]:
    """The newest first; ``name``: a part of the name; ``offset``: how many to skip (pages)."""
    query = _listed(caller, status, name).order_by(JobRow.created_at.desc(), JobRow.id)
    rows = (await session.scalars(query.limit(limit).offset(offset))).all()
    workers: dict[str, list[JobWorkerRow]] = {r.id: [] for r in rows}
    if rows:
        for w in (await session.scalars(select(JobWorkerRow).where(JobWorkerRow.job_id.in_(workers)))).all():
            workers[w.job_id].append(w)
    return [to_model(r, workers[r.id]) for r in rows]


async def count_jobs(session: AsyncSession, caller: Caller, *, status: str | None = None,
                     name: str | None = None) -> int:
    """How many jobs :func:`list_jobs` pages through with the same filters."""
    return await session.scalar(_listed(caller, status, name).with_only_columns(func.count())) or 0


async def get(session: AsyncSession, caller: Caller, ref: str) -> Job:
    row = await get_row_or_raise(session, caller, ref)
    return to_model(row, await workers_of(session, row))


async def cancel(session: AsyncSession, caller: Caller, ref: str) -> Job:
    row = await get_row_or_raise(session, caller, ref)
    if JobStatus(row.status) in TERMINAL_JOB_STATUSES:
        raise ConflictError(f"job {row.name!r} already ended ({row.status}); nothing to cancel")
    if not row.cancel_requested:
        row.cancel_requested = True
        event(session, row.id, "cancel", f"cancel requested by {caller.actor}")
        audit.record(session, caller, "job.cancel", row.name, {"id": row.id})
        await session.commit()
    return to_model(row, await workers_of(session, row))


async def events(session: AsyncSession, caller: Caller, ref: str, *, limit: int = 100) -> list[JobEvent]:
    row = await get_row_or_raise(session, caller, ref)
    rows = (await session.scalars(
        select(JobEventRow).where(JobEventRow.job_id == row.id).order_by(JobEventRow.id.desc()).limit(limit)
    )).all()
    return [JobEvent(at=e.at, kind=e.kind, message=e.message) for e in reversed(rows)]


async def logs(session: AsyncSession, ctx: ServerContext, caller: Caller, ref: str, *,
               worker: int, tail: int, attempt: int | None = None) -> list[str]:
    """The last lines of one worker's output (of the current attempt, or the one asked for)."""
    row = await get_row_or_raise(session, caller, ref)
    check_worker(row, worker)
    wanted = attempt if attempt is not None else row.attempt
    found = await session.scalar(select(JobWorkerRow).where(
        JobWorkerRow.job_id == row.id, JobWorkerRow.attempt == wanted, JobWorkerRow.rank == worker))
    if found is None or found.handle is None or not isinstance(ctx.backend, LogsCapability):
        return []
    return ctx.backend.read_logs(ReplicaHandle.from_dict(found.handle), tail=tail)


def check_worker(row: JobRow, worker: int) -> None:
    workers = JobSpec.model_validate(row.spec).workers
    if worker >= workers:
        raise ValidationError(f"job {row.name!r} has workers 0..{workers - 1}, not {worker}")


async def report_metrics(session: AsyncSession, caller: Caller, ref: str, report: MetricsReport) -> None:
    """A worker's metrics (the trainer: each epoch): kept as the latest, appended to the history."""
    row = await get_row_or_raise(session, caller, ref)
    if JobStatus(row.status) in TERMINAL_JOB_STATUSES:
        raise ConflictError(f"job {row.name!r} already ended ({row.status}); metrics are closed")
    record = report.model_dump(mode="json", exclude_none=True)
    row.metrics = record
    history = list(row.history or [])
    if len(history) < MAX_HISTORY:
        history.append(record)
    row.history = history
    await session.commit()


async def revoke_job_token(session: AsyncSession, job: JobRow) -> None:
    if job.token_id is None:
        return
    token = await session.get(TokenRow, job.token_id)
    if token is not None and token.revoked_at is None:
        token.revoked_at = utcnow()
    job.token_id = None


async def follow_logs(ctx: ServerContext, job_id: str, *, worker: int, tail: int) -> AsyncIterator[str]:
    """One worker's output as it is written, across attempts, until the job ends. Waits (quietly)
    while the job is queued. Opens its own sessions: it outlives the request's."""
    if not isinstance(ctx.backend, LogsCapability):
        return
    attempt = 0
    while True:
        async with ctx.db.sessions() as session:
            job = await session.get(JobRow, job_id)
            if job is None:
                return
            found = await session.scalar(select(JobWorkerRow).where(
                JobWorkerRow.job_id == job_id, JobWorkerRow.attempt == job.attempt,
                JobWorkerRow.rank == worker))
            ended = JobStatus(job.status) in TERMINAL_JOB_STATUSES
        if found is not None and found.handle is not None and found.attempt > attempt:
            attempt = found.attempt
            if attempt > 1:
                yield f"--- attempt {attempt} ---"
            # each attempt's workers write their own log: read each from its start (up to `tail`)
            async for line in ctx.backend.follow_logs(ReplicaHandle.from_dict(found.handle), tail=tail):
                yield line
            continue
        if ended:
            return
        await asyncio.sleep(FOLLOW_POLL_S)

"""What ``/metrics`` reads from the database at each scrape: the job queue by workspace and reason,
replicas by status, and the workers of unfinished jobs by status (grouped in SQL: one row per group)."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.models.jobs import JobStatus
from nubis.server.metrics import PlatformCounts
from nubis.server.orm import JobRow, JobWorkerRow, ReplicaRow, WorkspaceRow
from nubis.server.services.jobs import ACTIVE

# A queued job's reason is a sentence for people (numbers included); its label is one of a few
# words, found from how the reconciler and the admission policy start their sentences.
QUEUE_REASONS = (
    ("waiting for admission", "new"),
    ("waiting for capacity", "capacity"),
    ("workspace quota", "quota"),
    ("exceeds workspace quota", "quota"),
    ("can never fit", "never_fits"),
    ("preempted", "preempted"),
    ("the platform stopped", "platform_stopped"),
    ("building a virtualenv", "environment"),
)
RETRY = "retry"
CANCELLING = "cancelling"
OTHER = "other"


def queue_reason(reason: str | None, *, retry_wait: bool, cancelling: bool) -> str:
    """The ``reason`` label of a queued job: ``retry`` while it waits out a retry's backoff."""
    if cancelling:
        return CANCELLING
    if retry_wait:
        return RETRY
    for start, label in QUEUE_REASONS:
        if (reason or "").startswith(start):
            return label
    return OTHER


async def counts(session: AsyncSession, *, now: float) -> PlatformCounts:
    retry_wait = func.coalesce(JobRow.next_start_at > now, False)
    queue = await session.execute(
        select(WorkspaceRow.name, JobRow.reason, retry_wait, JobRow.cancel_requested, func.count())
        .join(WorkspaceRow, WorkspaceRow.id == JobRow.workspace_id)
        .where(JobRow.status == JobStatus.queued.value)
        .group_by(WorkspaceRow.name, JobRow.reason, retry_wait, JobRow.cancel_requested)
    )
    queued: Counter[tuple[str, str]] = Counter()
    for workspace, reason, waits, cancelling, n in queue.all():
        queued[(workspace, queue_reason(reason, retry_wait=bool(waits), cancelling=cancelling))] += n
    replicas = await session.execute(select(ReplicaRow.status, func.count()).group_by(ReplicaRow.status))
    workers = await session.execute(
        select(JobWorkerRow.status, func.count())
        .join(JobRow, (JobRow.id == JobWorkerRow.job_id) & (JobRow.attempt == JobWorkerRow.attempt))
        .where(JobRow.status.in_(ACTIVE))
        .group_by(JobWorkerRow.status)
    )
    return PlatformCounts(queued=dict(queued), replicas={s: n for s, n in replicas.all()},
                          workers={s: n for s, n in workers.all()})

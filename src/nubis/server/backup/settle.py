"""A restored database says what ran when the backup was taken; nothing of it runs in the new home.

Before the restored platform first starts, its workloads are set as a platform that stopped would
leave them: replicas that had a process are failed (no handle, due to start at once), so the
deployment reconciler starts new ones; running jobs go back to the queue and resume from their
checkpoints (as after a clean ``nubis up`` stop); jobs that were stopping reach the end they
were stopping for. No handle of the old platform's processes survives to be adopted. Their usage
intervals end at the backup's time: the last moment they are known to have run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from nubis.models.deployments import ReplicaStatus
from nubis.models.jobs import JobStatus, WorkerStatus
from nubis.server.db import Database
from nubis.server.orm import JobRow, ReplicaRow, UsageIntervalRow
from nubis.server.services import jobs
from nubis.server.services.jobs import switch_job_status
from nubis.server.services.replicas import switch_replica_status

R = ReplicaStatus
J = JobStatus
WITH_PROCESS = (R.starting, R.ready, R.draining, R.unknown)
RESTORED = "restored from a backup"


@dataclass(frozen=True)
class Settled:
    replicas_restarted: int
    jobs_requeued: int


async def settle(db: Database, *, backed_up_at: datetime, now: float | None = None) -> Settled:
    now = time.time() if now is None else now
    async with db.sessions() as session:
        await session.execute(update(UsageIntervalRow).where(UsageIntervalRow.stopped_at.is_(None))
                              .values(stopped_at=backed_up_at).execution_options(synchronize_session=False))
        replicas = (await session.scalars(
            select(ReplicaRow).where(ReplicaRow.status.in_([*WITH_PROCESS, R.stopping])))).all()
        restarted = 0
        for replica in replicas:
            if replica.status == R.stopping:
                switch_replica_status(session, replica, R.stopped, f"{RESTORED}; it was stopping")
            else:
                switch_replica_status(session, replica, R.failed, f"{RESTORED}; started again")
                replica.next_start_at = now
                restarted += 1
            replica.handle = None
            replica.endpoint = None
        active = (await session.scalars(
            select(JobRow).where(JobRow.status.in_([J.running.value, J.stopping.value])))).all()
        requeued = 0
        for job in active:
            for worker in await jobs.workers_of(session, job):
                if worker.status == WorkerStatus.running.value:
                    worker.status = WorkerStatus.stopped.value
            if job.status == J.running.value:
                switch_job_status(session, job, J.queued, f"{RESTORED}; it resumes from its last checkpoint")
            else:
                outcome = J(job.stop_outcome or J.failed.value)
                job.stop_outcome = None
                switch_job_status(session, job, outcome, job.reason)
            requeued += job.status == J.queued.value
            await jobs.revoke_job_token(session, job)
        await session.commit()
    return Settled(restarted, requeued)

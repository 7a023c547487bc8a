"""Make jobs so: admit queued gangs, start their workers, watch them, retry, preempt, stop.

Each round probes the workers of running jobs (a local probe: no network), applies gang semantics
(one worker failed → stop the others, retry from the checkpoint or fail), then asks the admission
policy (``scheduler/admission.py``) which queued jobs start and which running ones make room.
Stopping a gang runs as a task of its own; the job waits in ``stopping`` until its workers are gone.
A control plane that crashed adopts running workers; one stopped cleanly stops them and requeues
their jobs, which resume from their checkpoints at the next start.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.backends.base import JobsCapability, ReplicaHandle, ReplicaProbe
from nubis.errors import NubisError
from nubis.models.jobs import JobSpec, JobStatus, WorkerStatus, job_outputs_path
from nubis.models.storage import format_bytes
from nubis.models.usage import UsageKind
from nubis.server.context import ServerContext
from nubis.server.orm import JobRow, JobWorkerRow, WorkspaceRow, utcnow
from nubis.server.reconcilers.job_environments import JobEnvironments
from nubis.server.reconcilers.job_starts import GangOrder, JobStarts
from nubis.server.scheduler.admission import (
    AdmissionSnapshot,
    Demand,
    QueuedJob,
    Quota,
    RunningJob,
    decide_admissions,
)
from nubis.server.scheduler.jobs import (
    WorkerExit,
    describe_exit,
    gang_outcome,
    retry_delay,
    retry_or_fail,
)
from nubis.server.scheduler.placement import Strategy, views
from nubis.server.services import jobs, models, usage
from nubis.server.services.job_outputs import save_outputs
from nubis.server.services.jobs import event, switch_job_status
from nubis.server.services.nodes import node_of

log = logging.getLogger("nubis.reconciler.jobs")

J = JobStatus
ACTIVE = (J.queued.value, J.running.value, J.stopping.value)
STOP_GRACE_S = 10.0
ERROR_LINES = 15
SWEEP_EVERY_S = 600.0


class JobReconciler:
    def __init__(self, ctx: ServerContext, *, interval_s: float = 0.25) -> None:
        if not isinstance(ctx.backend, JobsCapability):
            raise TypeError(f"backend {ctx.backend.name!r} cannot run jobs")
        self.ctx = ctx
        self.backend: JobsCapability = ctx.backend
        self.interval_s = interval_s
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._swept_at = 0.0
        self.starts = JobStarts(ctx, self.backend)
        self.environments = JobEnvironments(self.backend)

    async def run(self) -> None:
        await self.adopt()
        while True:
            try:
                with self.ctx.metrics.reconciler_round("jobs"):
                    await self.reconcile_once()
                if time.time() - self._swept_at > SWEEP_EVERY_S:
                    self._swept_at = time.time()
                    await asyncio.to_thread(self.backend.sweep_jobs, now=self._swept_at)
            except Exception:
                log.exception("job reconciler round failed; retrying")
            await asyncio.sleep(self.interval_s)

    async def adopt(self) -> None:
        """After a crash: workers still running are ours again; finished ones left their exit code."""
        async with self.ctx.db.sessions() as session:
            active = (await session.scalars(select(JobRow).where(JobRow.status.in_(ACTIVE[1:])))).all()
            for job in active:
                for worker in await jobs.workers_of(session, job):
                    if worker.handle and worker.status == WorkerStatus.running.value:
                        await self.ctx.backend.adopt(ReplicaHandle.from_dict(worker.handle))
                if job.status == J.running.value:
                    event(session, job.id, "adopted", "the control plane restarted; workers adopted")
            await usage.close_gone(session, UsageKind.job, at=utcnow())
            await session.commit()

    async def shutdown(self) -> None:
        """``nubis up`` stopping: stop every gang; running jobs are queued again (they resume from
        their checkpoints at the next start)."""
        async with self.ctx.db.sessions() as session:
            running = (await session.scalars(select(JobRow).where(JobRow.status == J.running.value))).all()
            for job in running:
                self._begin_stop(session, job, J.queued, "the platform stopped; it resumes at the next start")
            await session.commit()
            for job in running:
                self._spawn_stop(job.id)
        if self._stopping:
            await asyncio.gather(*self._stopping.values(), return_exceptions=True)

    async def reconcile_once(self) -> None:
        probes = await self._probe_workers()
        async with self.ctx.db.sessions() as session:
            active = list((await session.scalars(select(JobRow).where(JobRow.status.in_(ACTIVE)))).all())
            for job in active:
                try:
                    if job.status == J.stopping.value:
                        self._spawn_stop(job.id)
                    elif job.status == J.running.value:
                        await self._watch(session, job, probes)
                    elif job.status == J.queued.value and job.cancel_requested:
                        switch_job_status(session, job, J.cancelled, "cancelled before it started")
                except Exception:  # one bad job never stalls the others
                    log.exception("watching job %s failed; retrying next round", job.id)
            await session.commit()
            if any(j.status == J.stopping.value for j in active):
                return  # a gang still holds what it is giving back: admit once it is free
            orders = await self._admit(session, [j for j in active
                                                 if j.status in (J.queued.value, J.running.value)])
            await session.commit()
        if orders:
            await self._launch(orders)

    async def _launch(self, orders: list[GangOrder]) -> None:
        """Start the planned gangs (no session held), then record them, each in its own try."""
        results = await asyncio.gather(*(self.starts.launch(o) for o in orders))
        unwanted: list[ReplicaHandle] = []
        for result in results:
            try:
                async with self.ctx.db.sessions() as session:
                    unwanted += await self.starts.apply(session, result)
                    await session.commit()
            except Exception:
                log.exception("recording the start of job %s failed; stopping its workers",
                              result.order.job_id)
                unwanted += result.handles
        await asyncio.gather(*(self.ctx.backend.stop_replica(h, grace_s=1.0) for h in unwanted),
                             return_exceptions=True)

    async def _probe_workers(self) -> dict[str, ReplicaProbe]:
        """Every running worker's probe, taken with no session held (a backend may ask the network)."""
        async with self.ctx.db.sessions() as session:
            rows = (await session.scalars(select(JobWorkerRow).join(JobRow, JobRow.id == JobWorkerRow.job_id)
                                          .where(JobRow.status == J.running.value,
                                                 JobWorkerRow.attempt == JobRow.attempt))).all()
            handles = {w.id: ReplicaHandle.from_dict(w.handle or {}) for w in rows}
        found = await asyncio.gather(*(self.ctx.backend.probe(h) for h in handles.values()),
                                     return_exceptions=True)
        return {wid: p for wid, p in zip(handles, found, strict=True) if isinstance(p, ReplicaProbe)}

    async def _watch(self, session: AsyncSession, job: JobRow, probes: dict[str, ReplicaProbe]) -> None:
        spec = JobSpec.model_validate(job.spec)
        if job.cancel_requested:
            self._begin_stop(session, job, J.cancelled, "cancelled by a user")
            return
        started = job.attempt_started_at
        if spec.timeout_s and started and time.time() - started > spec.timeout_s:
            self._begin_stop(session, job, J.failed, f"timed out after {spec.timeout_s:g} s")
            return
        workers = await jobs.workers_of(session, job)
        if any(w.id not in probes for w in workers):
            return  # started after this round's probes were taken
        exits, lines, lost = [], {}, {}
        for worker in workers:
            probe = probes[worker.id]
            exits.append(WorkerExit(worker.rank, probe.alive, probe.exit_code))
            lines[worker.rank] = probe.last_error_lines
            if probe.node_lost:
                lost[worker.rank] = probe.node_lost
        outcome = gang_outcome(exits)
        if not outcome.done:
            return
        for worker, exit_ in zip(sorted(workers, key=lambda w: w.rank), sorted(exits, key=lambda e: e.rank),
                                 strict=True):
            if not exit_.alive:
                worker.exit_code = exit_.exit_code
                done = WorkerStatus.succeeded if exit_.exit_code == 0 else WorkerStatus.failed
                if worker.status == WorkerStatus.running.value:
                    usage.worker_stopped(session, worker, at=utcnow())
                worker.status = done.value
        if outcome.succeeded:
            await self._finish(session, job)
            return
        assert outcome.failed_rank is not None
        cause = describe_exit(outcome.failed_rank, outcome.exit_code)
        if lost:  # the machine went away, not the script: node_lost, retried from the checkpoint
            rank, why = min(lost.items())
            cause = f"node_lost: worker {rank}'s node was lost ({why})"
        tail = [ln for ln in lines.get(outcome.failed_rank, []) if ln.strip()][-ERROR_LINES:]
        job.failures += 1
        target = retry_or_fail(failures=job.failures, max_retries=spec.max_retries)
        if target == J.queued:
            delay = retry_delay(job.failures)
            job.next_start_at = time.time() + delay
            reason = f"{cause}; retry {job.failures} of {spec.max_retries} in {delay:g} s from the checkpoint"
        else:
            reason = f"{cause}" + (f" (after {spec.max_retries} retries)" if spec.max_retries else "")
            if tail:
                reason += ": " + " | ".join(tail[-3:])
        event(session, job.id, "failure", f"{cause}; last output:\n" + "\n".join(tail))
        self._begin_stop(session, job, target, reason)

    async def _finish(self, session: AsyncSession, job: JobRow) -> None:
        reason = None
        workspace = await session.get(WorkspaceRow, job.workspace_id)
        if workspace is not None:
            message = await self._save_outputs(workspace.name, job.id)
            if message:
                event(session, job.id, "outputs", message)
        if job.purpose:
            try:
                job.model_ref = await models.register_result(session, self.ctx, job)
                reason = f"registered model {job.model_ref}"
            except NubisError as exc:
                why = f"the job finished but its result is unusable: {exc}"
                switch_job_status(session, job, J.failed, why)
                await self._close(session, job)
                return
        switch_job_status(session, job, J.succeeded, reason)
        await self._close(session, job)

    async def _close(self, session: AsyncSession, job: JobRow) -> None:
        await jobs.revoke_job_token(session, job)
        self.backend.forget_job(job.id)

    async def _save_outputs(self, workspace: str, job_id: str) -> str | None:
        """An attempt ended: copy ``NUBIS_OUTPUT_DIR`` to storage; what to say in the job's events."""
        prefix = job_outputs_path(job_id)
        try:
            saved = await asyncio.to_thread(save_outputs, self.ctx.store.files(workspace),
                                            self.backend.output_dir(job_id), prefix)
        except Exception as exc:
            log.exception("saving the outputs of job %s failed", job_id)
            return f"the outputs could not be saved: {exc}"
        if not saved.files and not saved.skipped:
            return None
        message = f"outputs: {saved.files} file(s), {format_bytes(saved.bytes)} saved to {prefix}/"
        if saved.skipped:
            message += (f"; {len(saved.skipped)} skipped (links, special files, bad names or over the "
                        f"limit): {', '.join(saved.skipped[:5])}")
        return message

    def _begin_stop(self, session: AsyncSession, job: JobRow, outcome: JobStatus, reason: str) -> None:
        """Ask for the gang to stop; the stop task starts once this is committed (next round)."""
        job.stop_outcome = outcome.value
        switch_job_status(session, job, J.stopping, reason)

    def _spawn_stop(self, job_id: str) -> None:
        if job_id not in self._stopping:
            task = asyncio.create_task(self._stop_gang(job_id), name=f"stop-job-{job_id[:8]}")
            self._stopping[job_id] = task
            task.add_done_callback(lambda _: self._stopping.pop(job_id, None))

    async def _stop_gang(self, job_id: str) -> None:
        """Stop the workers, then move the job to the outcome asked for."""
        try:
            async with self.ctx.db.sessions() as session:
                job = await session.get(JobRow, job_id)
                if job is None or job.status != J.stopping.value:
                    return
                workers = await jobs.workers_of(session, job)
                workspace = await session.get(WorkspaceRow, job.workspace_id)
                attempted = job.attempt > 0
            handles = [ReplicaHandle.from_dict(w.handle) for w in workers if w.handle]
            await asyncio.gather(*(self.ctx.backend.stop_replica(h, grace_s=STOP_GRACE_S) for h in handles))
            saved = await self._save_outputs(workspace.name, job_id) if workspace and attempted else None
            async with self.ctx.db.sessions() as session:
                job = await session.get(JobRow, job_id)
                if job is None or job.status != J.stopping.value:
                    return
                for worker in await jobs.workers_of(session, job):
                    if worker.status == WorkerStatus.running.value:
                        worker.status = WorkerStatus.stopped.value
                        usage.worker_stopped(session, worker, at=utcnow())
                outcome = J(job.stop_outcome or J.failed.value)
                job.stop_outcome = None
                if saved:
                    event(session, job.id, "outputs", saved)
                switch_job_status(session, job, outcome, job.reason)
                await jobs.revoke_job_token(session, job)
                if outcome != J.queued:
                    self.backend.forget_job(job.id)
                await session.commit()
        except Exception:
            log.exception("stopping job %s failed; retrying next round", job_id)

    async def _admit(self, session: AsyncSession, jobs_now: list[JobRow]) -> list[GangOrder]:
        """Decide; write why the others wait; plan the admitted gangs (launched after the session)."""
        now = time.time()
        queued = [j for j in jobs_now if j.status == J.queued.value and not j.cancel_requested
                  and (j.next_start_at is None or j.next_start_at <= now)]
        queued = await self.environments.ready(session, queued, active={j.id for j in jobs_now})
        if not queued:
            return []
        running = [j for j in jobs_now if j.status == J.running.value]
        decision = decide_admissions(await self._snapshot(session, queued, running), now=now)
        by_id = {j.id: j for j in jobs_now}
        for victim_id in decision.preempt:
            victim = by_id[victim_id]
            self._begin_stop(session, victim, J.queued, "preempted by a job of higher priority; "
                                                        "it resumes from its checkpoint")
        if decision.preempt:
            return []  # start the admitted ones once the preempted gangs have stopped
        for job_id, why in decision.waiting.items():
            job = by_id[job_id]
            if job.reason != why and job.status == J.queued.value:
                job.reason = why[:2048]
        orders = []
        for job_id in decision.admit:
            order = await self.starts.plan(session, by_id[job_id], decision.placements.get(job_id, ()))
            if order is not None:
                orders.append(order)
        return orders

    async def _snapshot(self, session: AsyncSession, queued: list[JobRow],
                        running: list[JobRow]) -> AdmissionSnapshot:
        free, total = self.ctx.backend.free(), self.ctx.backend.capacity()
        nodes = await asyncio.to_thread(self.ctx.backend.nodes)
        rows = (await session.scalars(select(WorkspaceRow))).all()
        names = {r.id: r.name for r in rows}
        quotas = {r.name: Quota(cpu=r.cpu_quota, memory=r.memory_quota, gpu=r.gpu_quota) for r in rows}
        usage: dict[str, Demand] = {}
        running_jobs = []
        for job in running:
            spec = JobSpec.model_validate(job.spec)
            per = Demand(cpu=spec.resources.cpu, memory=spec.resources.memory, gpu=spec.resources.gpu)
            ws = names.get(job.workspace_id, job.workspace_id)
            held = usage.get(ws, Demand())
            n = spec.workers
            usage[ws] = Demand(cpu=held.cpu + per.cpu * n, memory=held.memory + per.memory * n,
                               gpu=held.gpu + per.gpu * n)
            placed = tuple(node_of(w.handle) for w in sorted(await jobs.workers_of(session, job),
                                                             key=lambda w: w.rank))
            running_jobs.append(RunningJob(id=job.id, workspace=ws, priority=job.priority, seq=job.seq,
                                           workers=spec.workers, per_worker=per,
                                           started_at=job.attempt_started_at or 0.0, nodes=placed))
        queue = []
        for job in queued:
            spec = JobSpec.model_validate(job.spec)
            per = Demand(cpu=spec.resources.cpu, memory=spec.resources.memory, gpu=spec.resources.gpu)
            queue.append(QueuedJob(id=job.id, workspace=names.get(job.workspace_id, job.workspace_id),
                                   priority=job.priority, seq=job.seq, workers=spec.workers, per_worker=per,
                                   strategy=Strategy.spread if spec.spread else Strategy.pack,
                                   selector=spec.node_selector))
        return AdmissionSnapshot(
            free=Demand(cpu=free.cpu, memory=free.memory, gpu=len(free.gpus)),
            total=Demand(cpu=total.cpu, memory=total.memory, gpu=len(total.gpus)),
            queue=queue, running=running_jobs, quotas=quotas, usage=usage,
            nodes=views(nodes, free=True), node_totals=views(nodes, free=False),
        )

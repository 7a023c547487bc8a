"""Make deployments so: replicas started, probed, restarted, scaled, rolled and stopped.

Each round reads a snapshot, probes every replica that has a process (no database session held
while it waits on the network), then applies the decisions deployment by deployment. Stopping a
replica (SIGTERM, drain) runs as a task of its own so a slow drain never stalls the loop.
Errors are logged and the loop goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.backends.base import ReplicaHandle, ReplicaProbe
from nubis.errors import EnvironmentPendingError, NoCapacityError, NubisError
from nubis.models.deployments import DeploymentSpec, DeploymentStatus, ReplicaStatus, split_photon_ref
from nubis.models.usage import UsageKind
from nubis.server.context import ServerContext
from nubis.server.orm import DeploymentRow, ReplicaRow, WorkspaceRow, utcnow
from nubis.server.reconcilers.llm_queues import QueueSampler, ReplicaTarget
from nubis.server.reconcilers.replica_starts import ReplicaStarts, StartResult
from nubis.server.scheduler.autoscaling import AutoscalingContext, decide_replicas
from nubis.server.scheduler.replicas import deployment_status, is_crash_loop, restart_backoff
from nubis.server.services import usage
from nubis.server.services.deployments import event
from nubis.server.services.gateway import replica_key
from nubis.server.services.replicas import switch_replica_status

log = logging.getLogger("nubis.reconciler")

R = ReplicaStatus
HAS_PROCESS = (R.starting, R.ready, R.draining)
CURRENT = (R.pending, R.starting, R.ready, R.failed, R.crash_loop)
STARTABLE = (R.pending, R.failed, R.crash_loop)
ROLLBACK_CRASHES = 3
STOP_GRACE_S = 30.0
DRAIN_S = 1.0  # well past the gateway's routing-table poll interval (0.25 s under `nubis up`)


@dataclass(frozen=True)
class Snapshot:
    deployment: DeploymentRow
    workspace: str
    replicas: list[ReplicaRow]


class DeploymentReconciler:
    def __init__(self, ctx: ServerContext, *, interval_s: float = 0.25) -> None:
        self.ctx = ctx
        self.interval_s = interval_s
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self.starts = ReplicaStarts(ctx)
        self.queues = QueueSampler()

    async def run(self) -> None:
        await self.adopt()
        while True:
            try:
                with self.ctx.metrics.reconciler_round("deployments"):
                    await self.reconcile_once()
            except Exception:
                log.exception("deployment reconciler round failed; retrying")
            await asyncio.sleep(self.interval_s)

    async def adopt(self) -> None:
        """After a restart: replicas still running are ours again; lost ones get restarted."""
        async with self.ctx.db.sessions() as session:
            rows = (await session.scalars(select(ReplicaRow).where(ReplicaRow.status.in_(HAS_PROCESS)))).all()
            for row in rows:
                if row.handle and await self.ctx.backend.adopt(ReplicaHandle.from_dict(row.handle)):
                    event(session, row.deployment_id, "replica", "adopted after a restart", row.id)
                    continue
                switch_replica_status(session, row, R.failed, "lost while the control plane was down")
                row.next_start_at = time.time()
            await session.flush()
            await usage.close_gone(session, UsageKind.replica, at=utcnow())
            await session.commit()

    async def shutdown(self) -> None:
        """Stop every replica (``nubis up`` stopping takes its replicas with it)."""
        async with self.ctx.db.sessions() as session:
            rows = (await session.scalars(select(ReplicaRow).where(ReplicaRow.status.in_(HAS_PROCESS)))).all()
            handles = [ReplicaHandle.from_dict(r.handle) for r in rows if r.handle]
            for row in rows:
                switch_replica_status(session, row, R.stopping, "the platform is stopping")
            await session.commit()
        await asyncio.gather(
            *(self.ctx.backend.stop_replica(h, grace_s=10) for h in handles), return_exceptions=True
        )
        async with self.ctx.db.sessions() as session:
            for row in (
                await session.scalars(select(ReplicaRow).where(ReplicaRow.status == R.stopping))
            ).all():
                switch_replica_status(session, row, R.stopped, "the platform stopped")
            await session.commit()

    async def reconcile_once(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        snapshots = await self._snapshot()
        handles = {
            r.id: ReplicaHandle.from_dict(r.handle)
            for s in snapshots
            for r in s.replicas
            if r.status in HAS_PROCESS and r.handle and r.id not in self._stopping
        }
        probes = dict(
            zip(
                handles,
                await asyncio.gather(
                    *(self.ctx.backend.probe(h) for h in handles.values()), return_exceptions=True
                ),
                strict=True,
            )
        )
        await self._sample_queues(snapshots, probes, now)
        self.starts.begin_round(await asyncio.to_thread(self.ctx.backend.nodes))
        for snap in snapshots:
            try:
                await self._reconcile_one(snap, probes, now)
            except Exception:  # one bad deployment never stalls the others
                log.exception("reconciling deployment %s/%s failed; retrying next round",
                              snap.workspace, snap.deployment.name)
        await self._apply_starts(await self.starts.launch_all())

    async def _sample_queues(self, snapshots: list[Snapshot], probes: dict[str, ReplicaProbe | BaseException],
                             now: float) -> None:
        """LLM deployments scale on their replicas' waiting requests: read them (no session open)."""
        wanted = {}
        for snap in snapshots:
            if not (snap.deployment.spec or {}).get("llm"):
                continue
            try:
                spec = DeploymentSpec.model_validate(snap.deployment.spec)
            except ValueError:  # _reconcile_one logs it
                continue
            if spec.llm is None or spec.autoscaling.target_waiting is None:
                continue
            ready = [r for r in snap.replicas if r.endpoint and (
                r.status == R.ready or (isinstance(probe := probes.get(r.id), ReplicaProbe) and probe.ready))]
            wanted[snap.deployment.id] = (spec.autoscaling, [ReplicaTarget(r.endpoint, replica_key(r))
                                                             for r in ready if r.endpoint])
        self.queues.forget_others(set(wanted))
        try:
            await self.queues.sample(wanted, now)
        except Exception:
            log.exception("reading the LLM replicas' queues failed; retrying next round")

    async def _reconcile_one(self, snap: Snapshot, probes: dict[str, ReplicaProbe | BaseException],
                             now: float) -> None:
        async with self.ctx.db.sessions() as session:
            deployment = await session.get(DeploymentRow, snap.deployment.id)
            if deployment is None:
                return
            replicas = (await session.scalars(
                select(ReplicaRow).where(ReplicaRow.deployment_id == deployment.id)
                .order_by(ReplicaRow.created_at))).all()
            await self._reconcile(session, deployment, snap.workspace, list(replicas), probes, now)
            await session.commit()

    async def _snapshot(self) -> list[Snapshot]:
        async with self.ctx.db.sessions() as session:
            rows = (
                await session.execute(
                    select(DeploymentRow, WorkspaceRow.name).join(
                        WorkspaceRow, WorkspaceRow.id == DeploymentRow.workspace_id
                    )
                )
            ).all()
            replicas = (await session.scalars(select(ReplicaRow))).all()
        by_id: dict[str, list[ReplicaRow]] = {}
        for r in replicas:
            by_id.setdefault(r.deployment_id, []).append(r)
        return [Snapshot(d, ws, by_id.get(d.id, [])) for d, ws in rows]

    async def _reconcile(
        self,
        session: AsyncSession,
        dep: DeploymentRow,
        workspace: str,
        replicas: list[ReplicaRow],
        probes: dict[str, ReplicaProbe | BaseException],
        now: float,
    ) -> None:
        for replica in [r for r in replicas if r.status == R.stopped]:
            await session.delete(replica)  # its events stay
        replicas = [r for r in replicas if r.status != R.stopped]
        for replica in replicas:
            probe = probes.get(replica.id)
            if isinstance(probe, ReplicaProbe):
                self._observe(session, replica, probe, now)
        if dep.deleting:
            await self._delete(session, dep, replicas)
            return
        spec = DeploymentSpec.model_validate(dep.spec)
        self._autoscale(session, dep, workspace, spec, replicas, now)
        # A replica of another generation runs an older spec (photon, resources, env or secrets).
        current = [r for r in replicas if r.generation == dep.generation and r.status in CURRENT]
        old = [r for r in replicas if r.generation != dep.generation and r.status in CURRENT]
        if old and self._update_failed(current):
            self._rollback(session, dep, current, old)
            return
        await self._scale(session, dep, workspace, spec, current, old, now)
        self._set_status(dep, replicas, updating=bool(old))

    def _observe(self, session: AsyncSession, replica: ReplicaRow, probe: ReplicaProbe, now: float) -> None:
        status = R(replica.status)
        if probe.endpoint and probe.endpoint != replica.endpoint:  # learnt after the start
            replica.endpoint = probe.endpoint
            replica.handle = {**(replica.handle or {}), "endpoint": probe.endpoint}
        if not probe.alive and probe.node_lost:  # not its fault: replaced elsewhere at once
            replica.next_start_at = now
            switch_replica_status(session, replica, R.failed, f"its node was lost: {probe.node_lost}")
            return
        if not probe.alive:
            tail = " | ".join(_error_lines(probe.last_error_lines)[-5:])
            reason = f"exited with code {probe.exit_code}" + (f": {tail}" if tail else "")
            replica.crashes += 1
            replica.crash_times = [*(replica.crash_times or [])[-9:], now]
            replica.next_start_at = now + restart_backoff(replica.crashes)
            switch_replica_status(session, replica, R.failed, reason)
            if is_crash_loop(replica.crash_times, now):  # a crash first, then the loop it makes
                switch_replica_status(session, replica, R.crash_loop, reason)
        elif probe.ready and status is R.starting:
            switch_replica_status(session, replica, R.ready, None)
            replica.crashes = 0

    def _autoscale(
        self,
        session: AsyncSession,
        dep: DeploymentRow,
        workspace: str,
        spec: DeploymentSpec,
        replicas: list[ReplicaRow],
        now: float,
    ) -> None:
        book = self.ctx.loads.get(workspace, dep.name)
        ready = sum(1 for r in replicas if r.status == R.ready)
        llm = spec.llm is not None and spec.autoscaling.target_waiting is not None
        decision = decide_replicas(
            AutoscalingContext(
                spec=spec.autoscaling,
                current_target=dep.target_replicas,
                ready_replicas=ready,
                load=self.queues.samples(dep.id) if llm else tuple(book.samples),
                queued=book.queued,
                last_scale_at=dep.last_scale_at or dep.created_at.timestamp(),
                last_traffic_at=book.last_traffic_at,
            ),
            now,
        )
        if decision.target_replicas != dep.target_replicas:
            event(
                session,
                dep.id,
                "scale",
                f"{dep.target_replicas} → {decision.target_replicas} replicas: {decision.reason}",
            )
            dep.target_replicas = decision.target_replicas
            dep.last_scale_at = now

    async def _scale(
        self,
        session: AsyncSession,
        dep: DeploymentRow,
        workspace: str,
        spec: DeploymentSpec,
        current: list[ReplicaRow],
        old: list[ReplicaRow],
        now: float,
    ) -> None:
        target = dep.target_replicas
        for replica in current:  # restart crashed ones once their back-off has passed
            if replica.status in (R.failed, R.crash_loop, R.pending) and (replica.next_start_at or 0) <= now:
                await self._start(session, dep, workspace, spec, replica)
        if old:  # rolling update: one extra replica at a time; drain an old one per new ready one
            starting = [r for r in current if r.status != R.ready]
            if len(current) < target and not starting:
                await self._start(session, dep, workspace, spec, self._new_replica(session, dep))
            ready_new = sum(1 for r in current if r.status == R.ready)
            if ready_new and ready_new + len(old) > target:
                self._stop(session, old[0], "replaced by the new version")
            return
        for _ in range(target - len(current)):
            await self._start(session, dep, workspace, spec, self._new_replica(session, dep))
        extra = sorted(current, key=lambda r: (r.status == R.ready, r.created_at), reverse=False)
        for replica in extra[: max(0, len(current) - target)]:
            self._stop(session, replica, "scaled down")

    def _new_replica(self, session: AsyncSession, dep: DeploymentRow) -> ReplicaRow:
        replica = ReplicaRow(
            deployment_id=dep.id,
            generation=dep.generation,
            photon_version=dep.photon_version,
            status=R.pending.value,
            crashes=0,
            crash_times=[],
        )
        session.add(replica)
        return replica

    async def _start(
        self,
        session: AsyncSession,
        dep: DeploymentRow,
        workspace: str,
        spec: DeploymentSpec,
        replica: ReplicaRow,
    ) -> None:
        """Place it now; it is launched once this round's sessions are closed (``_apply_starts``)."""
        await session.flush()
        try:
            await self.starts.plan(session, dep, workspace, spec, replica)
        except (NubisError, OSError) as exc:
            self._start_failed(session, replica, exc)

    def _start_failed(self, session: AsyncSession, replica: ReplicaRow, exc: NubisError | OSError) -> None:
        if isinstance(exc, NoCapacityError):
            replica.next_start_at = time.time() + 2
            why = exc.message
            if not isinstance(exc, EnvironmentPendingError):
                why = f"waiting for resources: {exc.message}"
            if R(replica.status) is not R.pending or replica.reason != why:
                switch_replica_status(session, replica, R.pending, why)
            return
        message = exc.message if isinstance(exc, NubisError) else str(exc)
        replica.crashes += 1
        replica.next_start_at = time.time() + restart_backoff(replica.crashes)
        if R(replica.status) is R.pending:
            switch_replica_status(session, replica, R.starting, "launching")
        switch_replica_status(session, replica, R.failed, f"could not start: {message}")

    async def _apply_starts(self, results: list[StartResult]) -> None:
        """What the launches did, applied only to replicas still waiting to start as planned."""
        orphans = []
        async with self.ctx.db.sessions() as session:
            for result in results:
                replica = await session.get(ReplicaRow, result.order.replica_id)
                if (replica is None or replica.generation != result.order.generation
                        or R(replica.status) not in STARTABLE):
                    if result.handle is not None:
                        orphans.append(result.handle)
                    continue
                if result.handle is None:
                    assert result.error is not None
                    self._start_failed(session, replica, result.error)
                    continue
                replica.handle = result.handle.to_dict()
                replica.endpoint = result.handle.endpoint
                where = result.handle.endpoint or f"node {result.handle.node}"
                switch_replica_status(session, replica, R.starting, f"started on {where}")
            await session.commit()
        await asyncio.gather(*(self.ctx.backend.stop_replica(h, grace_s=1.0) for h in orphans),
                             return_exceptions=True)

    def _stop(self, session: AsyncSession, replica: ReplicaRow, reason: str) -> None:
        status = R(replica.status)
        if replica.id in self._stopping or status in (R.stopping, R.stopped):
            return
        if status in (R.pending, R.failed, R.crash_loop) or not replica.handle:
            switch_replica_status(session, replica, R.stopped, reason)
            return
        switch_replica_status(session, replica, R.draining if status is R.ready else R.stopping, reason)
        handle = ReplicaHandle.from_dict(replica.handle)
        drain_s = DRAIN_S if status is R.ready else 0.0
        self._stopping[replica.id] = asyncio.create_task(self._stop_task(replica.id, handle, drain_s))

    async def _stop_task(self, replica_id: str, handle: ReplicaHandle, drain_s: float) -> None:
        try:
            await asyncio.sleep(drain_s)  # the gateway's next routing table leaves it out first
            await self.ctx.backend.stop_replica(handle, grace_s=STOP_GRACE_S)
            async with self.ctx.db.sessions() as session:
                replica = await session.get(ReplicaRow, replica_id)
                if replica is not None:
                    if R(replica.status) is R.draining:
                        switch_replica_status(session, replica, R.stopping, replica.reason)
                    switch_replica_status(session, replica, R.stopped, replica.reason)
                    await session.commit()
        except Exception:
            log.exception("stopping replica %s failed", replica_id)
        finally:
            self._stopping.pop(replica_id, None)

    def _update_failed(self, current: list[ReplicaRow]) -> bool:
        return any(r.status == R.crash_loop or r.crashes >= ROLLBACK_CRASHES for r in current)

    def _rollback(
        self, session: AsyncSession, dep: DeploymentRow, failing: list[ReplicaRow], old: list[ReplicaRow]
    ) -> None:
        """Back to the spec the old replicas run: they become the current generation again."""
        reason = next((r.reason for r in failing if r.reason), "the new version did not become ready")
        bad = f"{dep.photon_name}:{dep.photon_version}"
        if dep.previous_version is None:
            return
        if dep.previous_spec is not None:
            dep.photon_name = split_photon_ref(dep.previous_spec["photon"])[0]
        dep.photon_version, dep.previous_version = dep.previous_version, None
        dep.spec = {**(dep.previous_spec or dep.spec), "photon": f"{dep.photon_name}:{dep.photon_version}"}
        dep.previous_spec = None
        dep.generation += 1
        for replica in old:
            replica.generation = dep.generation
        dep.reason = f"rolled back from {bad}: {reason}"
        event(session, dep.id, "rollback", dep.reason)
        for replica in failing:
            self._stop(session, replica, f"rolled back: {bad} failed")

    def _set_status(self, dep: DeploymentRow, replicas: list[ReplicaRow], *, updating: bool) -> None:
        live = [R(r.status) for r in replicas if R(r.status) is not R.stopped]
        status = deployment_status(live, target=dep.target_replicas, updating=updating)
        if status != dep.status:
            dep.status = status.value
            dep.updated_at = utcnow()
        if status in (DeploymentStatus.ready, DeploymentStatus.scaled_to_zero):
            dep.reason = None
        elif status != DeploymentStatus.updating:
            dep.reason = next((r.reason for r in replicas if r.reason and r.status != R.ready), dep.reason)

    async def _delete(self, session: AsyncSession, dep: DeploymentRow, replicas: list[ReplicaRow]) -> None:
        for replica in replicas:
            self._stop(session, replica, "the deployment is being deleted")
        if not replicas:
            await session.delete(dep)


def _error_lines(lines: list[str]) -> list[str]:
    """A replica's last output without the server's routine INFO lines: what went wrong."""
    return [line for line in lines if line.strip() and not line.startswith(("INFO", "DEBUG"))] or lines

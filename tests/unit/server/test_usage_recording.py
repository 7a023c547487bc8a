"""Usage intervals recorded at status changes, through the real reconcilers on a FakeBackend:
replicas from their launch to their stop, job workers from their gang's start to their exit, a
control plane restart that adopts (intervals stay open) or finds a workload gone (closed then)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from nubis.models.deployments import ReplicaStatus
from nubis.server.context import ServerContext
from nubis.server.orm import JobWorkerRow, ReplicaRow, UsageIntervalRow
from nubis.server.reconcilers.deployments import DeploymentReconciler
from nubis.server.reconcilers.jobs import JobReconciler
from nubis.server.services.replicas import switch_replica_status

import rows
from fake_backend import FakeBackend, node

GIB = 2**30


@pytest.fixture
async def fake() -> FakeBackend:
    return FakeBackend([node("a", cpu=8, gpu=2), node("b", cpu=8)])


@pytest.fixture
async def ctx(tmp_path: Path, fake: FakeBackend) -> AsyncIterator[ServerContext]:
    async with rows.context(tmp_path, fake) as ctx:
        await rows.photon(ctx)
        yield ctx


async def intervals(ctx: ServerContext) -> list[UsageIntervalRow]:
    async with ctx.db.sessions() as session:
        found = await session.scalars(select(UsageIntervalRow).order_by(UsageIntervalRow.started_at))
        return list(found.all())


async def live_replicas(ctx: ServerContext) -> list[ReplicaRow]:
    async with ctx.db.sessions() as session:
        return list((await session.scalars(select(ReplicaRow))).all())




async def test_a_replica_holds_its_resources_from_launch_to_stop(ctx: ServerContext,
                                                                 fake: FakeBackend) -> None:
    dep = await rows.deployment(ctx, "web", resources={"cpu": 1.5, "memory": "3Gi", "gpu": 1},
                                autoscaling={"min_replicas": 2, "max_replicas": 2})
    reconciler = DeploymentReconciler(ctx)
    await reconciler.reconcile_once()
    started = await live_replicas(ctx)
    opened = await intervals(ctx)
    assert sorted(i.unit_id for i in opened) == sorted(r.id for r in started)
    for interval in opened:
        assert (interval.kind, interval.object_name, interval.object_id) == ("replica", "web", dep.id)
        assert (interval.cpu, interval.memory_gib, interval.gpu) == (1.5, 3.0, 1)
        assert interval.node == fake.replicas[interval.unit_id].node
        assert interval.stopped_at is None
    for replica in fake.replicas.values():
        replica.ready = True
    await reconciler.reconcile_once()  # starting → ready: still the same interval
    assert [(i.id, i.stopped_at) for i in await intervals(ctx)] == [(i.id, None) for i in opened]

    async with ctx.db.sessions() as session:
        row = await session.get(type(dep), dep.id)
        assert row is not None
        row.deleting = True
        await session.commit()
    await reconciler.reconcile_once()
    await asyncio.gather(*list(reconciler._stopping.values()))
    stopped = await live_replicas(ctx)
    assert {r.status for r in stopped} == {"stopped"}
    closed = {i.unit_id: i.stopped_at for i in await intervals(ctx)}
    assert closed == {r.id: r.updated_at for r in stopped}  # closed at the moment each was stopped


async def test_a_restart_keeps_adopted_intervals_open_and_closes_the_lost(ctx: ServerContext,
                                                                        fake: FakeBackend) -> None:
    await rows.deployment(ctx, "web", resources={"cpu": 1, "memory": "1Gi"},
                          autoscaling={"min_replicas": 2, "max_replicas": 2})
    await DeploymentReconciler(ctx).reconcile_once()
    kept, lost = await live_replicas(ctx)
    del fake.replicas[lost.id]  # gone while the control plane was down

    await DeploymentReconciler(ctx).adopt()  # the restarted control plane
    found = {i.unit_id: i for i in await intervals(ctx)}
    assert len(found) == 2  # nothing counted twice
    assert found[kept.id].stopped_at is None
    async with ctx.db.sessions() as session:
        failed = await session.get(ReplicaRow, lost.id)
        assert failed is not None and failed.status == "failed"
        assert found[lost.id].stopped_at == failed.updated_at  # closed when it was found gone


async def test_a_launch_that_fails_at_once_leaves_no_interval(ctx: ServerContext) -> None:
    dep = await rows.deployment(ctx, "web")
    async with ctx.db.sessions() as session:
        replica = ReplicaRow(deployment_id=dep.id, generation=1, photon_version=1, status="pending",
                             handle={"replica_id": "x", "backend": "fake", "endpoint": None})
        session.add(replica)
        await session.flush()
        switch_replica_status(session, replica, ReplicaStatus.starting, "launching")
        switch_replica_status(session, replica, ReplicaStatus.failed, "could not start: no such photon")
        await session.commit()
    assert await intervals(ctx) == []


async def test_job_workers_hold_their_resources_until_they_exit(ctx: ServerContext,
                                                                fake: FakeBackend) -> None:
    job = await rows.job(ctx, "ddp", workers=2, resources={"cpu": 2, "memory": "512Mi"})
    reconciler = JobReconciler(ctx)
    await reconciler.reconcile_once()
    opened = await intervals(ctx)
    assert sorted(i.unit_id for i in opened) == sorted(fake.replicas)
    assert {(i.kind, i.object_name, i.object_id, i.cpu, i.memory_gib, i.stopped_at) for i in opened} == {
        ("job", "ddp", job.id, 2.0, 0.5, None)}
    assert len({i.started_at for i in opened}) == 1  # the gang started together

    await JobReconciler(ctx).adopt()  # a restart that adopts both changes nothing
    assert [(i.id, i.stopped_at) for i in await intervals(ctx)] == [(i.id, None) for i in opened]

    for worker_id in list(fake.replicas):
        fake.exit(worker_id, 0)
    await reconciler.reconcile_once()
    closed = await intervals(ctx)
    assert all(i.stopped_at is not None and i.stopped_at > i.started_at for i in closed)


async def test_a_start_closes_the_intervals_of_what_no_longer_runs(ctx: ServerContext,
                                                                   fake: FakeBackend) -> None:
    """A writer that does not record usage (a restore settles workers this way) leaves an interval
    open; the next start's adoption closes it, and only it."""
    await rows.job(ctx, "ddp", workers=2, resources={"cpu": 1, "memory": "1Gi"})
    await JobReconciler(ctx).reconcile_once()
    async with ctx.db.sessions() as session:
        settled, kept = (await session.scalars(select(JobWorkerRow).order_by(JobWorkerRow.rank))).all()
        settled.status = "stopped"
        await session.commit()
    await JobReconciler(ctx).adopt()
    found = {i.unit_id: i.stopped_at for i in await intervals(ctx)}
    assert found[kept.id] is None
    assert found[settled.id] is not None

"""The reconcilers on several nodes, against a FakeBackend: placement by labels and capacity, a
lost node's replicas replaced elsewhere, gangs placed whole or waiting with why, a lost worker's
attempt retried as node_lost, one bad row never stalling a round. No process is started."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from nubis.server.context import ServerContext
from nubis.server.orm import DeploymentEventRow, DeploymentRow, JobRow, JobWorkerRow, ReplicaRow
from nubis.server.reconcilers.deployments import DeploymentReconciler
from nubis.server.reconcilers.jobs import JobReconciler

import rows
from fake_backend import FakeBackend, node

GIB = 2**30


@pytest.fixture
async def fake() -> FakeBackend:
    return FakeBackend([node("gpu-a", cpu=4, gpu=2, pool="a100"), node("gpu-b", cpu=4, gpu=2),
                        node("cpu-c", cpu=2)])


@pytest.fixture
async def ctx(tmp_path: Path, fake: FakeBackend) -> AsyncIterator[ServerContext]:
    async with rows.context(tmp_path, fake) as ctx:
        await rows.photon(ctx)
        yield ctx


async def replicas(ctx: ServerContext, name: str) -> list[ReplicaRow]:
    async with ctx.db.sessions() as session:
        dep = await session.scalar(select(DeploymentRow).where(DeploymentRow.name == name))
        assert dep is not None
        return list((await session.scalars(select(ReplicaRow).where(ReplicaRow.deployment_id == dep.id)
                                           .order_by(ReplicaRow.created_at))).all())


async def test_replicas_go_where_their_labels_and_capacity_say(ctx: ServerContext, fake: FakeBackend) -> None:
    await rows.deployment(ctx, "pinned", node_selector={"pool": "a100"},
                          resources={"cpu": 1, "memory": "1Gi", "gpu": 1}, autoscaling={"min_replicas": 3,
                                                                                      "max_replicas": 3})
    reconciler = DeploymentReconciler(ctx)
    await reconciler.reconcile_once()
    placed = await replicas(ctx, "pinned")
    assert sorted(r.status for r in placed) == ["pending", "starting", "starting"]
    assert {fake.replicas[r.id].node for r in placed if r.status == "starting"} == {"gpu-a"}
    waiting = next(r for r in placed if r.status == "pending")
    assert waiting.reason == ("waiting for resources: no node can hold a worker of 1 CPU, 1.00 GiB, 1 GPU; "
                              "the largest has 2 CPU, 14.00 GiB, 0 GPU (of 1 node(s))")


async def test_a_deployment_s_replicas_spread_over_nodes(ctx: ServerContext, fake: FakeBackend) -> None:
    await rows.deployment(ctx, "spread", resources={"cpu": 0.5, "memory": "256Mi"},
                          autoscaling={"min_replicas": 2, "max_replicas": 3})
    reconciler = DeploymentReconciler(ctx)
    await reconciler.reconcile_once()
    first = [fake.replicas[r.id].node for r in await replicas(ctx, "spread")]
    assert len(set(first)) == 2  # the same round: not both on the node with the most room
    async with ctx.db.sessions() as session:
        dep = await session.scalar(select(DeploymentRow).where(DeploymentRow.name == "spread"))
        assert dep is not None
        dep.spec = {**dep.spec, "autoscaling": {**dep.spec["autoscaling"], "min_replicas": 3}}
        await session.commit()
    await reconciler.reconcile_once()  # a later round: the third goes where none runs yet
    assert sorted(fake.replicas[r.id].node for r in await replicas(ctx, "spread")) == [
        "cpu-c", "gpu-a", "gpu-b"]


async def test_a_lost_node_s_replicas_are_replaced_on_another(ctx: ServerContext, fake: FakeBackend) -> None:
    await rows.deployment(ctx, "web", resources={"cpu": 2, "memory": "1Gi"},
                          autoscaling={"min_replicas": 2, "max_replicas": 2})
    reconciler = DeploymentReconciler(ctx)
    await reconciler.reconcile_once()
    first = {r.id: fake.replicas[r.id].node for r in await replicas(ctx, "web")}
    lost_node = next(iter(first.values()))
    fake.kill_node(lost_node, "missing too many heartbeats")
    await reconciler.reconcile_once()  # seen lost, and started again on another node at once
    after = await replicas(ctx, "web")
    moved = [r for r in after if first.get(r.id) == lost_node]
    assert moved and all(r.crashes == 0 for r in moved)  # not the replica's fault: no crash back-off
    assert all(r.status == "starting" and fake.replicas[r.id].node != lost_node for r in after)
    async with ctx.db.sessions() as session:
        said = (await session.scalars(select(DeploymentEventRow.message)
                                      .where(DeploymentEventRow.replica_id == moved[0].id))).all()
    assert any("its node was lost: missing too many heartbeats" in m for m in said), said


async def test_one_bad_deployment_does_not_stall_the_others(ctx: ServerContext, fake: FakeBackend) -> None:
    broken = await rows.deployment(ctx, "broken")
    await rows.deployment(ctx, "fine")
    async with ctx.db.sessions() as session:
        row = await session.get(DeploymentRow, broken.id)
        assert row is not None
        row.spec = {"name": "broken"}  # no photon: cannot be read
        await session.commit()
    await DeploymentReconciler(ctx).reconcile_once()
    assert [r.status for r in await replicas(ctx, "fine")] == ["starting"]


async def workers(ctx: ServerContext, name: str) -> tuple[JobRow, list[JobWorkerRow]]:
    async with ctx.db.sessions() as session:
        job = await session.scalar(select(JobRow).where(JobRow.name == name))
        assert job is not None
        found = (await session.scalars(select(JobWorkerRow).where(JobWorkerRow.job_id == job.id)
                                       .order_by(JobWorkerRow.attempt, JobWorkerRow.rank))).all()
        return job, list(found)


async def test_gangs_spread_or_wait_with_the_placement_s_reason(ctx: ServerContext,
                                                               fake: FakeBackend) -> None:
    await rows.job(ctx, "ddp", workers=3, spread=True, resources={"cpu": 1, "memory": "1Gi"})
    await rows.job(ctx, "too-wide", workers=4, spread=True, resources={"cpu": 1, "memory": "1Gi"})
    await rows.job(ctx, "two-gpus", workers=1, resources={"cpu": 1, "memory": "1Gi", "gpu": 3})
    reconciler = JobReconciler(ctx)
    await reconciler.reconcile_once()
    job, started = await workers(ctx, "ddp")
    assert job.status == "running"
    assert sorted(fake.replicas[w.id].node for w in started) == ["cpu-c", "gpu-a", "gpu-b"]
    envs = [fake.replicas[w.id].env for w in started]
    assert sorted(e["NODE_RANK"] for e in envs) == ["0", "1", "2"]
    assert {e["LOCAL_WORLD_SIZE"] for e in envs} == {"1"} and len({e["MASTER_ADDR"] for e in envs}) == 1
    wide, _ = await workers(ctx, "too-wide")
    assert wide.status == "queued"
    assert wide.reason == ("can never fit: needs 4 distinct nodes with 1 CPU, 1.00 GiB each; only 3 of 3 "
                           "node(s) can hold one")
    gpus, _ = await workers(ctx, "two-gpus")
    assert gpus.reason is not None and gpus.reason.startswith("can never fit: no node can hold a worker")


async def test_a_worker_on_a_lost_node_retries_the_gang_as_node_lost(ctx: ServerContext,
                                                                     fake: FakeBackend) -> None:
    await rows.job(ctx, "ddp", workers=2, spread=True, max_retries=2, resources={"cpu": 1, "memory": "1Gi"})
    reconciler = JobReconciler(ctx)
    await reconciler.reconcile_once()
    _, started = await workers(ctx, "ddp")
    fake.kill_node(fake.replicas[started[1].id].node, "missing too many heartbeats")
    await reconciler.reconcile_once()
    job, _ = await workers(ctx, "ddp")
    assert job.status == "stopping"
    assert job.reason is not None and job.reason.startswith(
        "node_lost: worker 1's node was lost (missing too many heartbeats); retry 1 of 2")

"""A backend without processes: nodes and replicas held in memory, moved by the test.

It implements the backend contract (``nubis.backends.base``) so reconcilers and services can be
tested against several nodes on one machine in milliseconds: a test adds and kills nodes, marks
replicas ready or exited, and reads what was started where.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from nubis.backends.base import (
    Backend,
    Capacity,
    GangSpec,
    JobsCapability,
    LogsCapability,
    NodeFetchCapability,
    ReplicaHandle,
    ReplicaProbe,
    ReplicaSpec,
)
from nubis.backends.nodes import Amounts, NodeInfo, rank_envs
from nubis.errors import NoCapacityError
from nubis.models.resources import Resources


@dataclass
class FakeReplica:
    """A replica or a job worker (``gang`` set, ``env`` its rank's)."""

    resources: Resources
    node: str
    alive: bool = True
    ready: bool = False
    exit_code: int | None = None
    lines: list[str] = field(default_factory=list)
    gang: str | None = None
    env: dict[str, str] = field(default_factory=dict)


class FakeBackend(Backend, NodeFetchCapability, JobsCapability, LogsCapability):
    name = "fake"

    def __init__(self, nodes: list[NodeInfo]) -> None:
        self._nodes = {n.id: n for n in nodes}
        self.replicas: dict[str, FakeReplica] = {}

    # the test's controls

    def add_node(self, node: NodeInfo) -> None:
        self._nodes[node.id] = node

    def kill_node(self, node_id: str, reason: str = "health check failed") -> None:
        self._nodes[node_id] = replace(self._nodes[node_id], alive=False, death_reason=reason)
        for replica in self.replicas.values():
            if replica.node == node_id:
                replica.alive = replica.ready = False

    # the contract

    def nodes(self) -> list[NodeInfo]:
        return [replace(n, free=self._free(n)) for n in self._nodes.values()]

    def _free(self, node: NodeInfo) -> Amounts:
        held = [r.resources for r in self.replicas.values() if r.node == node.id and r.alive]
        total = node.total
        return Amounts(total.cpu - sum(r.cpu for r in held), total.memory - sum(r.memory for r in held),
                       total.gpu - sum(r.gpu for r in held))

    def capacity(self) -> Capacity:
        alive = [n for n in self._nodes.values() if n.alive]
        return Capacity(sum(n.total.cpu for n in alive), sum(n.total.memory for n in alive),
                        tuple(range(sum(n.total.gpu for n in alive))))

    def free(self) -> Capacity:
        alive = [n for n in self.nodes() if n.alive]
        return Capacity(sum(n.free.cpu for n in alive), sum(n.free.memory for n in alive),
                        tuple(range(sum(n.free.gpu for n in alive))))

    def _place(self, replica_id: str, node: str | None, r: Resources, **extra: object) -> ReplicaHandle:
        node = node or next(iter(self._nodes))
        info = next(n for n in self.nodes() if n.id == node)
        if not info.alive or r.cpu > info.free.cpu or r.memory > info.free.memory or r.gpu > info.free.gpu:
            raise NoCapacityError(f"node {node} cannot hold {r}")
        self.replicas[replica_id] = FakeReplica(r, node, **extra)  # type: ignore[arg-type]
        return ReplicaHandle(replica_id=replica_id, backend=self.name, node=node,
                             endpoint=f"http://{info.address}:{8000 + len(self.replicas)}")

    async def start_replica(self, spec: ReplicaSpec) -> ReplicaHandle:
        return self._place(spec.replica_id, spec.node, spec.resources)

    async def start_gang(self, spec: GangSpec) -> list[ReplicaHandle]:
        addresses = {n.id: n.address for n in self._nodes.values()}
        envs = rank_envs(spec.nodes, addresses, master_port=29500, user_env=spec.env)
        handles = []
        try:
            for rank, env in enumerate(envs):
                handle = self._place(spec.worker_id(rank), spec.nodes[rank], spec.resources,
                                     gang=spec.job_id, env={**spec.env, **env})
                handles.append(replace(handle, endpoint=None))
        except NoCapacityError:
            for handle in handles:
                del self.replicas[handle.replica_id]
            raise
        return handles

    def exit(self, replica_id: str, code: int) -> None:
        replica = self.replicas[replica_id]
        replica.alive = replica.ready = False
        replica.exit_code = code

    def checkpoint_dir(self, job_id: str) -> str:
        return f"/fake/{job_id}/checkpoints"

    def output_dir(self, job_id: str) -> str:
        return f"/fake/{job_id}/outputs"

    def forget_job(self, job_id: str) -> None:
        return None

    def read_logs(self, handle: ReplicaHandle, *, tail: int = 100) -> list[str]:
        replica = self.replicas.get(handle.replica_id)
        return list(replica.lines[-tail:]) if replica else []

    async def follow_logs(self, handle: ReplicaHandle, *, tail: int = 0,
                          from_start: bool = False) -> AsyncIterator[str]:
        for line in self.read_logs(handle, tail=tail or 100):
            yield line

    async def probe(self, handle: ReplicaHandle) -> ReplicaProbe:
        replica = self.replicas.get(handle.replica_id)
        if replica is None:
            return ReplicaProbe(alive=False, ready=False)
        lost = self._nodes[replica.node]
        return ReplicaProbe(alive=replica.alive, ready=replica.ready, exit_code=replica.exit_code,
                            last_error_lines=list(replica.lines),
                            node_lost=lost.death_reason if not lost.alive else None)

    async def stop_replica(self, handle: ReplicaHandle, *, grace_s: float = 30.0) -> None:
        replica = self.replicas.get(handle.replica_id)
        if replica is not None:
            replica.alive = replica.ready = False

    async def adopt(self, handle: ReplicaHandle) -> bool:
        replica = self.replicas.get(handle.replica_id)
        return replica is not None and replica.alive


def node(id: str, *, cpu: float = 4, memory: int = 16 * 2**30, gpu: int = 0, address: str = "127.0.0.1",
         **labels: str) -> NodeInfo:
    total = Amounts(cpu, memory, gpu)
    return NodeInfo(id=id, address=address, alive=True, total=total, free=total, labels=labels)

"""A backend without processes: nodes and replicas held in memory, moved by the test.

It implements the backend contract (``nubis.backends.base``) so reconcilers and services can be
tested against several nodes on one machine in milliseconds: a test adds and kills nodes, marks
replicas ready or exited, and reads what was started where.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from nubis.backends.base import Backend, Capacity, ReplicaHandle, ReplicaProbe, ReplicaSpec
from nubis.backends.nodes import Amounts, NodeInfo
from nubis.errors import NoCapacityError


@dataclass
class FakeReplica:
    spec: ReplicaSpec
    node: str
    alive: bool = True
    ready: bool = False
    exit_code: int | None = None
    lines: list[str] = field(default_factory=list)


class FakeBackend(Backend):
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
        held = [r.spec.resources for r in self.replicas.values() if r.node == node.id and r.alive]
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

    async def start_replica(self, spec: ReplicaSpec) -> ReplicaHandle:
        node = spec.node or next(iter(self._nodes))
        info = next(n for n in self.nodes() if n.id == node)
        r = spec.resources
        if not info.alive or r.cpu > info.free.cpu or r.memory > info.free.memory or r.gpu > info.free.gpu:
            raise NoCapacityError(f"node {node} cannot hold {r}")
        self.replicas[spec.replica_id] = FakeReplica(spec, node)
        return ReplicaHandle(replica_id=spec.replica_id, backend=self.name, node=node,
                             endpoint=f"http://{info.address}:{8000 + len(self.replicas)}")

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

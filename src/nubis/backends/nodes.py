"""Nodes as every backend reports them, and the env a gang's ranks get from their placement.

A backend reports its machines as ``NodeInfo`` (the local backend: one node, ``local``); the
control plane decides placement on them (``server/scheduler/placement.py``) and hands the backend
the node of each replica or rank. :func:`rank_envs` is torchrun's view of a placement, the same
on every backend: ``RANK``, ``LOCAL_RANK``, ``NODE_RANK`` (nodes numbered in order of their first
rank), ``LOCAL_WORLD_SIZE``, ``WORLD_SIZE``, ``GROUP_RANK``/``GROUP_WORLD_SIZE`` (torchrun's names
for the node rank and count), ``MASTER_ADDR``/``MASTER_PORT`` (rank 0's node) and
``NUBIS_NODE_IPS`` (every node's address, by node rank), and ``OMP_NUM_THREADS=1`` where more than
one rank shares a node (as torchrun), unless the job sets it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

LOCAL_NODE = "local"


@dataclass(frozen=True)
class Amounts:
    """CPU cores, memory bytes and a GPU count: a node's total, or what it has free."""

    cpu: float = 0.0
    memory: int = 0
    gpu: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "memory": self.memory, "gpu": self.gpu}


@dataclass(frozen=True)
class NodeInfo:
    """One machine a backend can place workloads on."""

    id: str
    address: str
    """Where the node's workloads are reached (the gateway's and other ranks' view)."""
    alive: bool
    total: Amounts
    free: Amounts
    labels: dict[str, str] = field(default_factory=dict)
    death_reason: str | None = None
    """Why the backend considers it dead (the engine's words), once it is."""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "address": self.address, "alive": self.alive,
                "total": self.total.to_dict(), "free": self.free.to_dict(), "labels": dict(self.labels),
                "death_reason": self.death_reason}


def rank_envs(nodes: Sequence[str], addresses: Mapping[str, str], *, master_port: int,
              user_env: Mapping[str, str] | None = None) -> list[dict[str, str]]:
    """The env of each rank (in rank order) of a gang placed on ``nodes`` (``nodes[rank]``)."""
    if not nodes:
        raise ValueError("a gang has at least one rank")
    order: list[str] = []
    for node in nodes:
        if node not in order:
            order.append(node)
    ips = [addresses[node] for node in order]
    per_node = {node: nodes.count(node) for node in order}
    seen: dict[str, int] = {}
    envs = []
    for rank, node in enumerate(nodes):
        local = seen.get(node, 0)
        seen[node] = local + 1
        env = {
            "RANK": str(rank), "LOCAL_RANK": str(local), "ROLE_RANK": str(rank),
            "WORLD_SIZE": str(len(nodes)), "ROLE_WORLD_SIZE": str(len(nodes)),
            "LOCAL_WORLD_SIZE": str(per_node[node]),
            "NODE_RANK": str(order.index(node)), "GROUP_RANK": str(order.index(node)),
            "GROUP_WORLD_SIZE": str(len(order)),
            "MASTER_ADDR": ips[0], "MASTER_PORT": str(master_port),
            "NUBIS_NODE_IPS": ",".join(ips), "NUBIS_NODE": node,
        }
        if per_node[node] > 1 and "OMP_NUM_THREADS" not in (user_env or {}):
            env["OMP_NUM_THREADS"] = "1"
        envs.append(env)
    return envs

"""Nodes on the wire: the machines a backend places workloads on, their capacity and workloads."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class NodeResources(BaseModel):
    cpu: float = 0.0
    memory: int = 0
    gpu: int = 0


class NodeWorkload(BaseModel):
    """A replica or a job worker on the node (only the caller's workspace's, unless platform admin)."""

    kind: Literal["replica", "worker"]
    id: str
    workspace: str
    name: str = Field(description="the deployment or the job")
    status: str


class Node(BaseModel):
    id: str
    address: str
    alive: bool
    total: NodeResources
    free: NodeResources
    used: NodeResources
    labels: dict[str, str] = {}
    death_reason: str | None = None
    workloads: list[NodeWorkload] = []
    hidden_workloads: int = Field(0, description="workloads of other workspaces, counted, not shown")


class NodeEvent(BaseModel):
    node_id: str
    kind: str
    message: str
    at: datetime


class NodeDetail(Node):
    events: list[NodeEvent] = []

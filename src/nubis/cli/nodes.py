"""``nubis node …``: the machines workloads run on, their capacity, labels and workloads."""

from __future__ import annotations

from typing import Annotated

import typer

from nubis.cli import render
from nubis.client.client import Client
from nubis.models.nodes import Node, NodeDetail, NodeResources
from nubis.models.resources import format_size

app = typer.Typer(help="Nodes: the machines the backend places replicas and job workers on.",
                  no_args_is_help=True)
Output = Annotated[str, typer.Option("--output", "-o", help=render.OUTPUT_HELP)]
COLUMNS = ["id", "address", "alive", "cpu", "memory", "gpu", "labels", "workloads"]


def used_of(used: NodeResources, total: NodeResources, kind: str) -> str:
    """``1.5/4`` (CPU, GPU) or ``2Gi/16Gi`` (memory): used of total."""
    if kind == "memory":
        return f"{format_size(used.memory)}/{format_size(total.memory)}"
    value, whole = getattr(used, kind), getattr(total, kind)
    return f"{value:g}/{whole:g}"


def row(node: Node) -> list[str]:
    labels = ",".join(f"{k}={v}" for k, v in sorted(node.labels.items())) or "-"
    hidden = f" (+{node.hidden_workloads} other)" if node.hidden_workloads else ""
    alive = "yes" if node.alive else "no"  # why: `nubis node get ID`, which has room for it
    return [node.id[:12], node.address, alive, used_of(node.used, node.total, "cpu"),
            used_of(node.used, node.total, "memory"), used_of(node.used, node.total, "gpu"), labels,
            f"{len(node.workloads)}{hidden}"]


@app.command("list")
def list_(output: Output = "table") -> None:
    """Every node: alive, CPU/memory/GPU used of total, labels, workloads."""
    with Client() as client:
        nodes = client.nodes.list()
    if render.check_output(output) == "json":
        render.as_json([n.model_dump(mode="json") for n in nodes])
        return
    render.table("nodes", COLUMNS, [row(n) for n in nodes], keep=("id",))


@app.command("get")
def get(ref: Annotated[str, typer.Argument(help="a node id, or a prefix of at least 4 characters")],
        output: Output = "table") -> None:
    """One node: capacity, labels, its workloads and its recent events."""
    with Client() as client:
        node = client.nodes.get(ref)
    if render.check_output(output) == "json":
        render.as_json(node.model_dump(mode="json"))
        return
    show(node)


def show(node: NodeDetail) -> None:
    render.table("node", COLUMNS, [row(node)], keep=("id",))
    render.table("workloads", ["kind", "workspace", "name", "status", "id"],
                 [[w.kind, w.workspace, w.name, w.status, w.id] for w in node.workloads])
    render.table("events", ["at", "kind", "message"],
                 [[render.cell(e.at), e.kind, e.message] for e in node.events])

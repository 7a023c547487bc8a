"""``nubis workspace …``"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from nubis.cli import render
from nubis.client.client import Client
from nubis.client.workspaces import UNSET
from nubis.models.resources import format_size, parse_bytes
from nubis.models.workspaces import Workspace

app = typer.Typer(help="Workspaces: tenancy for files, secrets, photons and tokens.", no_args_is_help=True)
Output = Annotated[str, typer.Option("--output", "-o", help=render.OUTPUT_HELP)]
COLUMNS = ["name", "storage_quota_bytes", "cpu_quota", "memory_quota", "gpu_quota", "created_at"]
SIZES = ("storage_quota_bytes", "memory_quota")


def rows(items: list[Workspace], columns: list[str]) -> list[list[Any]]:
    """Table rows with sizes in units (``4Gi``, not ``4294967296``); ``--output json`` keeps bytes."""
    table = []
    for ws in items:
        fields = ws.model_dump()
        for key in SIZES:
            if fields[key] is not None:
                fields[key] = format_size(fields[key])
        table.append([render.cell(fields[c]) for c in columns])
    return table


def show(ws: Workspace, output: str) -> None:
    if render.check_output(output) == "json":
        render.model(ws, output)
    else:
        render.table(f"workspace {ws.name}", ["id", *COLUMNS], rows([ws], ["id", *COLUMNS]))


@app.command("create")
def create(
    name: str,
    quota: Annotated[str | None, typer.Option(help="storage quota, e.g. 10Gi")] = None,
    output: Output = "table",
) -> None:
    """Create a workspace (platform admin only)."""
    with Client() as client:
        ws = client.workspaces.create(name, storage_quota_bytes=parse_bytes(quota) if quota else None)
    show(ws, output)


@app.command("list")
def list_(output: Output = "table") -> None:
    """List the workspaces this token can see."""
    with Client() as client:
        items = client.workspaces.list()
    if render.check_output(output) == "json":
        render.models("workspaces", items, COLUMNS, output)
    else:
        render.table("workspaces", COLUMNS, rows(items, COLUMNS))


@app.command("get")
def get(name: str, output: Output = "table") -> None:
    with Client() as client:
        show(client.workspaces.get(name), output)


@app.command("quota")
def quota(
    name: str,
    size: Annotated[str | None, typer.Argument(help="storage, e.g. 10Gi, or 'none' to remove it")] = None,
    cpu: Annotated[str | None, typer.Option(help="CPU cores its jobs may hold, or 'none'")] = None,
    memory: Annotated[str | None, typer.Option(help="memory its jobs may hold, e.g. 8Gi, or 'none'")] = None,
    gpu: Annotated[str | None, typer.Option(help="GPUs its jobs may hold, or 'none'")] = None,
    output: Output = "table",
) -> None:
    """Set or remove a workspace's quotas: storage, and CPU, memory and GPUs for its jobs."""
    def read(value: str | None, parse: Callable[[str], Any]) -> Any:
        if value is None:
            return UNSET
        return None if value.lower() == "none" else parse(value)

    with Client() as client:
        ws = client.workspaces.set_quota(name, read(size, parse_bytes), cpu=read(cpu, float),
                                         memory=read(memory, parse_bytes), gpu=read(gpu, int))
    show(ws, output)


@app.command("delete")
def delete(name: str, yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False) -> None:
    """Delete a workspace with everything in it."""
    if not yes:
        typer.confirm(f"delete workspace {name!r} with all its files, secrets and photons?", abort=True)
    with Client() as client:
        client.workspaces.delete(name)
    render.success(f"deleted workspace {name}")

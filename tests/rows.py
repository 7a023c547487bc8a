"""Row factories: the rows reconcilers read, written straight to the database of a real
``ServerContext`` (SQLite in a temporary folder), so a reconciler round runs without processes."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import select

from nubis.backends.base import Backend
from nubis.models.deployments import DeploymentSpec
from nubis.models.jobs import JobSpec
from nubis.server.app import build_context, prepare
from nubis.server.context import ServerContext
from nubis.server.orm import DeploymentRow, JobRow, PhotonRow, WorkspaceRow
from nubis.server.settings import ServerSettings

_seq = itertools.count(1)
HASH = "ab" * 32


@contextlib.asynccontextmanager
async def context(tmp: Path, backend: Backend, *, db_url: str | None = None) -> AsyncIterator[ServerContext]:
    """The control plane's context on ``backend``, migrated, with the default workspace (SQLite in
    ``tmp`` unless ``db_url`` names another database)."""
    ctx = build_context(ServerSettings(home=tmp / "home", **({"db_url": db_url} if db_url else {})))
    ctx.backend = backend
    await prepare(ctx)
    try:
        yield ctx
    finally:
        await ctx.db.dispose()


async def workspace(ctx: ServerContext, name: str = "default") -> WorkspaceRow:
    async with ctx.db.sessions() as session:
        row = await session.scalar(select(WorkspaceRow).where(WorkspaceRow.name == name))
        if row is None:
            row = WorkspaceRow(name=name)
            session.add(row)
            await session.commit()
        return row


async def photon(ctx: ServerContext, name: str = "echo", version: int = 1, ws: str = "default") -> PhotonRow:
    owner = await workspace(ctx, ws)
    manifest = {"name": name, "entrypoint": "photon.py:Echo", "handlers": [], "content_hash": HASH,
                "resources": {"cpu": 1, "memory": 2**30}}
    row = PhotonRow(workspace_id=owner.id, name=name, version=version, manifest=manifest, content_hash=HASH,
                    size=1)
    async with ctx.db.sessions() as session:
        session.add(row)
        await session.commit()
    return row


async def deployment(ctx: ServerContext, name: str, *, ws: str = "default", **spec: Any) -> DeploymentRow:
    owner = await workspace(ctx, ws)
    checked = DeploymentSpec(name=name, photon="echo:1", **spec)
    row = DeploymentRow(workspace_id=owner.id, name=name, spec=checked.model_dump(mode="json"),
                        photon_name="echo", photon_version=1, generation=1)
    async with ctx.db.sessions() as session:
        session.add(row)
        await session.commit()
    return row


async def job(ctx: ServerContext, name: str, *, ws: str = "default", priority: int = 0,
              **spec: Any) -> JobRow:
    owner = await workspace(ctx, ws)
    checked = JobSpec(name=name, **{"command": ["python", "train.py"], **spec})
    row = JobRow(workspace_id=owner.id, name=name, spec=checked.model_dump(mode="json"), priority=priority,
                 seq=next(_seq))
    async with ctx.db.sessions() as session:
        session.add(row)
        await session.commit()
    return row

"""The real control plane in-process, on SQLite and on PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from nubis.server.app import build_context, create_app
from nubis.server.context import ServerContext
from nubis.server.settings import ServerSettings

PG_ADMIN_URL = os.environ.get("NUBIS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_base() -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0]


async def _pg(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new empty database; skipped without PostgreSQL, except in CI where it must be there."""
    name = f"nubis_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
    try:
        yield f"{_pg_base()}/{name}"
    finally:
        asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'nubis.db'}"
        return
    with postgres_database() as url:
        yield url


@dataclass
class Platform:
    """A running control plane and an httpx client bound to it."""

    app: FastAPI
    ctx: ServerContext
    http: httpx.AsyncClient
    admin_token: str

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"}

    @property
    def admin(self) -> dict[str, str]:
        return self.auth(self.admin_token)

    async def token(self, role: str = "member", workspace: str | None = None, **extra: object) -> str:
        """A new token (creating the workspace if needed); returns its secret."""
        if workspace and workspace != "default":
            r = await self.http.get(f"/api/v1/workspaces/{workspace}", headers=self.admin)
            if r.status_code == 404:
                r = await self.http.post("/api/v1/workspaces", json={"name": workspace},
                                         headers=self.admin)
                assert r.status_code == 201, r.text
        body = {"name": f"{role}-token", "role": role, "workspace": workspace, **extra}
        r = await self.http.post("/api/v1/tokens", json=body, headers=self.admin)
        assert r.status_code == 201, r.text
        return r.json()["token"]


@contextlib.asynccontextmanager
async def running_platform(settings: ServerSettings) -> AsyncIterator[Platform]:
    ctx = build_context(settings)
    app = create_app(ctx)
    async with app.router.lifespan_context(app):
        admin_token = settings.admin_token_file.read_text().strip()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://nubis", timeout=60) as http:
            yield Platform(app=app, ctx=ctx, http=http, admin_token=admin_token)


@pytest.fixture
async def platform(db_url: str, tmp_path: Path) -> AsyncIterator[Platform]:
    settings = ServerSettings(home=tmp_path / "home", db_url=db_url)
    async with running_platform(settings) as p:
        yield p


@pytest.fixture
async def sqlite_platform(tmp_path: Path) -> AsyncIterator[Platform]:
    """SQLite only: for tests whose subject does not touch the database's dialect."""
    settings = ServerSettings(home=tmp_path / "home")
    async with running_platform(settings) as p:
        yield p

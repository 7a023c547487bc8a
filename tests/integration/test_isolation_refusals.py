"""Where no sandbox is possible, members would be as powerful as admins: a second workspace and a
non-admin token are refused with a clear error unless the operator passed --trust-members."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from nubis.server.app import build_context, create_app
from nubis.server.settings import ServerSettings


@pytest.fixture
async def unsandboxed(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    settings = ServerSettings(home=tmp_path / "home")
    ctx = dataclasses.replace(build_context(settings), members_contained=False,
                              isolation="workloads: NOT sandboxed (this kernel has no Landlock)")
    app = create_app(ctx)
    async with app.router.lifespan_context(app):
        admin = {"authorization": f"Bearer {settings.admin_token_file.read_text().strip()}"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://nubis") as http:
            yield http, admin


async def test_a_second_workspace_is_refused_without_a_sandbox(unsandboxed) -> None:  # type: ignore[no-untyped-def]
    http, admin = unsandboxed
    r = await http.post("/api/v1/workspaces", json={"name": "team-b"}, headers=admin)
    assert r.status_code == 403
    error = r.json()["error"]
    assert error["code"] == "isolation_unavailable"
    assert "--trust-members" in error["message"]
    assert (await http.get("/api/v1/workspaces/team-b", headers=admin)).status_code == 404


@pytest.mark.parametrize("role", ["member", "viewer"])
async def test_a_non_admin_token_is_refused_without_a_sandbox(unsandboxed, role: str) -> None:  # type: ignore[no-untyped-def]
    http, admin = unsandboxed
    r = await http.post("/api/v1/tokens", json={"name": "m", "role": role}, headers=admin)
    assert r.status_code == 403 and r.json()["error"]["code"] == "isolation_unavailable"
    r = await http.post("/api/v1/tokens", json={"name": "a", "role": "admin"}, headers=admin)
    assert r.status_code == 201, r.text


async def test_trusting_members_allows_both(tmp_path: Path) -> None:
    settings = ServerSettings(home=tmp_path / "home", trust_members=True)
    ctx = build_context(settings)
    assert ctx.members_contained and "NOT sandboxed" in ctx.isolation
    app = create_app(ctx)
    async with app.router.lifespan_context(app):
        admin = {"authorization": f"Bearer {settings.admin_token_file.read_text().strip()}"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://nubis") as http:
            r = await http.post("/api/v1/workspaces", json={"name": "team-b"}, headers=admin)
            assert r.status_code == 201, r.text
            r = await http.post("/api/v1/tokens", json={"name": "m", "role": "member"}, headers=admin)
            assert r.status_code == 201, r.text

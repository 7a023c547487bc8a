"""Secrets on the real app, on SQLite and PostgreSQL: stored encrypted, never returned."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from nubis.server.services.secrets import decrypt_for_workload

from platform_fixtures import Platform

PLAINTEXT = "hf_Pl41nT3xt-must-never-be-stored-7f3a9c"


async def _set(platform: Platform, name: str, value: str, headers: dict[str, str] | None = None):
    return await platform.http.put(f"/api/v1/secrets/{name}", json={"value": value},
                                   headers=headers or platform.admin)


async def _workspace_id(platform: Platform, name: str = "default") -> str:
    async with platform.ctx.db.sessions() as session:
        row = (await session.execute(
            text("SELECT id FROM workspaces WHERE name = :n"), {"n": name}
        )).scalar_one()
    return row


async def test_set_list_update_delete(platform: Platform) -> None:
    r = await _set(platform, "HF_TOKEN", "first")
    assert r.status_code == 200
    created = r.json()
    assert set(created) == {"name", "created_at", "updated_at"}
    assert created["created_at"] == created["updated_at"]

    r = await _set(platform, "HF_TOKEN", PLAINTEXT)
    updated = r.json()
    assert updated["created_at"] == created["created_at"]
    assert updated["updated_at"] > created["updated_at"]
    await _set(platform, "_OTHER", "x")

    listed = (await platform.http.get("/api/v1/secrets", headers=platform.admin)).json()
    assert [s["name"] for s in listed] == ["HF_TOKEN", "_OTHER"]
    assert all(set(s) == {"name", "created_at", "updated_at"} for s in listed)

    r = await platform.http.delete("/api/v1/secrets/HF_TOKEN", headers=platform.admin)
    assert r.status_code == 204
    listed = (await platform.http.get("/api/v1/secrets", headers=platform.admin)).json()
    assert [s["name"] for s in listed] == ["_OTHER"]
    r = await platform.http.delete("/api/v1/secrets/HF_TOKEN", headers=platform.admin)
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "not_found", "details": None,
                                  "message": "secret 'HF_TOKEN' not found in workspace 'default'"}}


async def test_no_route_returns_a_value(platform: Platform) -> None:
    await _set(platform, "HF_TOKEN", PLAINTEXT)
    r = await platform.http.get("/api/v1/secrets/HF_TOKEN", headers=platform.admin)
    assert r.status_code == 405
    assert PLAINTEXT not in r.text
    listed = await platform.http.get("/api/v1/secrets", headers=platform.admin)
    assert PLAINTEXT not in listed.text
    audit = await platform.http.get("/api/v1/audit", headers=platform.admin)
    assert audit.json()[0]["action"] == "secret.set"
    assert PLAINTEXT not in audit.text
    schema = (await platform.http.get("/openapi.json")).json()
    secret_model = schema["components"]["schemas"]["Secret"]
    assert set(secret_model["properties"]) == {"name", "created_at", "updated_at"}


async def test_values_are_stored_only_encrypted(platform: Platform, tmp_path: Path) -> None:
    await _set(platform, "HF_TOKEN", PLAINTEXT)
    async with platform.ctx.db.sessions() as session:
        dump = (await session.execute(text("SELECT name, nonce, ciphertext FROM secrets"))).all()
    assert [row.name for row in dump] == ["HF_TOKEN"]
    assert all(PLAINTEXT.encode() not in bytes(row.ciphertext) for row in dump)
    assert all(len(bytes(row.nonce)) == 12 for row in dump)
    if platform.ctx.db.url.startswith("sqlite"):
        files = [p for p in tmp_path.glob("nubis.db*") if p.is_file()]
        assert files, "the SQLite database file is not where the test expects it"
        stored = b"".join(path.read_bytes() for path in files)
        assert b"HF_TOKEN" in stored, "the row is not on disk yet: this check would prove nothing"
        assert PLAINTEXT.encode() not in stored
    async with platform.ctx.db.sessions() as session:
        values = await decrypt_for_workload(session, platform.ctx.box, await _workspace_id(platform))
    assert values == {"HF_TOKEN": PLAINTEXT}


@pytest.mark.parametrize("name", ["1BAD", "bad-name", "with space", "é", "A" * 129])
async def test_bad_names_are_refused(platform: Platform, name: str) -> None:
    r = await _set(platform, name, "v")
    assert r.status_code == 422
    assert r.json() == {"error": {
        "code": "validation_error",
        "message": f"invalid secret name {name!r}: use letters, digits and '_', not starting with a "
                   "digit, at most 128 characters (secrets become environment variables)",
        "details": [{"field": "name", "message": "must match ^[A-Za-z_][A-Za-z0-9_]{0,127}$",
                     "type": "secret_name"}],
    }}
    assert (await platform.http.get("/api/v1/secrets", headers=platform.admin)).json() == []


async def test_empty_and_unknown_fields_are_refused(platform: Platform) -> None:
    r = await _set(platform, "EMPTY", "")
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "body.value"
    r = await platform.http.put("/api/v1/secrets/X", json={"value": "v", "name": "Y"},
                                headers=platform.admin)
    assert r.status_code == 422


async def test_viewer_cannot_set_or_delete(platform: Platform) -> None:
    await _set(platform, "HF_TOKEN", "v")
    viewer = platform.auth(await platform.token("viewer"))
    r = await _set(platform, "HF_TOKEN", "changed", viewer)
    assert r.status_code == 403
    assert r.json() == {"error": {
        "code": "forbidden", "details": None,
        "message": "a viewer token cannot write in workspace 'default'; "
                   "ask an admin for a token with more rights",
    }}
    assert (await platform.http.delete("/api/v1/secrets/HF_TOKEN", headers=viewer)).status_code == 403
    names = [s["name"] for s in (await platform.http.get("/api/v1/secrets", headers=viewer)).json()]
    assert names == ["HF_TOKEN"]


async def test_workspaces_do_not_share_secrets(platform: Platform) -> None:
    await _set(platform, "HF_TOKEN", "default-value")
    research = platform.auth(await platform.token("member", "research"))
    assert (await platform.http.get("/api/v1/secrets", headers=research)).json() == []
    r = await platform.http.delete("/api/v1/secrets/HF_TOKEN", headers=research)
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "secret 'HF_TOKEN' not found in workspace 'research'"
    r = await platform.http.get("/api/v1/secrets",
                                headers={**research, "x-nubis-workspace": "default"})
    assert r.status_code == 404
    await _set(platform, "HF_TOKEN", "research-value", research)
    async with platform.ctx.db.sessions() as session:
        ids = {name: await _workspace_id(platform, name) for name in ("default", "research")}
        assert await decrypt_for_workload(session, platform.ctx.box, ids["default"]) == {
            "HF_TOKEN": "default-value"}
        assert await decrypt_for_workload(session, platform.ctx.box, ids["research"]) == {
            "HF_TOKEN": "research-value"}

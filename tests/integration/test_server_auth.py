"""Tokens, roles and workspaces on the real app, on SQLite and PostgreSQL."""

from __future__ import annotations

import httpx

from nubis.models.auth import Role
from nubis.server.services import tokens, workspaces

from platform_fixtures import Platform


async def test_every_route_needs_a_token(platform: Platform) -> None:
    r = await platform.http.get("/api/v1/whoami")
    assert r.status_code == 401
    assert r.json() == {"error": {"code": "unauthorized",
                                  "message": "missing token: send 'Authorization: Bearer <token>'",
                                  "details": None}}
    assert (await platform.http.get("/healthz")).status_code == 200


async def test_tokens_are_shown_once_and_stored_hashed(platform: Platform) -> None:
    secret = await platform.token("viewer")
    listed = (await platform.http.get("/api/v1/tokens", headers=platform.admin)).json()
    assert all("token" not in t for t in listed)
    assert all(secret not in str(t) for t in listed)
    me = (await platform.http.get("/api/v1/whoami", headers=platform.auth(secret))).json()
    assert me["role"] == "viewer"
    assert me["workspace"] == "default"


async def test_revoked_and_expired_tokens_are_refused(platform: Platform) -> None:
    secret = await platform.token("member")
    tokens = (await platform.http.get("/api/v1/tokens", headers=platform.admin)).json()
    token_id = next(t["id"] for t in tokens if t["name"] == "member-token")
    r = await platform.http.delete(f"/api/v1/tokens/{token_id}", headers=platform.admin)
    assert r.json()["revoked_at"] is not None
    r = await platform.http.get("/api/v1/whoami", headers=platform.auth(secret))
    assert r.status_code == 401
    assert "revoked" in r.json()["error"]["message"]


async def test_a_token_is_revoked_by_the_start_of_its_id_or_its_prefix(platform: Platform) -> None:
    async def revoke(ref: str) -> httpx.Response:
        return await platform.http.delete(f"/api/v1/tokens/{ref}", headers=platform.admin)

    await platform.token("member")
    await platform.token("viewer")
    listed = (await platform.http.get("/api/v1/tokens", headers=platform.admin)).json()
    member = next(t for t in listed if t["name"] == "member-token")
    viewer = next(t for t in listed if t["name"] == "viewer-token")
    r = await revoke(member["id"][:8])  # what `nubis token list` shows
    assert (r.status_code, r.json()["id"], r.json()["revoked_at"] is not None) == (200, member["id"], True)
    r = await revoke(viewer["prefix"])
    assert (r.status_code, r.json()["id"]) == (200, viewer["id"])
    r = await revoke(member["id"][:3])  # too short to be a start of an id
    assert r.json()["error"] == {"code": "not_found", "details": None,
                                 "message": f"token {member['id'][:3]!r} not found in workspace 'default'"}


async def test_an_ambiguous_start_of_an_id_is_refused_with_the_candidates(platform: Platform) -> None:
    async with platform.ctx.db.sessions() as session:
        workspace = await workspaces.get_by_name(session, "default")
        assert workspace is not None
        for token_id in ("abcd1111", "abcd2222"):
            row, _ = tokens.new_row(workspace.id, f"t-{token_id}", Role.viewer)
            row.id = token_id + "0" * 24
            session.add(row)
        await session.commit()
    r = await platform.http.delete("/api/v1/tokens/abcd", headers=platform.admin)
    assert r.status_code == 400
    assert r.json()["error"]["message"] == ("'abcd' fits 2 tokens: abcd11110000 (t-abcd1111), "
                                            "abcd22220000 (t-abcd2222); give more of the id")
    r = await platform.http.delete("/api/v1/tokens/abcd2", headers=platform.admin)
    assert (r.status_code, r.json()["name"]) == (200, "t-abcd2222")


async def test_the_platform_admin_lists_another_workspaces_tokens(platform: Platform) -> None:
    await platform.token("member", "research")
    r = await platform.http.get("/api/v1/tokens", headers={**platform.admin, "x-nubis-workspace": "research"})
    assert [(t["name"], t["workspace"]) for t in r.json()] == [("member-token", "research")]


async def test_other_workspaces_are_invisible(platform: Platform) -> None:
    research = await platform.token("admin", "research")
    h = platform.auth(research)
    r = await platform.http.get("/api/v1/workspaces/default", headers=h)
    assert r.status_code == 404
    r = await platform.http.get("/api/v1/whoami", headers={**h, "x-nubis-workspace": "default"})
    assert r.status_code == 404
    names = [w["name"] for w in (await platform.http.get("/api/v1/workspaces", headers=h)).json()]
    assert names == ["research"]


async def test_roles_limit_what_a_token_can_do(platform: Platform) -> None:
    member = platform.auth(await platform.token("member"))
    r = await platform.http.post("/api/v1/tokens", json={"role": "viewer"}, headers=member)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"
    r = await platform.http.post("/api/v1/workspaces", json={"name": "x"}, headers=member)
    assert r.status_code == 403


async def test_changes_are_audited(platform: Platform) -> None:
    await platform.http.post("/api/v1/workspaces", json={"name": "team-a"}, headers=platform.admin)
    events = (await platform.http.get("/api/v1/audit", headers=platform.admin)).json()
    assert events[0]["action"] == "workspace.create"
    assert events[0]["target"] == "team-a"
    assert events[0]["actor"].startswith("admin (")


async def test_duplicate_workspace_is_a_conflict(platform: Platform) -> None:
    body = {"name": "dup"}
    r = await platform.http.post("/api/v1/workspaces", json=body, headers=platform.admin)
    assert r.status_code == 201
    r = await platform.http.post("/api/v1/workspaces", json=body, headers=platform.admin)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "conflict"


async def test_a_deployment_scoped_token_calls_only_that_deployment(sqlite_platform: Platform) -> None:
    import hashlib

    from test_auth_matrix import _deployment

    p = sqlite_platform
    mine, other = (await _deployment(p))["name"], (await _deployment(p))["name"]
    r = await p.http.post("/api/v1/tokens", json={"name": "caller", "role": "viewer", "deployment": mine},
                          headers=p.admin)
    assert r.status_code == 201, r.text
    assert r.json()["deployment"] == mine
    digest = hashlib.sha256(r.json()["token"].encode()).hexdigest()
    r = await p.http.get("/api/v1/whoami", headers=p.auth(r.json()["token"]))
    assert r.status_code == 403
    assert "only calls deployment" in r.json()["error"]["message"]
    routes = {d["name"]: d for d in (await p.http.get("/api/v1/gateway/routes", headers=p.admin)).json()[
        "deployments"]}
    assert digest in routes[mine]["token_hashes"]
    assert digest not in routes[other]["token_hashes"]
    r = await p.http.post("/api/v1/tokens", json={"name": "x", "role": "viewer", "deployment": "nope"},
                          headers=p.admin)
    assert r.status_code == 422 and "does not exist" in r.json()["error"]["message"]

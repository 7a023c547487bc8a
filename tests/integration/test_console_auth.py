"""The console's security, in-process against the real app: sessions from tokens, the cookie's
flags, CSRF on every write, roles, other workspaces' objects, logout, one-time links, headers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from nubis.errors import UnauthorizedError
from nubis.server.console.responses import CSP
from nubis.server.orm import ConsoleSessionRow
from nubis.server.services import console

import rows
from platform_fixtures import Platform

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def login(http: httpx.AsyncClient, token: str) -> str:
    """Log in through the form as a browser does; the session's CSRF token."""
    form = await http.get("/login")
    r = await http.post("/login", data={"token": token, "csrf": CSRF.search(form.text).group(1)})
    assert r.status_code == 303, r.text
    page = await http.get("/")
    assert page.status_code == 200, page.text
    return CSRF.search(page.text).group(1)


def browser(platform: Platform) -> httpx.AsyncClient:
    """Another browser: a client of the same app with its own cookie jar."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=platform.app), base_url="http://nubis")


async def test_a_valid_token_makes_a_strict_http_only_session_cookie(sqlite_platform: Platform) -> None:
    http = sqlite_platform.http
    form = await http.get("/login")
    r = await http.post("/login", data={"token": sqlite_platform.admin_token, "next": "/nodes",
                                        "csrf": CSRF.search(form.text).group(1)})
    assert r.status_code == 303 and r.headers["location"] == "/nodes"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("nubis_session="))
    flags = {f.strip().lower() for f in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= flags
    assert "secure" not in flags  # plain http here; https requests get Secure
    assert (await http.get("/nodes")).status_code == 200


async def test_a_bad_token_stays_on_the_login_page_with_the_reason(sqlite_platform: Platform) -> None:
    http = sqlite_platform.http
    form = await http.get("/login")
    r = await http.post("/login", data={"token": "nbs_nope", "csrf": CSRF.search(form.text).group(1)})
    assert r.status_code == 401 and "unknown token" in r.text
    assert "nubis_session" not in http.cookies


async def test_the_login_form_needs_its_own_csrf_cookie(sqlite_platform: Platform) -> None:
    async with browser(sqlite_platform) as other:
        r = await other.post("/login", data={"token": sqlite_platform.admin_token, "csrf": "forged"})
    assert r.status_code == 403 and "nubis_session" not in r.headers.get("set-cookie", "")


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example"])
async def test_after_login_only_this_site(sqlite_platform: Platform, target: str) -> None:
    http = sqlite_platform.http
    form = await http.get("/login")
    r = await http.post("/login", data={"token": sqlite_platform.admin_token, "next": target,
                                        "csrf": CSRF.search(form.text).group(1)})
    assert r.headers["location"] == "/"


async def test_without_a_session_pages_lead_to_the_login(sqlite_platform: Platform) -> None:
    http = sqlite_platform.http
    r = await http.get("/deployments?status=ready")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fdeployments%3Fstatus%3Dready"
    r = await http.get("/deployments", headers={"hx-request": "true"})
    assert r.headers["hx-redirect"].startswith("/login")
    assert (await http.get("/live/deployments", headers={"accept": "text/event-stream"})).status_code == 204
    assert (await http.post("/logout")).status_code == 303


async def test_every_console_response_carries_the_security_headers(sqlite_platform: Platform) -> None:
    http = sqlite_platform.http
    await login(http, sqlite_platform.admin_token)
    for path in ("/login", "/", "/deployments", "/nodes", "/deployments/missing", "/static/console.js",
                 "/static/vendor/htmx.min.js"):
        r = await http.get(path)
        assert r.headers["content-security-policy"] == CSP, path
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "same-origin"
        assert r.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self';" in CSP and "unsafe-inline" not in CSP
    page = (await http.get("/")).text
    assert "<script>" not in page and " style=" not in page and " on" + "click=" not in page


async def test_a_write_without_the_csrf_token_is_refused(sqlite_platform: Platform) -> None:
    http = sqlite_platform.http
    csrf = await login(http, sqlite_platform.admin_token)
    await rows.deployment(sqlite_platform.ctx, "d1", autoscaling={"min_replicas": 0})
    for headers, data in (({}, {}), ({"x-csrf-token": "wrong"}, {}), ({}, {"csrf": "wrong"})):
        r = await http.post("/deployments/d1/delete", headers=headers, data=data)
        assert r.status_code == 403 and "csrf_failed" in r.text
    r = await http.post("/deployments/d1/scale", headers={"x-csrf-token": csrf},
                        data={"min_replicas": 0, "max_replicas": 3})
    assert r.status_code == 303
    detail = await http.get("/api/v1/deployments/d1", headers=sqlite_platform.admin)
    assert detail.json()["max_replicas"] == 3


async def test_a_viewer_sees_no_write_buttons_and_a_forged_post_gets_403(sqlite_platform: Platform) -> None:
    await rows.deployment(sqlite_platform.ctx, "d2", autoscaling={"min_replicas": 0})
    viewer = await sqlite_platform.token("viewer")
    async with browser(sqlite_platform) as http:
        csrf = await login(http, viewer)
        page = await http.get("/deployments/d2")
        assert page.status_code == 200
        assert "/deployments/d2/delete" not in page.text and "/deployments/d2/scale" not in page.text
        assert (await http.get("/deployments/d2/delete")).status_code == 403
        for action, data in (("delete", {}), ("scale", {"min_replicas": 0, "max_replicas": 2}),
                             ("update", {"photon": "echo:1"})):
            r = await http.post(f"/deployments/d2/{action}", data={**data, "csrf": csrf})
            assert r.status_code == 403 and "forbidden" in r.text, action
    still = await sqlite_platform.http.get("/api/v1/deployments/d2", headers=sqlite_platform.admin)
    assert still.status_code == 200


async def test_another_workspaces_deployment_is_404(sqlite_platform: Platform) -> None:
    await rows.deployment(sqlite_platform.ctx, "theirs", autoscaling={"min_replicas": 0})
    member = await sqlite_platform.token("admin", workspace="other")
    async with browser(sqlite_platform) as http:
        csrf = await login(http, member)
        for path in ("/deployments/theirs", "/deployments/theirs/metrics.json",
                     "/live/deployments/theirs/logs", "/live/deployments/theirs"):
            assert (await http.get(path)).status_code == 404, path
        r = await http.post("/deployments/theirs/delete", data={"csrf": csrf})
        assert r.status_code == 404
        listing = await http.get("/deployments")
        assert "theirs" not in listing.text


async def test_logout_ends_the_session_on_the_server(sqlite_platform: Platform) -> None:
    http = sqlite_platform.http
    csrf = await login(http, sqlite_platform.admin_token)
    cookie = http.cookies["nubis_session"]
    r = await http.post("/logout", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    async with browser(sqlite_platform) as replay:
        replay.cookies.set("nubis_session", cookie)
        assert (await replay.get("/")).status_code == 303


async def test_a_revoked_token_ends_its_console_sessions(sqlite_platform: Platform) -> None:
    token = await sqlite_platform.token("member")
    async with browser(sqlite_platform) as http:
        await login(http, token)
        me = await sqlite_platform.http.get("/api/v1/whoami", headers=sqlite_platform.auth(token))
        r = await sqlite_platform.http.delete(f"/api/v1/tokens/{me.json()['token_id']}",
                                              headers=sqlite_platform.admin)
        assert r.status_code == 200
        assert (await http.get("/")).status_code == 303


async def test_a_one_time_link_logs_in_once(sqlite_platform: Platform) -> None:
    token = await sqlite_platform.token("viewer")
    r = await sqlite_platform.http.post("/api/v1/console/links", headers=sqlite_platform.auth(token))
    link = r.json()
    assert link["path"].startswith("/login/")
    async with browser(sqlite_platform) as http:
        r = await http.get(link["path"])
        assert r.status_code == 303 and r.headers["location"] == "/"
        page = await http.get("/")
        assert page.status_code == 200 and ">viewer<" in page.text
    async with browser(sqlite_platform) as again:
        r = await again.get(link["path"])
        assert r.status_code == 401 and "used already" in r.text
        assert "nubis_session" not in again.cookies


async def test_a_one_time_link_expires_after_60_s(sqlite_platform: Platform) -> None:
    token = await sqlite_platform.token("member")
    r = await sqlite_platform.http.post("/api/v1/console/links", headers=sqlite_platform.auth(token))
    code = r.json()["path"].rsplit("/", 1)[1]
    ctx = sqlite_platform.ctx
    async with ctx.db.sessions() as session:
        with pytest.raises(UnauthorizedError):
            await console.redeem_link(session, ctx.box, code, now=datetime.now(UTC) + timedelta(seconds=61))
        with pytest.raises(UnauthorizedError):  # gone: an expired link is removed when seen
            await console.redeem_link(session, ctx.box, code, now=datetime.now(UTC))


async def test_the_platform_admin_switches_workspace(sqlite_platform: Platform) -> None:
    await sqlite_platform.token("viewer", workspace="team")
    await rows.deployment(sqlite_platform.ctx, "in-team", ws="team", autoscaling={"min_replicas": 0})
    http = sqlite_platform.http
    csrf = await login(http, sqlite_platform.admin_token)
    assert "in-team" not in (await http.get("/deployments")).text
    r = await http.post("/workspace", data={"workspace": "team", "next": "/deployments", "csrf": csrf})
    assert r.status_code == 303
    assert "in-team" in (await http.get("/deployments")).text
    r = await http.post("/workspace", data={"workspace": "nope", "csrf": csrf})
    assert r.status_code == 404


async def test_logging_in_again_ends_the_session_the_browser_had(sqlite_platform: Platform) -> None:
    http = sqlite_platform.http
    await login(http, sqlite_platform.admin_token)
    first = http.cookies["nubis_session"]
    await login(http, await sqlite_platform.token("viewer"))
    assert http.cookies["nubis_session"] != first
    async with browser(sqlite_platform) as replay:
        replay.cookies.set("nubis_session", first)
        assert (await replay.get("/")).status_code == 303


async def test_expired_sessions_end_and_are_removed(sqlite_platform: Platform) -> None:
    ctx = sqlite_platform.ctx
    me = (await sqlite_platform.http.get("/api/v1/whoami", headers=sqlite_platform.admin)).json()
    past = datetime.now(UTC) - console.SESSION_TTL - timedelta(seconds=1)
    async with ctx.db.sessions() as session:
        token = sqlite_platform.admin_token
        old = await console.open_session(session, ctx.box, me["token_id"], token, now=past)
        with pytest.raises(UnauthorizedError, match="expired"):
            await console.get_session_or_raise(session, ctx.box, old, now=datetime.now(UTC))
        stale = await console.open_session(session, ctx.box, me["token_id"], token, now=past)
        await console.open_session(session, ctx.box, me["token_id"], token, now=datetime.now(UTC))
        assert await session.get(ConsoleSessionRow, console.digest(stale)) is None

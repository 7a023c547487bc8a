"""The console's jobs, models, photons, storage, secrets, tokens, workspaces and audit pages on the real
app in-process: roles (a viewer sees no write buttons, its forged POSTs get 403), CSRF on every form,
another workspace's objects 404, bad input 4xx with a message, live streams that end."""

from __future__ import annotations

import asyncio
import html as html_lib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from platform_fixtures import Platform

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@asynccontextmanager
async def browser(platform: Platform, token: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A logged-in console user of its own (cookies), and the session's CSRF token."""
    transport = httpx.ASGITransport(app=platform.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://nubis", timeout=60) as http:
        form = await http.get("/login")
        r = await http.post("/login", data={"token": token, "csrf": CSRF.search(form.text).group(1)})
        assert r.status_code == 303, r.text
        page = await http.get("/secrets")
        yield http, CSRF.search(page.text).group(1)


def flash(html: str) -> str:
    found = re.search(r'class="flash error"[^>]*>([^<]*)', html)
    return html_lib.unescape(found.group(1)) if found else ""


async def finished_job(platform: Platform, **spec: object) -> dict[str, object]:
    r = await platform.http.post("/api/v1/jobs", json=spec, headers=platform.admin)
    assert r.status_code == 201, r.text
    for _ in range(600):
        job = (await platform.http.get(f"/api/v1/jobs/{r.json()['id']}", headers=platform.admin)).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job did not end: {job}")


WRITES = [
    ("/secrets", {"name": "X", "value": "v"}),
    ("/secrets/X/delete", {}),
    ("/storage/delete", {"path": "data/a.csv"}),
    ("/models/m/1/quantize", {}),
    ("/models/m/1/export", {}),
    ("/models/m/1/deploy", {"deployment": "m"}),
]
ADMIN_WRITES = [("/tokens", {"name": "t"}), ("/tokens/abcd/revoke", {})]
PLATFORM_WRITES = [("/workspaces", {"name": "w2"}), ("/workspaces/default/quota", {"cpu": "1"}),
                   ("/workspaces/w2/delete", {})]


async def test_a_viewer_sees_no_write_buttons_and_its_forged_posts_are_403(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    job = await finished_job(p, command=["python", "-c", "print('done')"], name="seen")
    await p.http.put("/api/v1/storage/data/a.csv", content=b"a,b\n", headers=p.admin)
    async with browser(p, await p.token("viewer")) as (http, csrf):
        pages = {path: (await http.get(path)).text for path in
                 (f"/jobs/{job['id']}", "/storage?prefix=data/", "/secrets", "/tokens", "/models")}
        assert "seen" in pages[f"/jobs/{job['id']}"] and 'id="cancel-job"' not in pages[f"/jobs/{job['id']}"]
        folder = pages["/storage?prefix=data/"]
        assert "a.csv" in folder and 'id="upload"' not in folder and ">delete<" not in folder
        assert 'id="set-secret"' not in pages["/secrets"]
        assert 'id="create-token"' not in pages["/tokens"] and "Only an admin" in pages["/tokens"]
        nav = re.findall(r'<nav>(.*?)</nav>', pages["/secrets"], re.S)[0]
        assert "/workspaces" not in nav and "/audit" not in nav
        for path, data in WRITES + ADMIN_WRITES + PLATFORM_WRITES:
            r = await http.post(path, data={"csrf": csrf, **data})
            assert r.status_code == 403, (path, r.status_code, r.text[-500:])
        upload = await http.post("/storage/upload", data={"csrf": csrf, "folder": ""},
                                 files={"file": ("x.txt", b"x")})
        assert upload.status_code == 403
        for path in ("/workspaces", "/audit", "/storage/delete?path=data/a.csv"):
            assert (await http.get(path)).status_code == 403, path
    assert (await p.http.get("/api/v1/storage/x.txt", headers=p.admin)).status_code == 404
    assert (await p.http.get("/api/v1/secrets", headers=p.admin)).json() == []


async def test_every_form_needs_the_sessions_csrf_token(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    async with browser(p, p.admin_token) as (http, csrf):
        for path, data in WRITES + ADMIN_WRITES + PLATFORM_WRITES + [("/jobs/nope/cancel", {})]:
            for given in ({}, {"csrf": "not-the-token"}):
                r = await http.post(path, data={**given, **data})
                assert r.status_code == 403 and "CSRF" in flash(r.text), (path, r.status_code)
        upload = await http.post("/storage/upload", data={"folder": ""}, files={"file": ("x.txt", b"x")})
        assert upload.status_code == 403 and "CSRF" in flash(upload.text)
        ok = await http.post("/secrets", data={"csrf": csrf, "name": "OK", "value": "v"})
        assert ok.status_code == 303


async def test_another_workspaces_objects_are_404(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    job = await finished_job(p, command=["python", "-c", "print('secret output')"], name="theirs")
    await p.http.put("/api/v1/storage/private/data.csv", content=b"1,2\n", headers=p.admin)
    await p.http.put("/api/v1/secrets/THEIRS", json={"value": "v"}, headers=p.admin)
    async with browser(p, await p.token("admin", workspace="other")) as (http, csrf):
        at = f"/jobs/{job['id']}"
        for path in (at, f"{at}/updates", f"{at}/logs/follow", f"{at}/logs/0.txt", "/jobs/theirs",
                     "/storage/download?path=private/data.csv", "/photons/echo", "/models/digits"):
            r = await http.get(path)
            assert r.status_code == 404, (path, r.status_code)
            assert "secret output" not in r.text
        assert (await http.post(f"/jobs/{job['id']}/cancel", data={"csrf": csrf})).status_code == 404
        assert (await http.post("/secrets/THEIRS/delete", data={"csrf": csrf})).status_code == 404
        listing = (await http.get("/storage")).text
        assert "private" not in listing and "theirs" not in (await http.get("/jobs")).text
        assert (await http.get("/workspaces")).status_code == 403  # a workspace admin, not the platform's


async def test_bad_input_is_4xx_with_a_message(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    async with browser(p, p.admin_token) as (http, csrf):
        cases = {
            "/jobs?status=nope": (422, "unknown job status"),
            "/jobs?page=0": (422, "page"),
            "/jobs/nope": (404, "not found"),
            "/jobs/nope/logs/0.txt": (404, "not found"),
            "/storage?prefix=../etc": (422, "'..' is not allowed"),
            "/storage/download?path=missing.txt": (404, "no file"),
            "/storage/delete?path=missing.txt": (404, "no file"),
            "/models/nope": (404, "not found"),
            "/photons/nope": (404, "not found"),
            "/audit?page=-1": (422, "page"),
            "/workspaces/default/delete": (403, "cannot be deleted"),
        }
        for path, (status, words) in cases.items():
            r = await http.get(path)
            assert r.status_code == status and words in flash(r.text), (path, r.status_code, flash(r.text))
        posts = {
            "/secrets": ({"name": "bad name", "value": "x"}, 422, "invalid secret name"),
            "/tokens": ({"name": "t", "role": "boss"}, 422, "role"),
            "/workspaces": ({"name": "Bad Name"}, 422, "name"),
            "/workspaces/default/quota": ({"memory": "lots"}, 422, "cannot read size"),
            "/workspaces/nope/quota": ({"cpu": "1"}, 404, "not found"),
            "/models/nope/1/deploy": ({"deployment": "Bad Name"}, 422, "name"),
            "/storage/delete": ({"path": "missing.txt"}, 404, ""),
        }
        for path, (data, status, words) in posts.items():
            r = await http.post(path, data={"csrf": csrf, **data})
            assert r.status_code == status and words in flash(r.text), (path, r.status_code, flash(r.text))
        not_multipart = await http.post("/storage/upload", data={"csrf": csrf, "folder": ""})
        assert not_multipart.status_code == 400 and "multipart/form-data" in flash(not_multipart.text)


async def test_tokens_secrets_storage_and_audit_through_the_forms(platform: Platform) -> None:
    p = platform  # SQLite and PostgreSQL: the audit log's pages are counted and sliced in SQL
    async with browser(p, p.admin_token) as (http, csrf):
        created = await http.post("/tokens", data={"csrf": csrf, "name": "ci", "role": "viewer",
                                                   "expires_in_days": "7"})
        assert created.status_code == 201 and created.headers["cache-control"] == "no-store"
        secret = re.search(r'id="new-token">([^<]+)<', created.text).group(1)
        listing = (await http.get("/tokens")).text
        assert "ci" in listing and secret not in listing and secret[:10] in listing
        rows = {("mine" if "this session" in row else "ci" if ">ci<" in row else "other"): row
                for row in listing.split("<tr>")[2:]}
        seen_cell = '<td class="hide-sm">-</td>'  # never seen in the console
        assert seen_cell in rows["ci"] and seen_cell not in rows["mine"] and "ago</time>" in rows["mine"]
        assert (await p.http.get("/api/v1/whoami", headers=p.auth(secret))).json()["role"] == "viewer"
        token_id = (await p.http.get("/api/v1/whoami", headers=p.auth(secret))).json()["token_id"]
        assert (await http.post(f"/tokens/{token_id}/revoke", data={"csrf": csrf})).status_code == 303
        assert (await p.http.get("/api/v1/whoami", headers=p.auth(secret))).status_code == 401

        for i in range(55):
            assert (await http.post("/secrets", data={"csrf": csrf, "name": f"S{i}", "value": f"hidden-{i}"})
                    ).status_code == 303
        page = (await http.get("/secrets")).text
        assert "S54" in page and "hidden-" not in page
        first, second = (await http.get("/audit")).text, (await http.get("/audit?page=2")).text
        assert "page 1 of 2" in first and "secret.set" in first and "page 2 of 2" in second
        assert "token.revoke" not in first and "token.revoke" in second  # newest first
        assert "page 1 of 2" not in (await http.get("/audit?action=token.create")).text

        r = await http.post("/storage/upload", data={"csrf": csrf, "folder": "in/deep"},
                            files={"file": ("../../évil name.bin", b"\x00\x01" * 50_000)})
        assert r.status_code == 303 and r.headers["location"] == "/storage?prefix=in/deep/"
        got = await http.get("/storage/download?path=in/deep/évil name.bin")
        assert got.content == b"\x00\x01" * 50_000
        assert "attachment" in got.headers["content-disposition"]
        root = (await http.get("/storage")).text
        assert 'href="/storage?prefix=in/"' in root and "(1 file)" in root
        for i in range(105):
            await p.http.put(f"/api/v1/storage/many/f{i:03d}.txt", content=b"x", headers=p.admin)
        await p.http.put("/api/v1/storage/many/sub/deeper.txt", content=b"x", headers=p.admin)
        pages = [(await http.get(f"/storage?prefix=many/&page={n}")).text for n in (1, 2)]
        assert "page 1 of 2" in pages[0] and "sub/" in pages[0] and "f098.txt" in pages[0]  # folders first
        assert "f099.txt" in pages[1] and "f104.txt" in pages[1] and "f098.txt" not in pages[1]
        confirm = await http.get("/storage/delete?path=in")
        assert confirm.status_code == 200 and "1 file(s)" in confirm.text
        assert (await http.post("/storage/delete", data={"csrf": csrf, "path": "in", "recursive": "true"})
                ).headers["location"] == "/storage?prefix="
        assert (await p.http.get("/api/v1/storage", params={"prefix": "in/"}, headers=p.admin)).json() == []


async def test_job_queue_why_pending_filters_and_streams_that_end(platform: Platform) -> None:
    p = platform  # SQLite and PostgreSQL: the filters and pages are SQL
    r = await p.http.patch("/api/v1/workspaces/default", json={"cpu_quota": 1}, headers=p.admin)
    assert r.status_code == 200
    hold = {"command": ["python", "-c", "import time; time.sleep(60)"], "resources": {"cpu": 1}}
    runner = (await p.http.post("/api/v1/jobs", json={**hold, "name": "runner"}, headers=p.admin)).json()
    waiting = [(await p.http.post("/api/v1/jobs", json={**hold, "name": f"waiter-{i}", "priority": -i},
                                  headers=p.admin)).json() for i in range(2)]
    for record in ({"epoch": 1, "loss": 0.9, "accuracy": 0.5}, {"epoch": 2, "loss": 0.4, "accuracy": 0.8}):
        assert (await p.http.post(f"/api/v1/jobs/{waiting[0]['id']}/metrics", json=record, headers=p.admin)
                ).status_code == 204
    async with browser(p, p.admin_token) as (http, csrf):
        for _ in range(100):
            queued = (await http.get("/jobs?status=queued")).text
            if "runner" not in queued and "quota" in queued:
                break
            await asyncio.sleep(0.1)
        assert "waiter-0" in queued and "waiter-1" in queued and "runner" not in queued
        assert "quota" in queued  # why pending
        named = (await http.get("/jobs?name=waiter-1")).text
        assert "waiter-1" in named and "waiter-0" not in named and "runner" not in named
        detail = (await http.get(f"/jobs/{waiting[0]['id']}")).text
        assert "why pending" in detail and 'id="cancel-job"' in detail
        assert """data-history='[{"accuracy": 0.5, "epoch": 1, "loss": 0.9}, {""" in detail
        assert """data-series='["loss", "accuracy"]'""" in detail
        for job in (runner, *waiting):
            assert (await http.post(f"/jobs/{job['id']}/cancel", data={"csrf": csrf})).status_code == 303
        for _ in range(200):
            states = [(await p.http.get(f"/api/v1/jobs/{j['id']}", headers=p.admin)).json()["status"]
                      for j in (runner, *waiting)]
            if states == ["cancelled"] * 3:
                break
            await asyncio.sleep(0.1)
        updates = (await http.get(f"/jobs/{waiting[0]['id']}/updates?have=1")).text
        assert updates.count("event: metrics") == 1 and '"epoch": 2' in updates
        assert "event: state" in updates and "cancelled" in updates
        assert updates.rstrip().endswith("event: end\ndata:")
        again = await http.post(f"/jobs/{runner['id']}/cancel", data={"csrf": csrf})
        assert again.status_code == 409 and "already ended" in flash(again.text)


async def test_both_ranks_logs_follow_on_one_stream_to_the_end(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    script = "import os; print('hello <b> from rank', os.environ['RANK'])"
    job = await finished_job(p, command=["python", "-c", script], workers=2, name="ranks")
    async with browser(p, p.admin_token) as (http, _):
        body = (await http.get(f"/jobs/{job['id']}/logs/follow")).text
        for rank in (0, 1):
            assert f"event: rank-{rank}\ndata: <div>hello &lt;b&gt; from rank {rank}</div>" in body
            text = await http.get(f"/jobs/{job['id']}/logs/{rank}.txt")
            assert text.text == f"hello <b> from rank {rank}\n"
        assert body.rstrip().endswith("event: end\ndata:")
        assert (await http.get(f"/jobs/{job['id']}/logs/2.txt")).status_code == 422


async def test_an_upload_over_the_quota_is_413_and_leaves_nothing(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    quota = {"storage_quota_bytes": 10_000}
    r = await p.http.patch("/api/v1/workspaces/default", json=quota, headers=p.admin)
    assert r.status_code == 200
    async with browser(p, p.admin_token) as (http, csrf):
        r = await http.post("/storage/upload", data={"csrf": csrf, "folder": "big"},
                            files={"file": ("big.bin", b"x" * 50_000)})
        assert r.status_code == 413 and "storage quota" in flash(r.text)
    assert (await p.http.get("/api/v1/storage", headers=p.admin)).json() == []

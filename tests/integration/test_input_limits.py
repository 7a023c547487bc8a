"""Bad input cannot hurt the control plane: every limit answers its exact status and error code.

Body size (before parsing and before the token is read), env/command/spec caps, finite numbers,
bounded versions (SQLite and PostgreSQL), storage paths, manifest handlers, code archives,
unreadable JSON, and a client that goes away mid-request.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import socket
import tempfile
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nubis.models.limits import MAX_CODE_FILES, MAX_JSON_BODY
from nubis.photon.build import build_bundle

from platform_fixtures import Platform
from platform_process import nubis_up

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HUGE = "99999999999999999999"
JOB = {"command": ["python", "-c", "pass"]}


def error(status: int, code: str) -> tuple[int, str]:
    return status, code


def answer(r: Any) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


def validation_message(r: Any) -> str:
    assert r.status_code == 422, r.text
    body = r.json()["error"]
    assert body["code"] == "validation_error"
    return body["message"]


# body size: before parsing, before auth


async def test_declared_body_over_1_mib_is_413_before_the_token_is_read(sqlite_platform: Platform) -> None:
    body = b"[" + b" " * MAX_JSON_BODY + b"]"
    r = await sqlite_platform.http.post("/api/v1/jobs", content=body,
                                        headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json() == {"error": {
        "code": "payload_too_large", "details": None,
        "message": "the request body is larger than 1024 KiB: send files through storage "
                   "(PUT /api/v1/storage/<path>) and refer to their path",
    }}


async def test_a_chunked_body_is_cut_at_1_mib(sqlite_platform: Platform) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(64):  # 4 MiB in 64 KiB chunks, no content-length
            sent += 1
            yield b" " * 65536

    r = await sqlite_platform.http.post("/api/v1/jobs", content=chunks(),
                                        headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert answer(r) == error(413, "payload_too_large")
    assert sent <= MAX_JSON_BODY // 65536 + 2  # the rest was never read


async def test_a_body_under_the_limit_reaches_auth(sqlite_platform: Platform) -> None:
    r = await sqlite_platform.http.post("/api/v1/jobs", content=b"[" + b" " * (MAX_JSON_BODY - 2) + b"]",
                                        headers={"content-type": "application/json"})
    assert answer(r) == error(401, "unauthorized")


async def test_uploads_keep_their_streamed_limits(sqlite_platform: Platform) -> None:
    data = b"x" * (3 * MAX_JSON_BODY)
    r = await sqlite_platform.http.put("/api/v1/storage/big.bin", content=data, headers=sqlite_platform.admin)
    assert r.status_code == 201, r.text
    assert r.json()["size"] == len(data)


# caps on env, command and spec size


async def test_env_value_command_and_spec_size_are_capped(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    r = await p.http.post("/api/v1/jobs", json={**JOB, "env": {"A": "x" * (32 * 1024 + 1)}}, headers=p.admin)
    assert "env 'A' is longer than 32 KiB" in validation_message(r)
    r = await p.http.post("/api/v1/jobs", json={**JOB, "env": {"A": "a\0b"}}, headers=p.admin)
    assert "env 'A' contains a NUL character" in validation_message(r)
    r = await p.http.post("/api/v1/jobs", json={"command": ["python", "-c", "x" * 70_000]}, headers=p.admin)
    assert "the command is 70011 bytes long; at most 64 KiB" in validation_message(r)
    env = {f"V{i}": "x" * 30_000 for i in range(10)}
    r = await p.http.post("/api/v1/jobs", json={**JOB, "env": env}, headers=p.admin)
    assert "the job spec is" in validation_message(r)
    assert "at most 256 KiB" in validation_message(r)
    spec = {"name": "web", "photon": "echo", "env": env}
    r = await p.http.post("/api/v1/deployments", json=spec, headers=p.admin)
    assert "the deployment spec is" in validation_message(r)
    r = await p.http.post("/api/v1/deployments", json={**spec, "env": {"A": "x" * 40_000}}, headers=p.admin)
    assert "env 'A' is longer than 32 KiB" in validation_message(r)


# finite numbers only


@pytest.mark.parametrize(("path", "body"), [
    ("/api/v1/jobs", '{"command": ["python"], "timeout_s": 1e400}'),
    ("/api/v1/jobs", '{"command": ["python"], "timeout_s": NaN}'),
    ("/api/v1/jobs", '{"command": ["python"], "resources": {"cpu": Infinity}}'),
    ("/api/v1/jobs", '{"command": ["python"], "resources": {"memory": 1e400}}'),
    ("/api/v1/jobs", '{"command": ["python"], "resources": {"memory": -Infinity}}'),
    ("/api/v1/train", '{"model_name": "mlp", "data_path": "builtin:digits", "learning_rate": NaN}'),
    ("/api/v1/deployments", '{"name": "d", "photon": "echo", "autoscaling": {"target_in_flight": 1e400}}'),
    ("/api/v1/deployments", '{"name": "d", "photon": "echo", "autoscaling": {"scale_up_delay_s": NaN}}'),
    ("/api/v1/jobs/no-such-job/metrics", '{"epoch": 1, "loss": NaN}'),
    ("/api/v1/jobs/no-such-job/metrics", '{"epoch": 1, "nested": {"acc": [1e400]}}'),
])
async def test_non_finite_numbers_are_422(sqlite_platform: Platform, path: str, body: str) -> None:
    r = await sqlite_platform.http.post(path, content=body, headers={
        **sqlite_platform.admin, "content-type": "application/json"})
    assert answer(r) == error(422, "validation_error"), r.text


async def test_non_finite_quota_is_422(sqlite_platform: Platform) -> None:
    r = await sqlite_platform.http.patch("/api/v1/workspaces/default", content='{"cpu_quota": Infinity}',
                                       headers={**sqlite_platform.admin, "content-type": "application/json"})
    assert answer(r) == error(422, "validation_error"), r.text


# bounded integers, on SQLite and PostgreSQL


async def test_huge_versions_and_attempts_never_reach_the_database(platform: Platform) -> None:
    h = platform.http
    a = platform.admin
    assert answer(await h.get(f"/api/v1/photons/echo/{HUGE}", headers=a)) == error(404, "not_found")
    assert answer(await h.get("/api/v1/photons/echo/2147483648", headers=a)) == error(404, "not_found")
    assert answer(await h.get("/api/v1/photons/echo/2147483647", headers=a)) == error(404, "not_found")
    assert answer(await h.delete(f"/api/v1/photons/echo/{HUGE}", headers=a)) == error(404, "not_found")
    for version in (HUGE, "2147483648", "²", "-1"):
        r = await h.get(f"/api/v1/models/m/versions/{version}", headers=a)
        assert answer(r) == error(422, "validation_error"), (version, r.text)
    assert answer(await h.get("/api/v1/models/m/versions/2147483647", headers=a)) == error(404, "not_found")
    r = await h.post(f"/api/v1/models/m/versions/{HUGE}/deploy", json={"name": "m"}, headers=a)
    assert answer(r) == error(422, "validation_error")
    r = await h.post("/api/v1/jobs", json=JOB, headers=a)
    job = r.json()["id"]
    r = await h.get(f"/api/v1/jobs/{job}/logs", params={"attempt": HUGE}, headers=a)
    assert answer(r) == error(422, "validation_error")
    r = await h.post("/api/v1/deployments", json={"name": "d", "photon": f"echo:{HUGE}"}, headers=a)
    assert answer(r) == error(422, "validation_error")
    r = await h.post(f"/api/v1/jobs/{job}/metrics", json={"epoch": int(HUGE)}, headers=a)
    assert answer(r) == error(422, "validation_error")
    r = await h.patch("/api/v1/workspaces/default", json={"gpu_quota": int(HUGE)}, headers=a)
    assert answer(r) == error(422, "validation_error")
    r = await h.post("/api/v1/workspaces", json={"name": "w", "storage_quota_bytes": int(HUGE)}, headers=a)
    assert answer(r) == error(422, "validation_error")
    r = await h.post("/api/v1/jobs", json={**JOB, "resources": {"memory": int(HUGE) * 10**6}}, headers=a)
    assert answer(r) == error(422, "validation_error")


# storage paths


@pytest.mark.parametrize(("raw", "message"), [
    ("a%FFb.txt", "paths must be valid UTF-8 (this one holds U+FFFD, the mark of invalid bytes)"),
    ("data/%C3%28.csv", "paths must be valid UTF-8 (this one holds U+FFFD, the mark of invalid bytes)"),
    ("evil%E2%80%AEtxt.exe", "paths cannot contain invisible format characters (such as U+202E or U+200B)"),
    ("a%E2%80%8Bb", "paths cannot contain invisible format characters (such as U+202E or U+200B)"),
])
async def test_bad_storage_paths_are_refused(sqlite_platform: Platform, raw: str, message: str) -> None:
    p = sqlite_platform
    for method in ("PUT", "GET", "DELETE"):
        r = await p.http.request(method, f"/api/v1/storage/{raw}", content=b"x" if method == "PUT" else None,
                                 headers=p.admin)
        assert r.status_code == 422, (method, r.text)
        assert r.json() == {"error": {"code": "invalid_path", "message": message, "details": None}}


async def test_storage_paths_are_nfc(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    decomposed, composed = "cafe\u0301.txt", "caf\u00e9.txt"
    r = await p.http.put(f"/api/v1/storage/{decomposed}", content=b"one", headers=p.admin)
    assert r.status_code == 201, r.text
    assert r.json()["path"] == composed
    r = await p.http.get(f"/api/v1/storage/{composed}", headers=p.admin)
    assert r.content == b"one"
    listed = (await p.http.get("/api/v1/storage", headers=p.admin)).json()
    assert [o["path"] for o in listed] == [composed]


# manifest handlers against the code


def _bundle(edit: Any = None) -> bytes:
    """The echo example's bundle; ``edit(manifest)`` changes its manifest.json (not its source)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "echo"
        shutil.copytree(EXAMPLES / "echo", folder)
        path, _ = build_bundle(str(folder), Path(tmp) / "echo.photon")
        if edit is None:
            return path.read_bytes()
        out = io.BytesIO()
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
            for info in src.infolist():
                data = src.read(info)
                if info.filename == "manifest.json":
                    manifest = json.loads(data)
                    edit(manifest)
                    data = json.dumps(manifest).encode()
                dst.writestr(info, data)
        return out.getvalue()


def _add_handler(**handler: str) -> Any:
    return lambda m: m["handlers"].append({"method": "POST", **handler})


@pytest.mark.parametrize(("edit", "message"), [
    (_add_handler(name="ghost", path="/ghost"),
     "the manifest lists handlers the code does not define: ['ghost'] (not in class 'Echo' of 'photon.py'): "
     "rebuild the bundle with `nubis photon build`"),
    (_add_handler(name="not-a-name", path="/x"), "handler name 'not-a-name' is not a Python identifier"),
    (_add_handler(name="import", path="/x"), "handler name 'import' is not a Python identifier"),
    (_add_handler(name="echo2", path="/a/../b"),
     "handler 'echo2' has path '/a/../b': use '/' and letters, digits, '_-.' (at most 256 characters, "
     "not a reserved path)"),
    (_add_handler(name="echo2", path="/metrics"),
     "handler 'echo2' has path '/metrics': use '/' and letters, digits, '_-.' (at most 256 characters, "
     "not a reserved path)"),
    (_add_handler(name="echo", path="/echo"), "two handlers serve POST /echo"),
    (lambda m: m.update(entrypoint="photon.py:Nope"),
     "the entrypoint file 'photon.py' does not define class 'Nope'"),
])
async def test_manifest_handlers_must_match_the_code(
    sqlite_platform: Platform, edit: Any, message: str
) -> None:
    r = await sqlite_platform.http.post("/api/v1/photons", content=_bundle(edit),
                                        headers={**sqlite_platform.admin, "content-type": "application/zip"})
    assert r.status_code == 422, r.text
    assert r.json() == {"error": {"code": "invalid_bundle", "message": message, "details": None}}


async def test_a_true_manifest_is_accepted(sqlite_platform: Platform) -> None:
    r = await sqlite_platform.http.post("/api/v1/photons", content=_bundle(),
                                        headers={**sqlite_platform.admin, "content-type": "application/zip"})
    assert r.status_code == 201, r.text


# job code archives


def _zip(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return out.getvalue()


@pytest.mark.parametrize(("files", "message"), [
    ({"main.py": b"pass", "zeros.bin": bytes(32 * 2**20)}, "looks like a zip bomb"),
    ({f"f{i}.py": b"" for i in range(MAX_CODE_FILES + 1)}, f"holds {MAX_CODE_FILES + 1} entries; at most"),
])
async def test_code_archives_are_limited_at_submit(
    sqlite_platform: Platform, files: dict[str, bytes], message: str
) -> None:
    p = sqlite_platform
    r = await p.http.put("/api/v1/storage/code/bomb.zip", content=_zip(files), headers=p.admin)
    assert r.status_code == 201, r.text
    r = await p.http.post("/api/v1/jobs", json={**JOB, "code": "code/bomb.zip"}, headers=p.admin)
    assert message in validation_message(r)
    assert r.json()["error"]["details"] == {"code": "code/bomb.zip"}


async def test_a_code_archive_that_is_not_a_zip_is_refused_at_submit(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    await p.http.put("/api/v1/storage/code/not.zip", content=b"hello", headers=p.admin)
    r = await p.http.post("/api/v1/jobs", json={**JOB, "code": "code/not.zip"}, headers=p.admin)
    assert validation_message(r) == "the job's code archive 'code/not.zip' is not a zip file: " \
                                    "File is not a zip file"


# unreadable JSON


@pytest.mark.parametrize(("body", "message"), [
    (b'{"command": ["python", "\xff\xfe"]}', "the request body is not UTF-8: send JSON encoded as UTF-8"),
    (b"[" * 10_000 + b"]" * 10_000, "the JSON body is nested too deeply"),
    (b'{"command": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "the JSON body is nested too deeply"),
])
async def test_unreadable_json_is_400_bad_request(
    sqlite_platform: Platform, body: bytes, message: str
) -> None:
    r = await sqlite_platform.http.post("/api/v1/jobs", content=body, headers={
        **sqlite_platform.admin, "content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json() == {"error": {"code": "bad_request", "message": message, "details": None}}


# a client that goes away


@pytest.mark.parametrize(("method", "path", "content_type"), [
    ("POST", "/api/v1/jobs", "application/json"),
    ("PUT", "/api/v1/secrets/S", "application/json"),
    ("POST", "/api/v1/photons", "application/zip"),
    ("PUT", "/api/v1/storage/data/x.bin", "application/octet-stream"),
])
async def test_a_client_that_goes_away_is_not_an_error(
    sqlite_platform: Platform, caplog: pytest.LogCaptureFixture, method: str, path: str, content_type: str
) -> None:
    messages = [{"type": "http.request", "body": b'{"command": [', "more_body": True},
                {"type": "http.disconnect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    token = sqlite_platform.admin_token.encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"nubis"), (b"authorization", b"Bearer " + token),
                    (b"content-type", content_type.encode()), (b"content-length", b"100000")],
        "client": ("127.0.0.1", 1234), "server": ("nubis", 80),
    }
    with caplog.at_level(logging.INFO):
        await sqlite_platform.app(scope, receive, send)
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert errors == []
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 400


# 200 MiB against a real server process


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _declared_only(url: str, length: int) -> bytes:
    """Declare a huge body, send none of it: the answer must come at once."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /api/v1/jobs HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
                     f"content-length: {length}\r\n\r\n".encode())
        return sock.recv(65536)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
def test_200_mib_unauthenticated_json_body_is_413_without_growing_the_server(tmp_path: Path) -> None:
    chunk = b" " * 2**20

    def body() -> Iterator[bytes]:
        for _ in range(200):
            yield chunk

    with nubis_up(tmp_path / "home") as running:
        pid = json.loads((running.home / "server.json").read_text())["pid"]
        with httpx.Client(base_url=running.url, timeout=60) as http:
            http.get("/healthz")
            before = _rss_bytes(pid)
            for _ in range(3):
                r = http.post("/api/v1/jobs", content=body(), headers={"content-type": "application/json"})
                assert r.status_code == 413
                assert r.json()["error"]["code"] == "payload_too_large"
            assert _declared_only(running.url, 200 * 2**20).startswith(b"HTTP/1.1 413 ")
            grown = _rss_bytes(pid) - before
    assert grown < 20 * 2**20, f"the control plane grew by {grown / 2**20:.1f} MiB"

"""Storage on the real app, on SQLite and PostgreSQL: streaming, atomicity, paths, roles, quotas."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nubis.server.settings import ServerSettings
from nubis.storage import TMP_DIR

from platform_fixtures import Platform, running_platform

API = "/api/v1/storage"
MiB = 1 << 20


async def chunks(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


async def put(p: Platform, path: str, data: bytes, headers: dict[str, str] | None = None,
              *, chunked: bool = False) -> tuple[int, dict]:
    h = {**(headers or p.admin)}
    if chunked:
        r = await p.http.put(f"{API}/{path}", content=chunks(data), headers=h)
    else:
        r = await p.http.put(f"{API}/{path}", content=data, headers=h)
    return r.status_code, r.json()


async def listed(p: Platform, prefix: str = "", headers: dict[str, str] | None = None) -> list[str]:
    r = await p.http.get(API, params={"prefix": prefix}, headers=headers or p.admin)
    assert r.status_code == 200, r.text
    return [o["path"] for o in r.json()]


def leftovers(p: Platform, workspace: str = "default") -> list[Path]:
    """Temporary files of uploads that are not in progress (there must never be any)."""
    return list(Path(p.ctx.store.files(workspace).root, TMP_DIR).glob("*"))


async def test_put_and_get_stream_a_file_with_its_sha256(platform: Platform) -> None:
    data = os.urandom(3 * MiB + 123)
    status, body = await put(platform, "datasets/train.bin", data, chunked=True)
    assert status == 201
    assert body == {"path": "datasets/train.bin", "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest()}
    r = await platform.http.get(f"{API}/datasets/train.bin", headers=platform.admin)
    assert r.status_code == 200
    assert r.headers["content-length"] == str(len(data))
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.content == data
    assert leftovers(platform) == []


async def test_empty_files(platform: Platform) -> None:
    status, body = await put(platform, "empty.txt", b"")
    assert (status, body["size"], body["sha256"]) == (201, 0, hashlib.sha256(b"").hexdigest())
    r = await platform.http.get(f"{API}/empty.txt", headers=platform.admin)
    assert (r.status_code, r.headers["content-length"], r.content) == (200, "0", b"")


async def test_put_replaces_a_file_and_paths_are_normalised(platform: Platform) -> None:
    await put(platform, "a/b.txt", b"one")
    status, body = await put(platform, "a//./b.txt", b"two")
    assert (status, body["path"]) == (201, "a/b.txt")
    r = await platform.http.get(f"{API}/a/b.txt", headers=platform.admin)
    assert r.content == b"two"
    assert await listed(platform) == ["a/b.txt"]


async def test_list_by_prefix(platform: Platform) -> None:
    for path in ["datasets/a.csv", "datasets/sub/b.csv", "datasets.md", "models/m.pt"]:
        assert (await put(platform, path, b"x"))[0] == 201
    assert await listed(platform) == ["datasets.md", "datasets/a.csv", "datasets/sub/b.csv", "models/m.pt"]
    assert await listed(platform, "datasets/") == ["datasets/a.csv", "datasets/sub/b.csv"]
    assert await listed(platform, "data") == ["datasets.md", "datasets/a.csv", "datasets/sub/b.csv"]
    assert await listed(platform, "nothing/") == []
    r = await platform.http.get(API, params={"prefix": "models/"}, headers=platform.admin)
    (obj,) = r.json()
    assert obj["path"] == "models/m.pt" and obj["size"] == 1 and obj["modified"]


async def test_delete_a_file_and_a_folder(platform: Platform) -> None:
    for path in ["d/1.txt", "d/e/2.txt", "keep.txt"]:
        await put(platform, path, b"x")
    r = await platform.http.delete(f"{API}/d/1.txt", headers=platform.admin)
    assert r.json() == {"path": "d/1.txt", "deleted": 1}
    r = await platform.http.delete(f"{API}/d", headers=platform.admin)
    assert r.status_code == 409
    assert r.json() == {"error": {"code": "conflict",
                                  "message": "'d' is a folder: delete it with recursive=true",
                                  "details": {"folder": "d"}}}
    r = await platform.http.delete(f"{API}/d", params={"recursive": "true"}, headers=platform.admin)
    assert r.json() == {"path": "d", "deleted": 1}
    assert await listed(platform) == ["keep.txt"]
    r = await platform.http.delete(f"{API}/d/1.txt", headers=platform.admin)
    assert r.status_code == 404
    assert r.json()["error"] == {"code": "not_found", "message": "no file at 'd/1.txt'", "details": None}


async def test_missing_files_and_folders_are_404(platform: Platform) -> None:
    await put(platform, "dir/x", b"x")
    r = await platform.http.get(f"{API}/nope.csv", headers=platform.admin)
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "not_found", "message": "no file at 'nope.csv'", "details": None}}
    r = await platform.http.get(f"{API}/dir", headers=platform.admin)
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "'dir' is a folder, not a file; list it instead"


DOTS = "'..' is not allowed in paths"


@pytest.mark.parametrize(
    ("url_path", "message"),
    [
        ("%2e%2e/x", f"'../x': {DOTS}"),
        ("..%2Fx", f"'../x': {DOTS}"),
        ("a/%2E%2E/%2e%2e/etc/passwd", f"'a/../../etc/passwd': {DOTS}"),
        ("%2Fetc/passwd", "'/etc/passwd': give a path relative to the workspace, without a leading /"),
        ("a%00b", "paths cannot contain control characters"),
        ("a%0Ab", "paths cannot contain control characters"),
        ("a%5Cb", "use '/' to separate folders, not '\\'"),
        (".nubis-tmp/x", "'.nubis-tmp' is reserved for uploads in progress"),
    ],
)
async def test_bad_paths_are_422_for_every_method(platform: Platform, url_path: str, message: str) -> None:
    expected = {"error": {"code": "invalid_path", "message": message, "details": None}}
    for method in ("PUT", "GET", "DELETE"):
        r = await platform.http.request(method, f"{API}/{url_path}", content=b"x", headers=platform.admin)
        assert (r.status_code, r.json()) == (422, expected), method
    assert leftovers(platform) == []


async def test_bad_prefixes_are_422(platform: Platform) -> None:
    r = await platform.http.get(API, params={"prefix": "../x"}, headers=platform.admin)
    assert r.status_code == 422
    assert r.json() == {"error": {"code": "invalid_path", "message": f"'../x': {DOTS}", "details": None}}


async def test_viewers_read_but_cannot_write(platform: Platform) -> None:
    await put(platform, "shared.txt", b"hi")
    viewer = platform.auth(await platform.token("viewer"))
    r = await platform.http.put(f"{API}/mine.txt", content=b"x", headers=viewer)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"
    assert (await platform.http.delete(f"{API}/shared.txt", headers=viewer)).status_code == 403
    assert (await platform.http.get(f"{API}/shared.txt", headers=viewer)).content == b"hi"
    assert await listed(platform, headers=viewer) == ["shared.txt"]
    assert (await platform.http.get(API)).status_code == 401


async def test_other_workspaces_cannot_see_files(platform: Platform) -> None:
    await put(platform, "secret/plan.txt", b"default's")
    research = platform.auth(await platform.token("admin", "research"))
    r = await platform.http.get(f"{API}/secret/plan.txt", headers=research)
    assert r.status_code == 404
    assert await listed(platform, headers=research) == []
    as_default = {**research, "x-nubis-workspace": "default"}
    r = await platform.http.get(f"{API}/secret/plan.txt", headers=as_default)
    assert r.status_code == 404
    assert (await put(platform, "secret/plan.txt", b"research's", research))[0] == 201
    r = await platform.http.get(f"{API}/secret/plan.txt", headers=platform.admin)
    assert r.content == b"default's"


async def set_quota(p: Platform, quota: int | None) -> None:
    r = await p.http.patch("/api/v1/workspaces/default", json={"storage_quota_bytes": quota},
                           headers=p.admin)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_quota_is_a_413_that_leaves_nothing_behind(platform: Platform, chunked: bool) -> None:
    await put(platform, "old.bin", b"x" * 600)
    await set_quota(platform, 1000)
    status, body = await put(platform, "new.bin", b"y" * 2000, chunked=chunked)
    assert status == 413
    needs = "at least 2.0 KiB" if chunked else "2.0 KiB"  # chunked: what arrived when it went over
    assert body == {"error": {
        "code": "payload_too_large",
        "message": f"workspace 'default' would go over its storage quota: 600 B of 1000 B used and "
                   f"this upload is {needs}; delete files (`nubis storage rm`) or ask the platform "
                   "admin to raise the quota (`nubis workspace quota`)",
        "details": {"quota_bytes": 1000, "used_bytes": 600, "upload_bytes": 2000},
    }}
    assert await listed(platform) == ["old.bin"]
    assert leftovers(platform) == []


async def test_quota_counts_a_replaced_file_once(platform: Platform) -> None:
    await put(platform, "a.bin", b"x" * 800)
    await set_quota(platform, 1000)
    assert (await put(platform, "a.bin", b"y" * 900))[0] == 201  # 900 replaces 800: fits
    assert (await put(platform, "b.bin", b"z" * 200))[0] == 413
    await set_quota(platform, None)
    assert (await put(platform, "b.bin", b"z" * 200))[0] == 201


async def test_an_interrupted_upload_leaves_nothing_visible(platform: Platform) -> None:
    await put(platform, "model.bin", b"version 1")

    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(2 * MiB)
        yield os.urandom(MiB)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await platform.http.put(f"{API}/model.bin", content=broken(), headers=platform.admin)
    with pytest.raises(ConnectionResetError):
        await platform.http.put(f"{API}/fresh.bin", content=broken(), headers=platform.admin)
    assert await listed(platform) == ["model.bin"]
    r = await platform.http.get(f"{API}/model.bin", headers=platform.admin)
    assert r.content == b"version 1"
    assert leftovers(platform) == []


async def test_a_body_shorter_than_its_content_length_is_not_stored(platform: Platform) -> None:
    headers = {**platform.admin, "content-length": str(5 * MiB)}
    r = await platform.http.put(f"{API}/short.bin", content=chunks(os.urandom(MiB)), headers=headers)
    assert r.status_code == 400
    assert r.json()["error"]["message"] == f"the body had {MiB} bytes but Content-Length said {5 * MiB}"
    assert await listed(platform) == []
    assert leftovers(platform) == []


async def test_a_file_cannot_stand_where_a_folder_is(platform: Platform) -> None:
    await put(platform, "a.csv", b"x")
    status, body = await put(platform, "a.csv/part-1", b"x")
    assert (status, body["error"]["code"]) == (409, "conflict")
    assert body["error"]["message"] == "'a.csv' is a file, so it cannot hold 'a.csv/part-1'"


async def test_puts_and_deletes_are_audited(platform: Platform) -> None:
    _, body = await put(platform, "audited.txt", b"abc")
    await platform.http.delete(f"{API}/audited.txt", headers=platform.admin)
    events = (await platform.http.get("/api/v1/audit", params={"action": "storage.put"},
                                      headers=platform.admin)).json()
    assert events[0]["target"] == "audited.txt"
    assert events[0]["details"] == {"size": 3, "sha256": body["sha256"]}
    events = (await platform.http.get("/api/v1/audit", params={"action": "storage.delete"},
                                      headers=platform.admin)).json()
    assert (events[0]["target"], events[0]["details"]) == ("audited.txt", {"files": 1, "recursive": False})


async def test_the_server_caps_the_size_of_one_upload(tmp_path: Path) -> None:
    settings = ServerSettings(home=tmp_path / "home", max_upload_bytes=MiB)
    async with running_platform(settings) as p:
        assert (await put(p, "ok.bin", b"x" * MiB))[0] == 201
        for chunked in (False, True):
            status, body = await put(p, "big.bin", b"x" * (MiB + 1), chunked=chunked)
            assert (status, body["error"]["code"]) == (413, "payload_too_large")
            message = body["error"]["message"]
            assert "the server accepts at most 1.0 MiB per file (max_upload_bytes)" in message
        assert await listed(p) == ["ok.bin"]
        assert leftovers(p) == []

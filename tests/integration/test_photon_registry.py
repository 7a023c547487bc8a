"""The photon registry on the real app, on SQLite and PostgreSQL: push, versions, get, download, delete."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest

from nubis.photon.build import build_bundle

from platform_fixtures import Platform

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ZIP = {"content-type": "application/zip"}


@pytest.fixture(autouse=True)
def restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # building a bundle imports the photon


@pytest.fixture
def echo_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "echo-src"
    shutil.copytree(EXAMPLES / "echo", folder)
    return folder


def build(folder: Path, out: Path) -> bytes:
    path, _ = build_bundle(str(folder), out)
    return path.read_bytes()


async def push(platform: Platform, bundle: bytes, headers: dict[str, str] | None = None):
    return await platform.http.post("/api/v1/photons", content=bundle,
                                    headers={**(headers or platform.admin), **ZIP})


def stored_files(platform: Platform) -> list[str]:
    root = Path(platform.ctx.store.root) / "workspaces"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


async def test_push_versions_get_and_download(platform: Platform, echo_dir: Path, tmp_path: Path) -> None:
    v1 = build(echo_dir, tmp_path / "v1.photon")
    r = await push(platform, v1)
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["name"] == "echo"
    assert first["version"] == 1
    assert first["ref"] == "echo:1"
    assert first["size"] == len(v1)
    assert first["unchanged"] is False
    assert first["created_by"].startswith("admin (")
    assert first["resources"]["cpu"] == 0.5
    assert [h["name"] for h in first["handlers"]] == ["echo", "aecho", "add", "count", "reverse"]
    assert next(h for h in first["handlers"] if h["name"] == "count")["streaming"] is True

    with (echo_dir / "photon.py").open("a") as fh:
        fh.write("\n# a change in the source makes a new version\n")
    v2 = build(echo_dir, tmp_path / "v2.photon")
    r = await push(platform, v2)
    assert r.status_code == 201
    second = r.json()
    assert (second["version"], second["ref"]) == (2, "echo:2")
    assert second["content_hash"] != first["content_hash"]
    assert stored_files(platform) == ["default/photons/echo/1.photon", "default/photons/echo/2.photon"]

    r = await platform.http.get("/api/v1/photons/echo/latest", headers=platform.admin)
    assert r.status_code == 200
    latest = r.json()
    assert latest["version"] == 2
    assert latest["manifest"]["entrypoint"] == "photon.py:Echo"
    assert latest["manifest"]["content_hash"] == second["content_hash"]
    assert len(latest["manifest"]["handlers"][0]["request_schema"]["properties"]) == 1
    r = await platform.http.get("/api/v1/photons/echo/1", headers=platform.admin)
    assert r.json()["content_hash"] == first["content_hash"]

    versions = (await platform.http.get("/api/v1/photons/echo", headers=platform.admin)).json()
    assert [v["ref"] for v in versions] == ["echo:1", "echo:2"]
    listed = (await platform.http.get("/api/v1/photons", headers=platform.admin)).json()
    assert [(p["name"], p["latest"], p["versions"], p["ref"]) for p in listed] == [("echo", 2, 2, "echo:2")]

    for version, expected in (("1", v1), ("2", v2), ("latest", v2)):
        r = await platform.http.get(f"/api/v1/photons/echo/{version}/bundle", headers=platform.admin)
        assert r.status_code == 200
        assert r.content == expected
        assert r.headers["content-type"] == "application/zip"
    assert 'filename="echo-1.photon"' in (await platform.http.get(
        "/api/v1/photons/echo/1/bundle", headers=platform.admin)).headers["content-disposition"]


async def test_pushing_the_latest_content_again_changes_nothing(
    platform: Platform, echo_dir: Path, tmp_path: Path
) -> None:
    v1 = build(echo_dir, tmp_path / "a.photon")
    assert (await push(platform, v1)).status_code == 201
    rebuilt = build(echo_dir, tmp_path / "b.photon")  # another build of the same source
    r = await push(platform, rebuilt)
    assert r.status_code == 200
    assert (r.json()["version"], r.json()["unchanged"]) == (1, True)
    (echo_dir / "extra.txt").write_text("new file")
    assert (await push(platform, build(echo_dir, tmp_path / "c.photon"))).json()["version"] == 2
    r = await push(platform, v1)  # the same as an older version, not the latest: a new version
    assert (r.status_code, r.json()["version"]) == (201, 3)
    events = (await platform.http.get("/api/v1/audit?action=photon.push", headers=platform.admin)).json()
    assert [e["target"] for e in events] == ["echo:3", "echo:2", "echo:1"]


async def test_delete_one_version_then_all(platform: Platform, echo_dir: Path, tmp_path: Path) -> None:
    await push(platform, build(echo_dir, tmp_path / "1.photon"))
    (echo_dir / "extra.txt").write_text("v2")
    await push(platform, build(echo_dir, tmp_path / "2.photon"))

    r = await platform.http.delete("/api/v1/photons/echo/1", headers=platform.admin)
    assert r.status_code == 204
    r = await platform.http.get("/api/v1/photons/echo/1", headers=platform.admin)
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "not_found", "details": None,
                                  "message": "photon 'echo:1' not found in workspace 'default'"}}
    listed = (await platform.http.get("/api/v1/photons", headers=platform.admin)).json()
    assert [(p["latest"], p["versions"]) for p in listed] == [(2, 1)]
    assert stored_files(platform) == ["default/photons/echo/2.photon"]

    r = await platform.http.delete("/api/v1/photons/echo", headers=platform.admin)
    assert r.status_code == 204
    assert (await platform.http.get("/api/v1/photons", headers=platform.admin)).json() == []
    assert stored_files(platform) == []
    r = await platform.http.delete("/api/v1/photons/echo", headers=platform.admin)
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "photon 'echo' not found in workspace 'default'"
    r = await platform.http.get("/api/v1/photons/echo/latest/bundle", headers=platform.admin)
    assert r.status_code == 404


async def test_version_numbers_are_never_reused(
    platform: Platform, echo_dir: Path, tmp_path: Path
) -> None:
    await push(platform, build(echo_dir, tmp_path / "1.photon"))
    (echo_dir / "extra.txt").write_text("v2")
    await push(platform, build(echo_dir, tmp_path / "2.photon"))
    r = await platform.http.delete("/api/v1/photons/echo/2", headers=platform.admin)
    assert r.status_code == 204
    (echo_dir / "extra.txt").write_text("v3")
    r = await push(platform, build(echo_dir, tmp_path / "3.photon"))
    assert r.json()["ref"] == "echo:3"
    assert (await platform.http.delete("/api/v1/photons/echo", headers=platform.admin)).status_code == 204
    (echo_dir / "extra.txt").write_text("v4")
    r = await push(platform, build(echo_dir, tmp_path / "4.photon"))
    assert r.json()["ref"] == "echo:4"


async def test_bad_versions(platform: Platform, echo_dir: Path, tmp_path: Path) -> None:
    await push(platform, build(echo_dir, tmp_path / "1.photon"))
    r = await platform.http.get("/api/v1/photons/echo/first", headers=platform.admin)
    assert r.status_code == 422
    assert r.json() == {"error": {"code": "validation_error", "details": None,
                                  "message": "version must be a number or 'latest', not 'first'"}}
    r = await platform.http.get("/api/v1/photons/echo/%C2%B2", headers=platform.admin)  # '²' is no number
    assert r.status_code == 422
    for version in ("7", "99999999999999999999"):
        r = await platform.http.get(f"/api/v1/photons/echo/{version}", headers=platform.admin)
        assert r.status_code == 404
        assert r.json()["error"]["message"] == f"photon 'echo:{version}' not found in workspace 'default'"
    r = await platform.http.get("/api/v1/photons/no%00such/1", headers=platform.admin)
    assert r.status_code == 404
    r = await platform.http.get("/api/v1/photons/nothing", headers=platform.admin)
    assert r.status_code == 404


async def test_roles_and_workspaces(platform: Platform, echo_dir: Path, tmp_path: Path) -> None:
    bundle = build(echo_dir, tmp_path / "1.photon")
    viewer = platform.auth(await platform.token("viewer"))
    r = await push(platform, bundle, viewer)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"
    member = platform.auth(await platform.token("member"))
    assert (await push(platform, bundle, member)).status_code == 201
    assert (await platform.http.get("/api/v1/photons/echo/1", headers=viewer)).status_code == 200
    r = await platform.http.delete("/api/v1/photons/echo/1", headers=viewer)
    assert r.status_code == 403

    research = platform.auth(await platform.token("member", "research"))
    assert (await platform.http.get("/api/v1/photons", headers=research)).json() == []
    for method, path in (("GET", "/echo"), ("GET", "/echo/1"), ("GET", "/echo/latest/bundle"),
                         ("DELETE", "/echo/1"), ("DELETE", "/echo")):
        r = await platform.http.request(method, f"/api/v1/photons{path}", headers=research)
        assert r.status_code == 404, (method, path)
    r = await push(platform, bundle, research)  # the same name in another workspace starts at 1
    assert (r.status_code, r.json()["ref"]) == (201, "echo:1")
    assert stored_files(platform) == ["default/photons/echo/1.photon", "research/photons/echo/1.photon"]


async def test_concurrent_pushes_get_distinct_versions(
    platform: Platform, echo_dir: Path, tmp_path: Path
) -> None:
    bundles = []
    for i in range(4):
        (echo_dir / "extra.txt").write_text(f"variant {i}")
        bundles.append(build(echo_dir, tmp_path / f"{i}.photon"))
    responses = await asyncio.gather(*(push(platform, b) for b in bundles))
    assert [r.status_code for r in responses] == [201] * 4
    assert sorted(r.json()["version"] for r in responses) == [1, 2, 3, 4]
    for r, bundle in zip(responses, bundles, strict=True):
        path = f"/api/v1/photons/echo/{r.json()['version']}/bundle"
        assert (await platform.http.get(path, headers=platform.admin)).content == bundle

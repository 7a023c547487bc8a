"""Deployments on the real app (in-process) with real replicas on the local backend: a change of
resources, env or secrets rolls out like a new photon version."""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nubis.photon.build import build_bundle

from platform_fixtures import Platform

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(autouse=True)
def restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # building a bundle imports the photon


PICKY = '''import os

import nubis


class Picky(nubis.Photon):
    resources = nubis.Resources(cpu=0.25, memory="128Mi")

    def init(self) -> None:
        if os.environ.get("CRASH"):
            raise RuntimeError("CRASH is set")

    @nubis.handler
    def mode(self) -> str:
        return os.environ.get("MODE", "")
'''


async def push_echo(p: Platform, tmp_path: Path) -> None:
    folder = tmp_path / "echo-src"
    shutil.copytree(EXAMPLES / "echo", folder)
    await push_folder(p, folder, tmp_path / "echo.photon")


async def push_folder(p: Platform, folder: Path, out: Path) -> None:
    path, _ = build_bundle(str(folder), out)
    r = await p.http.post("/api/v1/photons", content=path.read_bytes(),
                          headers={**p.admin, "content-type": "application/zip"})
    assert r.status_code == 201, r.text


async def until(p: Platform, name: str, check: Any, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    found: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = await p.http.get(f"/api/v1/deployments/{name}", headers=p.admin)
        assert r.status_code == 200, r.text
        found = r.json()
        if check(found):
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"deployment {name} never got there: {found}")


async def test_a_change_of_resources_env_and_secrets_rolls_out(
    sqlite_platform: Platform, tmp_path: Path
) -> None:
    p = sqlite_platform
    await push_echo(p, tmp_path)
    r = await p.http.put("/api/v1/secrets/TOKEN_A", json={"value": "s3cret"}, headers=p.admin)
    assert r.status_code in (200, 201), r.text
    spec = {"name": "echo", "photon": "echo:1", "resources": {"cpu": 0.5, "memory": "256Mi"},
            "env": {"MODE": "one"}}
    r = await p.http.post("/api/v1/deployments", json=spec, headers=p.admin)
    assert r.status_code == 201, r.text
    first = await until(p, "echo", lambda d: d["status"] == "ready")
    [old] = [r["id"] for r in first["replicas"]]

    change = {"resources": {"cpu": 0.25, "memory": "128Mi"}, "env": {"MODE": "two"}, "secrets": ["TOKEN_A"]}
    r = await p.http.patch("/api/v1/deployments/echo", json=change, headers=p.admin)
    assert r.status_code == 200, r.text
    assert r.json()["resources"]["cpu"] == 0.25 and r.json()["env"] == {"MODE": "two"}
    done = await until(p, "echo", lambda d: d["status"] == "ready"
                       and old not in [x["id"] for x in d["replicas"]])
    assert [x["status"] for x in done["replicas"]] == ["ready"]
    events = (await p.http.get("/api/v1/deployments/echo/events", headers=p.admin)).json()
    assert any(e["kind"] == "update" and "(resources, env, secrets changed)" in e["message"] for e in events)
    assert any("replaced by the new version" in (e["message"] or "") for e in events), events

    # scaling alone does not roll; a secret that does not exist is refused
    r = await p.http.patch("/api/v1/deployments/echo", json={"secrets": ["NOPE"]}, headers=p.admin)
    assert r.status_code == 422 and "NOPE" in r.json()["error"]["message"], r.text
    r = await p.http.patch("/api/v1/deployments/echo", json={"max_replicas": 2}, headers=p.admin)
    assert r.status_code == 200, r.text
    await asyncio.sleep(1)
    after = await until(p, "echo", lambda d: d["status"] == "ready")
    assert [x["id"] for x in after["replicas"]] == [x["id"] for x in done["replicas"]]


async def test_an_env_change_that_crashes_rolls_back_to_the_whole_previous_spec(
    sqlite_platform: Platform, tmp_path: Path
) -> None:
    p = sqlite_platform
    (tmp_path / "picky").mkdir()
    (tmp_path / "picky" / "photon.py").write_text(PICKY)
    await push_folder(p, tmp_path / "picky", tmp_path / "picky.photon")
    spec = {"name": "picky", "photon": "picky:1", "env": {"MODE": "one"}}
    r = await p.http.post("/api/v1/deployments", json=spec, headers=p.admin)
    assert r.status_code == 201, r.text
    first = await until(p, "picky", lambda d: d["status"] == "ready")
    [old] = [r["id"] for r in first["replicas"]]

    change = {"env": {"MODE": "two", "CRASH": "1"}, "resources": {"cpu": 0.5, "memory": "128Mi"}}
    r = await p.http.patch("/api/v1/deployments/picky", json=change, headers=p.admin)
    assert r.status_code == 200, r.text

    assert r.json()["env"] == change["env"]
    back = await until(p, "picky", lambda d: d["env"] == {"MODE": "one"} and d["status"] == "ready",
                       timeout=120)
    assert back["resources"] is None
    events = (await p.http.get("/api/v1/deployments/picky/events", headers=p.admin)).json()
    [rollback] = [e for e in events if e["kind"] == "rollback"]
    assert rollback["message"].startswith("rolled back from picky:1: ")
    assert "CRASH is set" in rollback["message"]
    assert [x["id"] for x in back["replicas"] if x["status"] == "ready"] == [old]  # it never stopped

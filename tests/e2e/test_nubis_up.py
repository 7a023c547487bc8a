"""`nubis up` as a user runs it: state in NUBIS_HOME, credentials found, clean stop, restart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import nubis

from platform_fixtures import postgres_database
from platform_process import nubis_up, up_log
from servers import ROOT

pytestmark = pytest.mark.e2e


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nubis.cli.main", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=60)


def test_up_keeps_state_across_restarts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with nubis_up(home) as platform:
        token = platform.admin_token
        assert (home / "master.key").stat().st_mode & 0o777 == 0o600
        assert (home / "admin.token").stat().st_mode & 0o777 == 0o600
        assert json.loads((home / "server.json").read_text())["url"] == platform.url
        me = cli("whoami", "--output", "json", env=platform.env)
        assert me.returncode == 0, me.stderr
        assert json.loads(me.stdout)["workspace"] == "default"
        assert cli("workspace", "create", "research", env=platform.env).returncode == 0
        assert (home / "nubis.db").stat().st_mode & 0o777 == 0o600
        assert home.stat().st_mode & 0o777 == 0o711
    assert not (home / "server.json").exists()
    assert "workloads: sandboxed (landlock ABI" in up_log(home).read_text()
    with nubis_up(home) as platform:
        assert platform.admin_token == token
        with nubis.Client(platform.url, token) as client:
            assert [w.name for w in client.workspaces.list()] == ["default", "research"]


def test_up_on_postgresql(tmp_path: Path) -> None:
    with postgres_database() as url, nubis_up(tmp_path / "home", "--db", url) as platform:
        assert not (tmp_path / "home" / "nubis.db").exists()
        with nubis.Client(platform.url, platform.admin_token) as client:
            assert client.whoami().superuser is True


def test_errors_print_one_line_and_exit_1(tmp_path: Path) -> None:
    with nubis_up(tmp_path / "home") as platform:
        bad = cli("workspace", "create", "Not Valid", env=platform.env)
        assert bad.returncode == 1
        assert bad.stdout == ""
        assert bad.stderr.strip().startswith("error (validation_error): invalid request: body.name")
        assert "Traceback" not in bad.stderr
        r = httpx.get(f"{platform.url}/api/v1/whoami", headers={"authorization": "Bearer nope"})
        assert r.status_code == 401
    down = cli("whoami", env={**platform.env, "NUBIS_URL": platform.url})
    assert down.returncode == 1
    assert "cannot reach the nubis server" in down.stderr

"""Deployments as a user drives them: a real `nubis up`, `nubis deploy`, calls through the gateway.

One platform and one deployment (`echo`) for the whole module; the tests run in file order and
each leaves the deployment serving for the next, until the last one deletes it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import nubis
from nubis.errors import NubisError

from platform_process import PlatformProcess
from servers import EXAMPLES, ROOT

pytestmark = pytest.mark.e2e

HANDLER = "    @nubis.handler\n"
BAD_INIT = '''    def init(self) -> None:
        raise RuntimeError("init exploded on purpose")

'''


def nubis_cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in env.items() if k not in ("NUBIS_TOKEN", "NUBIS_URL", "NUBIS_WORKSPACE")}
    return subprocess.run([sys.executable, "-m", "nubis.cli.main", *args], capture_output=True,
                          text=True, env=clean, cwd=ROOT, timeout=timeout)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], starts: str, *contains: str) -> None:
    assert result.returncode == 1, result.stdout
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(starts), result.stderr
    for text in contains:
        assert text in result.stderr


def get_json(platform: PlatformProcess, name: str = "echo") -> dict[str, Any]:
    return json.loads(ok(nubis_cli("deployment", "get", name, "--output", "json", env=platform.env)))


def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` every 0.2 s until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.2)


def echo_source(tmp_path: Path, edit: Callable[[str], str]) -> Path:
    """A copy of examples/echo (folder still named echo, so it pushes as photon echo) with an edit."""
    folder = tmp_path / "echo"
    shutil.copytree(EXAMPLES / "echo", folder)
    source = folder / "photon.py"
    source.write_text(edit(source.read_text()))
    return folder


def test_deploy_get_and_call(platform: PlatformProcess, client: nubis.Client) -> None:
    env = platform.env
    ok(nubis_cli("photon", "push", str(EXAMPLES / "echo"), env=env))
    deployed = ok(nubis_cli("deploy", "examples/echo", "--name", "echo", "--min", "1", "--max", "2",
                            env=env))
    endpoint = f"{platform.gateway_url}/default/echo"
    assert f"echo ready (echo:1) at {endpoint}" in deployed
    assert f'curl -H "Authorization: Bearer $NUBIS_TOKEN" {endpoint}/echo -d' in deployed

    got = get_json(platform)
    assert (got["status"], got["photon"], got["endpoint"]) == ("ready", "echo:1", endpoint)
    [replica] = got["replicas"]
    assert replica["status"] == "ready"
    assert replica["endpoint"].startswith("http://127.0.0.1:")

    auth = {"authorization": f"Bearer {platform.admin_token}"}
    called = httpx.post(f"{endpoint}/echo", json={"text": "through the gateway"}, headers=auth)
    assert (called.status_code, called.json()) == (200, {"text": "through the gateway"})
    assert httpx.post(f"{endpoint}/echo", json={"text": "x"}).status_code == 401

    with client.deployments.endpoint("echo") as echo:
        assert echo.echo(text="x") == {"text": "x"}
        assert list(echo.count(n=4)) == [0, 1, 2, 3]


def test_logs_and_events(platform: PlatformProcess) -> None:
    replica_id = get_json(platform)["replicas"][0]["id"]
    logs = ok(nubis_cli("deployment", "logs", "echo", "--tail", "20", env=platform.env))
    assert f"[{replica_id[:8]}]" in logs
    assert "photon echo is ready" in logs
    events = ok(nubis_cli("deployment", "events", "echo", env=platform.env))
    assert "created" in events
    assert "deploying echo:1" in events
    assert "→ ready" in events


def test_logs_follow_prints_new_lines_once(platform: PlatformProcess) -> None:
    clean = {k: v for k, v in platform.env.items() if k != "NUBIS_TOKEN"}
    follow = subprocess.Popen([sys.executable, "-m", "nubis.cli.main", "deployment", "logs", "echo", "-f"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean,
                              cwd=ROOT)  # one pipe, read below: a second, unread one could fill
    try:
        assert follow.stdout is not None
        first = until(lambda: "photon echo is ready" in (line := follow.stdout.readline()) and line,
                      30, "the first lines while following")
        time.sleep(2.5)  # two more polls, which must print nothing again
    finally:
        follow.terminate()
        rest, _ = follow.communicate(timeout=10)
    assert "photon echo is ready" not in rest, first


def test_scale_up(platform: PlatformProcess) -> None:
    assert "echo: 2..2 replicas" in ok(nubis_cli("deployment", "scale", "echo", "--min", "2",
                                                  env=platform.env))

    def two_ready() -> bool:
        got = get_json(platform)
        return [r["status"] for r in got["replicas"]] == ["ready", "ready"]

    until(two_ready, 30, "two ready replicas")
    listed = json.loads(ok(nubis_cli("deployment", "list", "--output", "json", env=platform.env)))
    assert [(d["name"], d["ready_replicas"]) for d in listed] == [("echo", 2)]


class Caller(threading.Thread):
    """Calls the deployment in a loop until stopped; counts answers and failures."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.answers: list[str] = []
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(headers={"authorization": f"Bearer {self.token}"}, timeout=10) as http:
            while not self.done.is_set():
                try:
                    response = http.post(f"{self.url}/echo", json={"text": "hi"})
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
                else:
                    self.answers.append(response.json()["text"])
                time.sleep(0.02)


def test_rolling_update_without_failed_requests(platform: PlatformProcess, tmp_path: Path) -> None:
    env = platform.env
    folder = echo_source(tmp_path, lambda s: s.replace('{"text": text}', '{"text": text + "!"}', 1))
    assert "pushed echo:2" in ok(nubis_cli("photon", "push", str(folder), env=env))

    caller = Caller(f"{platform.gateway_url}/default/echo", platform.admin_token)
    caller.start()
    try:
        until(lambda: caller.answers, 10, "a first answer")
        ok(nubis_cli("deployment", "update", "echo", "--photon", "echo:2", env=env))

        def all_on_2() -> bool:
            got = get_json(platform)
            replicas = got["replicas"]
            return (got["status"] == "ready" and len(replicas) == 2
                    and all((r["photon"], r["status"]) == ("echo:2", "ready") for r in replicas))

        until(all_on_2, 90, "every replica on echo:2")
        until(lambda: caller.answers[-1] == "hi!", 5, "answers from echo:2")
    finally:
        caller.done.set()
        caller.join(15)
    assert caller.failures == []
    assert {"hi", "hi!"} <= set(caller.answers)


class Follower(threading.Thread):
    """`nubis deployment logs NAME -f` in the background, keeping every line it prints."""

    def __init__(self, env: dict[str, str], name: str) -> None:
        super().__init__(daemon=True)
        clean = {k: v for k, v in env.items() if k != "NUBIS_TOKEN"}
        argv = [sys.executable, "-m", "nubis.cli.main", "deployment", "logs", name, "-f"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=clean, cwd=ROOT)  # one pipe, always read: no unread one to fill
        self.lines: list[str] = []

    def run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def of_replicas(self, other_than: set[str]) -> dict[str, list[str]]:
        """The lines of each replica not in ``other_than`` (8-character ids), in order."""
        found: dict[str, list[str]] = {}
        for line in list(self.lines):
            prefix, _, rest = line.partition("] ")
            if prefix.startswith("[") and prefix[1:] not in other_than:
                found.setdefault(prefix[1:], []).append(rest)
        return found

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.join(timeout=10)


def test_bad_update_rolls_back_and_logs_f_shows_the_crash(
    platform: PlatformProcess, client: nubis.Client, tmp_path: Path
) -> None:
    env = platform.env
    folder = echo_source(tmp_path, lambda s: s.replace(HANDLER, BAD_INIT + HANDLER, 1))
    assert "pushed echo:3" in ok(nubis_cli("photon", "push", str(folder), env=env))
    serving = {r["id"][:8] for r in get_json(platform)["replicas"]}
    follower = Follower(env, "echo")
    follower.start()
    try:
        until(lambda: follower.lines, 30, "the serving replicas' lines while following")
        ok(nubis_cli("deployment", "update", "echo", "--photon", "echo:3", env=env))

        def rolled_back() -> list[Any]:
            return [e for e in client.deployments.events("echo") if e.kind == "rollback"]

        [rollback] = until(rolled_back, 90, "a rollback event")
        [(replica, _)] = until(lambda: follower.of_replicas(serving).items(), 30, "the new replica's lines")
        [log] = (platform.home / "backend" / "logs").glob(f"{replica}*.log")
        # each of its runs (it crashed 3 times before the rollback) from its first line
        until(lambda: follower.of_replicas(serving)[replica] == log.read_text().splitlines(), 30,
              "every line the new replica wrote")
    finally:
        follower.stop()
    assert "rolled back from echo:3" in rollback.message
    assert "exited with code 1" in rollback.message
    assert "RuntimeError: init exploded on purpose" in rollback.message
    runs = [line for line in follower.of_replicas(serving)[replica] if "init exploded on purpose" in line]
    assert len(runs) >= 2, follower.lines
    assert get_json(platform)["photon"] == "echo:2"
    with client.deployments.endpoint("echo") as echo:
        assert echo.echo(text="still") == {"text": "still!"}
    ready = client.deployments.wait_ready("echo", timeout=60)
    assert {r.photon for r in ready.replicas} == {"echo:2"}


def test_deploy_of_a_crashing_photon_fails_with_the_reason(platform: PlatformProcess) -> None:
    failed = nubis_cli("deploy", "echo:3", "--name", "broken", "--timeout", "60", env=platform.env)
    assert failed.returncode == 1
    progress, error = failed.stderr.rstrip("\n").rsplit("\n", 1)
    assert "pending · 0/1 ready" in progress
    assert error.startswith("error (deployment_not_ready): deployment 'broken' is failed: exited with code 1")
    assert "RuntimeError: init exploded on purpose" in error
    assert "deleted broken" in ok(nubis_cli("deployment", "delete", "broken", "--yes", env=platform.env))


def test_bad_specs_are_refused(platform: PlatformProcess, client: nubis.Client) -> None:
    env = platform.env
    one_line_error(nubis_cli("deploy", "nope:1", "--name", "nope", env=env),
                   "error (validation_error): photon 'nope:1' is not in the registry", "nubis photon push")
    one_line_error(nubis_cli("deploy", "echo:1", "--name", "minmax", "--min", "3", "--max", "2", env=env),
                   "error (validation_error):", "min_replicas (3) must not exceed max_replicas (2)")
    one_line_error(nubis_cli("deploy", "echo:1", "--name", "huge", "--cpu", "999", env=env),
                   "error (validation_error): one replica needs more than this platform has: "
                   "no node can hold a replica of 999 CPU")
    one_line_error(nubis_cli("deploy", "echo:1", "--name", "echo", env=env),
                   "error (conflict): deployment 'echo' already exists")
    for call, status in [
        (lambda: client.deployments.create("nope", "nope:1"), 422),
        (lambda: client.deployments.create("minmax", "echo:1", min_replicas=3, max_replicas=2), 422),
        (lambda: client.deployments.create("huge", "echo:1", resources={"cpu": 999}), 422),
        (lambda: client.deployments.create("echo", "echo:1"), 409),
    ]:
        with pytest.raises(NubisError) as caught:
            call()
        assert caught.value.http_status == status
    assert [d.name for d in client.deployments.list()] == ["echo"]  # "broken" is gone too


def test_deploy_waits_with_the_reason_and_update_changes_resources(
    platform: PlatformProcess, client: nubis.Client
) -> None:
    env = platform.env
    cpus = str(len(os.sched_getaffinity(0)))  # the whole machine, while echo holds some of it
    waited = nubis_cli("deploy", "echo:2", "--name", "hog", "--cpu", cpus, "--timeout", "3", env=env)
    assert waited.returncode == 1
    progress, error = waited.stderr.rstrip("\n").rsplit("\n", 1)
    assert "pending: waiting for resources: " in progress, progress
    assert error.startswith("error (deployment_not_ready): deployment 'hog' not ready after 3 s "
                            "(status pending: waiting for resources: "), error
    ok(nubis_cli("deployment", "delete", "hog", "--yes", env=env))
    until(lambda: [d.name for d in client.deployments.list()] == ["echo"], 30, "hog gone")

    before = {r["id"] for r in get_json(platform)["replicas"]}
    updated = ok(nubis_cli("deployment", "update", "echo", "--cpu", "0.25", "--env", "GREETING=hi", env=env))
    assert "rolling out echo:2 to echo" in updated

    def rolled() -> bool:
        got = get_json(platform)
        ids = {r["id"] for r in got["replicas"]}
        return got["status"] == "ready" and not ids & before and all(
            r["status"] == "ready" for r in got["replicas"])

    until(rolled, 90, "every replica replaced")
    got = get_json(platform)
    assert (got["resources"]["cpu"], got["env"]) == (0.25, {"GREETING": "hi"})
    with client.deployments.endpoint("echo") as echo:
        assert echo.echo(text="still") == {"text": "still!"}


def test_delete_stops_replicas(platform: PlatformProcess, client: nubis.Client) -> None:
    endpoints = [r["endpoint"] for r in get_json(platform)["replicas"]]
    assert "deleted echo" in ok(nubis_cli("deployment", "delete", "echo", "--yes", env=platform.env))
    listed = json.loads(ok(nubis_cli("deployment", "list", "--output", "json", env=platform.env)))
    assert listed == []
    one_line_error(nubis_cli("deployment", "get", "echo", env=platform.env),
                   "error (not_found): deployment 'echo' not found")

    def refused(url: str) -> bool:
        try:
            httpx.get(f"{url}/healthz", timeout=1)
        except httpx.ConnectError:
            return True
        except httpx.HTTPError:
            return False
        return False

    until(lambda: all(refused(url) for url in endpoints), 40, "the old replicas refusing connections")

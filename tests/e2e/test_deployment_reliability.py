"""Under steady load on two replicas: SIGTERM or SIGKILL one, kill and restart the control plane.

A real `nubis up` (control plane, gateway, local backend) and real replica processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from platform_process import RestartablePlatform as Platform
from servers import ROOT, Load, free_port, stop

pytestmark = pytest.mark.e2e


def wait_ready(api: httpx.Client, replicas: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    dep: dict = {}
    while time.monotonic() < deadline:
        dep = api.get("/deployments/echo").json()
        if dep["ready_replicas"] == replicas and len(dep["replicas"]) == replicas:
            return dep
        time.sleep(0.2)
    raise AssertionError(f"not {replicas} ready replicas: {dep}")


def replica_pid(endpoint: str) -> int:
    port = endpoint.rsplit(":", 1)[1]
    out = subprocess.run(["pgrep", "-f", "--", f"nubis.photon.serve .* --port {port}$"],
                         capture_output=True, text=True).stdout.split()
    assert len(out) == 1, out
    return int(out[0])


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    p = Platform(tmp_path / "home", free_port(), free_port())
    p.up()
    try:
        yield p
    finally:
        if p.proc is not None:
            stop(p.proc, timeout=60)


def test_two_replicas_survive_sigterm_sigkill_and_a_control_plane_restart(platform: Platform) -> None:
    env = {**os.environ, "NUBIS_HOME": str(platform.home)}
    subprocess.run([sys.executable, "-m", "nubis.cli.main", "photon", "push", "examples/echo"],
                   env=env, cwd=ROOT, check=True, capture_output=True)
    api = platform.api()
    spec = {"name": "echo", "photon": "echo", "autoscaling": {"min_replicas": 2, "max_replicas": 2}}
    assert api.post("/deployments", json=spec).status_code == 201
    wait_ready(api, 2)
    load = Load(f"http://127.0.0.1:{platform.gateway_port}/default/echo/echo", platform.headers)
    threads = [threading.Thread(target=load.run) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        assert load.served_during(1.5) > 0
        first, second = (r["endpoint"] for r in api.get("/deployments/echo").json()["replicas"])
        os.kill(replica_pid(first), signal.SIGTERM)
        assert load.served_during(2) > 0
        assert load.failures == [], "SIGTERM of one replica failed requests"
        wait_ready(api, 2)
        os.kill(replica_pid(second), signal.SIGKILL)
        assert load.served_during(2) > 0
        wait_ready(api, 2)
        killed_at = len(load.failures)
        assert platform.proc is not None
        platform.proc.kill()  # the control plane crashes: gateway and replicas go on
        platform.proc.wait()
        assert load.served_during(2) > 0
        platform.up()
        assert load.served_during(2) > 0
        dep = wait_ready(api, 2)
        assert len(load.failures) == killed_at, load.failures
        assert all(r["restarts"] == 0 for r in dep["replicas"])
        messages = [e["message"] for e in api.get("/deployments/echo/events").json()]
        assert messages.count("adopted after a restart") == 2
    finally:
        load._stop.set()
        for t in threads:
            t.join()
    assert len(load.failures) <= 4, load.failures  # SIGKILL: at most the requests in flight on it

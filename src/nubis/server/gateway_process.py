"""``nubis up`` runs the gateway as its own process, fed by the control plane's routing table.

The gateway outlives a crashed control plane (it keeps serving from its last routing table); the
next ``nubis up`` on the same home adopts it through ``gateway.pid`` instead of starting a second
one. A clean stop of ``nubis up`` stops it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from nubis.home import write_private
from nubis.server.settings import ServerSettings

START_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.25  # a new ready replica reaches the gateway within this


@dataclass
class GatewayProcess:
    pid: int
    adopted: bool
    proc: subprocess.Popen[bytes] | None = None


def _pid_file(settings: ServerSettings) -> Path:
    return settings.home / "gateway.pid"


def token_file(settings: ServerSettings) -> Path:
    """The gateway's token (0600): read by the gateway, never passed in its argv or environment,
    where other processes of the same user (workloads) could read it."""
    return settings.home / "gateway.token"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        if b"nubis.gateway" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return False
    return True


def _serving(settings: ServerSettings) -> bool:
    try:
        r = httpx.get(f"{settings.gateway_url}/healthz", timeout=1)
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and "routes_version" in r.text


def start_gateway(settings: ServerSettings, token: str) -> GatewayProcess:
    pid_file = _pid_file(settings)
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file.read_text().strip())
        if _alive(pid) and _serving(settings):
            return GatewayProcess(pid=pid, adopted=True)
    api = f"http://127.0.0.1:{settings.port}/api/v1/gateway"
    argv = [
        sys.executable, "-m", "nubis.gateway", "--host", settings.host,
        "--port", str(settings.gateway_port), "--routes-url", f"{api}/routes", "--report-url", f"{api}/load",
        "--poll-interval", str(POLL_INTERVAL_S), "--token-file", str(token_file(settings)),
    ]
    write_private(token_file(settings), (token + "\n").encode())
    env = {k: v for k, v in os.environ.items() if k != "NUBIS_GATEWAY_TOKEN"}
    proc = subprocess.Popen(argv, env=env, start_new_session=True)  # survives a control-plane crash
    pid_file.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _serving(settings):  # `nubis up` is healthy only once its gateway answers
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the gateway did not start on {settings.gateway_url} (is the port taken?)")
        time.sleep(0.05)
    return GatewayProcess(pid=proc.pid, adopted=False, proc=proc)


def stop_gateway(gateway: GatewayProcess, settings: ServerSettings, *, grace_s: float = 15.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(gateway.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if gateway.proc is not None and gateway.proc.poll() is not None:
            break
        if gateway.proc is None and not _alive(gateway.pid):
            break
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(gateway.pid, signal.SIGKILL)
        if gateway.proc is not None:
            gateway.proc.wait()
    _pid_file(settings).unlink(missing_ok=True)

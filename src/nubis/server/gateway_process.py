"""``nubis up`` runs the gateway as its own process, fed by the control plane's routing table."""

from __future__ import annotations

import os
import subprocess
import sys

from nubis.server.settings import ServerSettings


def start_gateway(settings: ServerSettings, token: str) -> subprocess.Popen[bytes]:
    api = f"http://127.0.0.1:{settings.port}/api/v1/gateway"
    argv = [
        sys.executable, "-m", "nubis.gateway", "--host", settings.host, "--port", str(settings.gateway_port),
        "--routes-url", f"{api}/routes", "--report-url", f"{api}/load",
    ]
    env = {**os.environ, "NUBIS_GATEWAY_TOKEN": token}  # not on the command line: `ps` shows argv
    return subprocess.Popen(argv, env=env)


def stop_gateway(proc: subprocess.Popen[bytes], *, grace_s: float = 15.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

"""A real `nubis up` process for end-to-end tests: free port, own NUBIS_HOME, SIGTERM at the end."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from servers import free_port, start, stop


@dataclass
class PlatformProcess:
    url: str
    home: Path
    env: dict[str, str]
    gateway_url: str

    @property
    def admin_token(self) -> str:
        return (self.home / "admin.token").read_text().strip()


@contextlib.contextmanager
def nubis_up(home: Path, *extra: str, timeout: float = 60) -> Iterator[PlatformProcess]:
    port, gateway_port = free_port(), free_port()
    env = {"NUBIS_HOME": str(home)}
    proc = start([sys.executable, "-m", "nubis.cli.main", "up", "--home", str(home),
                  "--port", str(port), "--gateway-port", str(gateway_port), *extra], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                raise RuntimeError(f"nubis up exited with {proc.returncode}:\n{out}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"nubis up not healthy after {timeout} s")
            time.sleep(0.1)
        yield PlatformProcess(url=url, home=home, env={**os.environ, **env},
                              gateway_url=f"http://127.0.0.1:{gateway_port}")
    finally:
        stop(proc)
        if proc.stdout:
            proc.stdout.close()


@dataclass
class RestartablePlatform:
    """`nubis up` on fixed ports and home, so that a test can kill it and start it again."""

    home: Path
    port: int
    gateway_port: int
    proc: subprocess.Popen[str] | None = None

    def up(self) -> None:
        self.proc = start([sys.executable, "-m", "nubis.cli.main", "up", "--home", str(self.home),
                           "--port", str(self.port), "--gateway-port", str(self.gateway_port)],
                          env={"NUBIS_HOME": str(self.home)})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError("nubis up did not start")

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {(self.home / 'admin.token').read_text().strip()}"}

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}/api/v1", headers=self.headers,
                            timeout=10)

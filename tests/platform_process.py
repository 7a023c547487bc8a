"""A real `nubis up` process for end-to-end tests: free port, own NUBIS_HOME, SIGTERM at the end."""

from __future__ import annotations

import contextlib
import os
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

"""A real `nubis up` process for end-to-end tests: free port, own NUBIS_HOME, SIGTERM at the end."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

import nubis

from servers import LoggedProcess, free_port, start, stop


@dataclass
class PlatformProcess:
    url: str
    home: Path
    env: dict[str, str]
    gateway_url: str
    argv: list[str] = field(default_factory=list)
    proc: LoggedProcess | None = None

    @property
    def admin_token(self) -> str:
        return (self.home / "admin.token").read_text().strip()

    def cli(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`nubis ARGS` as a user runs it here: found through NUBIS_HOME, no token or URL in the env."""
        clean = {k: v for k, v in {**self.env, **(env or {})}.items()
                 if k not in ("NUBIS_TOKEN", "NUBIS_URL", "NUBIS_WORKSPACE")}
        return subprocess.run([sys.executable, "-m", "nubis.cli.main", *args], capture_output=True,
                              text=True, env=clean, cwd=cwd, timeout=timeout)

    def start(self, timeout: float) -> None:
        """Start `nubis up` (again: same home, ports and options) and wait until it is healthy."""
        self.proc = proc = start(self.argv, log=up_log(self.home), env={"NUBIS_HOME": str(self.home)})
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nubis up exited with {proc.returncode}:\n{proc.output()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nubis up not healthy after {timeout} s")
            time.sleep(0.1)

    def crash(self) -> None:
        """SIGKILL the control plane (what it started, the gateway included, goes on)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


@contextlib.contextmanager
def nubis_up(home: Path, *extra: str, timeout: float = 60) -> Iterator[PlatformProcess]:
    port, gateway_port = free_port(), free_port()
    platform = PlatformProcess(
        url=f"http://127.0.0.1:{port}", home=home, env={**os.environ, "NUBIS_HOME": str(home)},
        gateway_url=f"http://127.0.0.1:{gateway_port}",
        argv=[sys.executable, "-m", "nubis.cli.main", "up", "--home", str(home), "--port", str(port),
              "--gateway-port", str(gateway_port), *extra])
    try:
        platform.start(timeout)
        yield platform
    finally:
        if platform.proc is not None:
            stop(platform.proc)


def up_log(home: Path) -> Path:
    """Where `nubis up` (and what it starts with its stdout) logs: next to its home, not inside."""
    home.parent.mkdir(parents=True, exist_ok=True)
    return home.with_name(f"{home.name}-up.log")


@dataclass
class RestartablePlatform:
    """`nubis up` on fixed ports and home, so that a test can kill it and start it again."""

    home: Path
    port: int
    gateway_port: int
    proc: LoggedProcess | None = None

    def up(self) -> None:
        self.proc = start([sys.executable, "-m", "nubis.cli.main", "up", "--home", str(self.home),
                           "--port", str(self.port), "--gateway-port", str(self.gateway_port)],
                          log=up_log(self.home), env={"NUBIS_HOME": str(self.home)})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError(f"nubis up did not start:\n{self.proc.output()[-4000:]}")

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {(self.home / 'admin.token').read_text().strip()}"}

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}/api/v1", headers=self.headers,
                            timeout=10)


@pytest.fixture(scope="module", name="platform")
def module_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    """A module's own `nubis up` on embedded defaults (conftests import this fixture)."""
    with nubis_up(tmp_path_factory.mktemp("platform") / "home") as running:
        yield running


@pytest.fixture(scope="module", name="client")
def module_client(platform: PlatformProcess) -> Iterator[nubis.Client]:
    """An admin SDK client of the module's `nubis up`."""
    with nubis.Client(platform.url, platform.admin_token) as c:
        yield c

"""Real photon server processes for tests: start on a free loopback port, wait for /readyz."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PhotonProcess:
    proc: subprocess.Popen[str]
    url: str

    def output(self) -> str:
        """Stop (if running) and return everything it printed."""
        stop(self.proc)
        out, _ = self.proc.communicate(timeout=10)
        return out


def start(args: list[str], *, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


def stop(proc: subprocess.Popen[str], timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(url: str, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"photon exited with {proc.returncode}:\n{out}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout} s")


@contextlib.contextmanager
def photon_process(
    target: str | Path, *extra: str, cli: bool = False, env: dict[str, str] | None = None
) -> Iterator[PhotonProcess]:
    """Serve ``target`` with ``python -m nubis.photon.serve`` (or ``nubis photon run``)."""
    port = free_port()
    if cli:
        cmd = [sys.executable, "-m", "nubis.cli.main", "photon", "run", str(target)]
    else:
        cmd = [sys.executable, "-m", "nubis.photon.serve", str(target)]
    proc = start([*cmd, "--port", str(port), *extra], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield PhotonProcess(proc, url)
    finally:
        stop(proc)
        if proc.stdout:
            proc.stdout.close()

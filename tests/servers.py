"""Real photon server processes for tests: start on a free loopback port, wait for /readyz.

Every server logs to a file, never to a pipe: nobody reads a pipe while the test runs, and a
server that has written 64 KiB into a full pipe blocks (and the test hangs with it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoggedProcess(subprocess.Popen):  # type: ignore[type-arg]
    """A server process whose stdout and stderr go to ``log`` (appended, so restarts add up)."""

    def __init__(self, args: list[str], *, log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        with log.open("ab") as out:  # the child has its own copy of the descriptor
            super().__init__(args, stdout=out, stderr=subprocess.STDOUT,
                             env={**os.environ, **(env or {})}, cwd=ROOT)

    def output(self) -> str:
        """Everything it printed so far."""
        return self.log.read_text(errors="replace")


@dataclass
class PhotonProcess:
    proc: LoggedProcess
    url: str

    def output(self) -> str:
        """Stop (if running) and return everything it printed."""
        stop(self.proc)
        return self.proc.output()


def start(args: list[str], *, log: Path, env: dict[str, str] | None = None) -> LoggedProcess:
    return LoggedProcess(args, log=log, env=env)


def stop(proc: subprocess.Popen[str], timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(url: str, proc: LoggedProcess, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"photon exited with {proc.returncode}:\n{proc.output()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout} s")


@contextlib.contextmanager
def photon_process(
    target: str | Path, *extra: str, cli: bool = False, env: dict[str, str] | None = None,
    ready_timeout: float = 120,
) -> Iterator[PhotonProcess]:
    """Serve ``target`` with ``python -m nubis.photon.serve`` (or ``nubis photon run``).

    Its log lives in a temporary folder until the block ends: read it inside with ``output()``.
    """
    port = free_port()
    if cli:
        cmd = [sys.executable, "-m", "nubis.cli.main", "photon", "run", str(target)]
    else:
        cmd = [sys.executable, "-m", "nubis.photon.serve", str(target)]
    with tempfile.TemporaryDirectory(prefix="nubis-photon-") as logs:
        proc = start([*cmd, "--port", str(port), *extra], log=Path(logs) / "photon.log", env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, proc, timeout=ready_timeout)
            yield PhotonProcess(proc, url)
        finally:
            stop(proc)


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A local S3 (``moto_server``) on a free loopback port; its URL. Skips the test when moto is
    not installed, and fails instead under ``CI``."""
    if shutil.which("moto_server") is None:
        if os.environ.get("CI"):
            raise RuntimeError("moto_server is not installed (pip install 'moto[server]')")
        pytest.skip("moto_server is not installed")
    port = free_port()
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        stop(proc)


@contextlib.contextmanager
def s3_bucket_in_env() -> Iterator[str]:
    """A moto_server S3 with a fresh bucket, its endpoint and credentials in ``os.environ`` (what a
    `nubis up` started now inherits) until the end; yields the bucket's ``s3://`` URL."""
    import boto3

    names = [*S3_CREDENTIALS, "NUBIS_S3_ENDPOINT_URL"]
    saved = {k: os.environ.get(k) for k in names}
    with moto_server() as s3_url:
        os.environ.update({**S3_CREDENTIALS, "NUBIS_S3_ENDPOINT_URL": s3_url})
        bucket = f"nubis-{os.urandom(4).hex()}"
        boto3.client("s3", endpoint_url=s3_url).create_bucket(Bucket=bucket)
        try:
            yield f"s3://{bucket}"
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@dataclass
class Load:
    """Client threads calling the echo deployment through the gateway until stopped."""

    url: str
    headers: dict[str, str]
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                try:
                    r = client.post(self.url, json={"text": "x"}, headers=self.headers)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if r.status_code == 200:
                    self.ok += 1
                else:
                    self.failures.append(r.text[:200])

    @contextlib.contextmanager
    def running(self, threads: int = 4) -> Iterator[Load]:
        """``threads`` clients calling until the block ends."""
        workers = [threading.Thread(target=self.run) for _ in range(threads)]
        for t in workers:
            t.start()
        try:
            yield self
        finally:
            self._stop.set()
            for t in workers:
                t.join()

    def served_during(self, seconds: float) -> int:
        before = self.ok
        time.sleep(seconds)
        return self.ok - before

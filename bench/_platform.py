"""The platform the job benches run against (one `nubis up` in a temporary home, auth on) and what
they share: a job's story when it did not do what it should, and runs tried again when they fail.
Used by ``bench/jobs.py`` and ``bench/third_party.py``."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import httpx
from _common import REPO, free_port, stop_process

from nubis.client.client import Client
from nubis.models.jobs import TERMINAL_JOB_STATUSES, Job, JobStatus

T = TypeVar("T")
POLL_S = 0.05  # how often the benches poll a job


@dataclass(frozen=True)
class Platform:
    url: str
    token: str
    pid: int
    log: Path
    gateway_url: str = ""


@contextlib.contextmanager
def platform(scratch: Path, *extra: str, env: dict[str, str] | None = None,
             timeout: float = 60) -> Iterator[Platform]:
    """One `nubis up` (with ``extra`` arguments) in a temporary home for the whole bench; its output
    goes to ``scratch``."""
    home, log_path = scratch / "home", scratch / "nubis-up.log"
    port, gateway_port = free_port(), free_port()
    scratch.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nubis.cli.main", "up", "--home", str(home), "--port", str(port),
             "--gateway-port", str(gateway_port), *extra],
            env={**os.environ, **(env or {}), "NUBIS_HOME": str(home)}, cwd=REPO, stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(proc, url, log_path, timeout=timeout)
            yield Platform(url, (home / "admin.token").read_text().strip(), proc.pid, log_path,
                           f"http://127.0.0.1:{gateway_port}")
        finally:
            stop_process(proc, grace=60)


def wait_healthy(proc: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nubis up exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nubis up not healthy within {timeout:.0f} s")


def explain(client: Client, job: Job) -> str:
    """The job's reason and its latest events: what to report when a job did not do what it should."""
    events = client.jobs.events(job.id, limit=20)
    lines = [f"job {job.name} ({job.id}) is {job.status}: {job.reason or '(no reason)'}"]
    lines += [f"  {e.at:%H:%M:%S.%f} {e.kind}: {e.message}" for e in events]
    return "\n".join(lines)


def attempt(name: str, variant: Callable[[], T], failures: list[str], tries: int = 3) -> T:
    """``variant()``, run again (at most ``tries`` times in all) if it fails; each failure is reported.

    Seen here: now and then a rank is killed by SIGABRT ("terminate called without an active
    exception") after its last line, in torch's teardown, under torchrun as under nubis."""
    for left in range(tries - 1, -1, -1):
        try:
            return variant()
        except RuntimeError as exc:
            failures.append(f"{name}: {str(exc).splitlines()[0][:300]}")
            print(f"  {name} failed, {left} tries left: {exc}", file=sys.stderr)
            if not left:
                raise
    raise AssertionError("unreachable")


def wait_succeeded(client: Client, job: Job, *, timeout: float = 300) -> Job:
    """Poll every ``POLL_S`` until the job ends; raises with its story unless it succeeded."""
    deadline = time.monotonic() + timeout
    while job.status not in TERMINAL_JOB_STATUSES:
        if time.monotonic() > deadline:
            raise TimeoutError(explain(client, job))
        time.sleep(POLL_S)
        job = client.jobs.get(job.id)
    if job.status != JobStatus.succeeded:
        raise RuntimeError(explain(client, job))
    return job


def epoch_s(at: datetime | None) -> float:
    """A job's timestamp (set once it got there) as seconds since the epoch."""
    assert at is not None
    return at.timestamp()


def process_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of ``pid`` itself, and of the children it has reaped (for `nubis up`: job workers)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks, (int(fields[13]) + int(fields[14])) / ticks

"""The bench harness: servers as subprocesses on free ports, load generation, tables.

Shared by ``bench/serving.py`` and ``bench/batching.py``. Everything runs on loopback; servers
run one at a time so that on a small machine the server and the load generator are the only two
things competing for the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

import aiohttp

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server: argv without host and port, and the path that says it is ready."""

    name: str
    argv: tuple[str, ...]
    ready_path: str
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Server:
    """A started server: where to reach it and its process id (for CPU accounting)."""

    base: str
    pid: int


@dataclass(frozen=True)
class LoadResult:
    """One measured run: throughput over the run and client-side latency percentiles."""

    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


# ── servers ─────────────────────────────────────────────────────────────────────────────────────


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_server(spec: ServerSpec, *, timeout: float = 120.0) -> Iterator[Server]:
    """Start ``spec`` on a free loopback port, wait until ready, yield it, stop it."""
    port = free_port()
    argv = [sys.executable, *spec.argv, "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, **dict(spec.env)}
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(proc, base + spec.ready_path, timeout=timeout, log=log)
            yield Server(base, proc.pid)
        finally:
            stop_process(proc)


def wait_ready(
    proc: subprocess.Popen[bytes], url: str, *, timeout: float, log: IO[bytes]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read().decode()}")
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(url, timeout=2) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} was not ready within {timeout:.0f} s")


def stop_process(proc: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``grace`` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def fetch_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


# ── load: wrk ───────────────────────────────────────────────────────────────────────────────────

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[{body}]]
"""
_WRK_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_WRK_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),", re.M)
_WRK_PCT = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.M)
_WRK_ERRORS = re.compile(
    r"Non-2xx or 3xx responses:\s+(\d+)"
    r"|Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)
_TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def wrk_threads(concurrency: int) -> int:
    return 1 if concurrency == 1 else 2


def run_wrk(url: str, body: bytes, *, concurrency: int, duration: float,
            headers: Mapping[str, str] | None = None) -> LoadResult:
    """POST ``body`` to ``url`` with wrk for ``duration`` s over ``concurrency`` connections."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT.format(body=body.decode()))
        for name, value in (headers or {}).items():
            script.write(f'wrk.headers["{name}"] = "{value}"\n')
    try:
        argv = [
            "wrk", "--latency", "-s", script.name,
            "-t", str(wrk_threads(concurrency)), "-c", str(concurrency),
            "-d", f"{max(1, round(duration))}s", url,
        ]
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(script.name)
    return parse_wrk(out)


def parse_wrk(out: str) -> LoadResult:
    total = _WRK_TOTAL.search(out)
    if total is None or _WRK_RPS.search(out) is None:
        raise RuntimeError(f"cannot read wrk output:\n{out}")
    pct = {m[1]: float(m[2]) * _TO_MS[m[3]] for m in _WRK_PCT.finditer(out)}
    errors = sum(int(g) for m in _WRK_ERRORS.finditer(out) for g in m.groups() if g)
    seconds = float(total[2]) * _TO_MS[total[3]] / 1000.0
    return LoadResult(int(total[1]), errors, seconds, pct.get("50", 0.0), pct.get("99", 0.0))


# ── load: aiohttp ───────────────────────────────────────────────────────────────────────────────


def run_aiohttp(
    url: str, bodies: Sequence[bytes], *, concurrency: int, duration: float,
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """``concurrency`` workers POST the ``bodies`` in turn, each waiting for its answer."""
    return asyncio.run(_aiohttp_load(url, bodies, concurrency=concurrency, duration=duration,
                                     headers=headers))


async def _aiohttp_load(
    url: str, bodies: Sequence[bytes], *, concurrency: int, duration: float,
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    sent_headers = {**JSON_HEADERS, **(headers or {})}
    latencies: list[float] = []
    errors = [0]
    next_body = itertools.cycle(bodies).__next__
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        deadline = start + duration

        async def worker() -> None:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                async with session.post(url, data=next_body(), headers=sent_headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors[0] += 1
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    return LoadResult(
        len(latencies), errors[0], seconds, percentile(latencies, 50), percentile(latencies, 99)
    )


def run_load(url: str, body: bytes, *, concurrency: int, duration: float) -> LoadResult:
    """wrk when installed (it barely uses the CPU the server needs), aiohttp otherwise."""
    if have_wrk():
        return run_wrk(url, body, concurrency=concurrency, duration=duration)
    return run_aiohttp(url, [body], concurrency=concurrency, duration=duration)


def percentile(seconds: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile of ``seconds``, in milliseconds (nearest rank)."""
    if not seconds:
        return 0.0
    ordered = sorted(seconds)
    rank = max(0, min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[rank] * 1000.0


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


# ── tables ──────────────────────────────────────────────────────────────────────────────────────


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, columns padded so it also reads well in a terminal."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def machine_line() -> str:
    """One line about where the numbers came from."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    usable, total = len(os.sched_getaffinity(0)), os.cpu_count()
    cores = f"{usable} cores" if usable == total else f"{usable} of {total} cores (taskset)"
    return f"{cores} ({cpu}), Python {sys.version.split()[0]}, loopback"


# ── other work on the machine ───────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds so far: the whole machine's, and ours (this process, its reaped children such
    as finished wrk runs, and the server under test)."""

    machine: float
    ours: float


def cpu_sample(server_pid: int | None = None) -> CpuSample:
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    # user, nice, system and steal: interrupt time is left out, since serving loopback traffic
    # puts some of the benchmark's own work there
    busy = fields[0] + fields[1] + fields[2] + fields[7]
    times = os.times()
    ours = times.user + times.system + times.children_user + times.children_system
    if server_pid is not None:
        with open(f"/proc/{server_pid}/stat") as stat:
            after_name = stat.read().rsplit(")", 1)[1].split()
        ours += (int(after_name[11]) + int(after_name[12])) / ticks  # utime, stime
    return CpuSample(busy / ticks, ours)


def other_cores(before: CpuSample, after: CpuSample, seconds: float) -> float:
    """Cores used on average by processes that are not part of the benchmark."""
    others = (after.machine - before.machine) - (after.ours - before.ours)
    return max(0.0, others / seconds) if seconds else 0.0


def with_other_cores(run: Callable[[], T], server_pid: int | None) -> tuple[T, float]:
    """``run()``, and how many cores other processes used meanwhile."""
    before = cpu_sample(server_pid)
    start = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - start
    return result, other_cores(before, cpu_sample(server_pid), seconds)


@dataclass(frozen=True)
class Quiet:
    """How to dodge other work on a shared machine: wait until other processes use at most
    ``max_cores`` (up to ``wait`` seconds), and redo a run they disturbed up to ``tries`` times."""

    max_cores: float = 0.25
    wait: float = 60.0
    tries: int = 3


def wait_for_quiet(server_pid: int | None, quiet: Quiet) -> float:
    """Sample 1 s windows until others use at most ``quiet.max_cores``; return the last sample."""
    deadline = time.monotonic() + quiet.wait
    while True:
        before = cpu_sample(server_pid)
        time.sleep(1.0)
        others = other_cores(before, cpu_sample(server_pid), 1.0)
        if others <= quiet.max_cores or time.monotonic() >= deadline:
            return others


def measure_quietly(
    run: Callable[[], T], server_pid: int | None, quiet: Quiet
) -> tuple[T, float]:
    """``run()`` in a quiet moment; redone while others disturbed it, keeping the least disturbed."""
    best: tuple[T, float] | None = None
    for _ in range(quiet.tries):
        wait_for_quiet(server_pid, quiet)
        result, others = with_other_cores(run, server_pid)
        if best is None or others < best[1]:
            best = (result, others)
        if others <= quiet.max_cores:
            break
        print(f"  (others used {others:.2f} cores: measuring again)", file=sys.stderr)
    assert best is not None
    return best


def add_quiet_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-others", type=float, default=Quiet.max_cores,
                        help="cores other processes may use during a run before it is redone")
    parser.add_argument("--quiet-wait", type=float, default=Quiet.wait,
                        help="seconds to wait for the machine to be quiet before each run")
    parser.add_argument("--tries", type=int, default=Quiet.tries,
                        help="runs per measurement at most while others disturb it")


def quiet_from_args(args: argparse.Namespace) -> Quiet:
    if args.quick:
        return Quiet(args.max_others, wait=5.0, tries=1)
    return Quiet(args.max_others, args.quiet_wait, args.tries)


def others_line(others: Sequence[float]) -> str:
    cores = os.cpu_count()
    return (f"other processes used median {median(others):.2f}, max {max(others, default=0):.2f} "
            f"of the {cores} cores during the measured runs")


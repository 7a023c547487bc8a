"""The Ray backend against the local backend, in one run, and what a lost node costs.

Two `nubis up` side by side, auth on, driven through the SDK as users do: one on the local backend,
one with ``--backend ray`` on a simulated 3-node Ray cluster on loopback (a head with no workload
resources, ``gpu-a`` and ``gpu-b`` with 2 fake GPUs, ``cpu``; Ray's health checks at 500 ms × 3)
with S3 on a local moto_server. Each round, alternating which goes first:

- replica cold start: ``deployments.create`` of the echo photon → the first 200 through the gateway;
- 3-worker job start: submit a 3-worker gloo job (init, barrier, exit) → ``succeeded``;

then, on the Ray backend only, a node killed (its processes die, as in a power loss):

- replacement replica: a 1-replica deployment's node killed → a ready replica on another node;
- gang resumed: a 2-worker ``--spread`` job's node killed → its next attempt running elsewhere;

and the echo through the Ray backend's gateway against the same echo on Ray Serve on the same
cluster, 2 replicas each, at concurrency 64 (``bench/_ray_serve.py``; needs ``ray[serve]``).

    python bench/cluster.py --rounds 3
    python bench/cluster.py --only serve --rounds 3     # parts: cold, job, loss, serve
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _common import format_table, free_port, machine_line, median
from _platform import Platform, platform
from _ray_serve import ServePlan, compare, details, require_serve, serve_rows

from nubis.client.client import Client

REPO = Path(__file__).resolve().parent.parent
HEALTH_CHECKS = {"health_check_period_ms": 500, "health_check_failure_threshold": 3,
                 "health_check_initial_delay_ms": 0}
S3_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
GANG = ("import torch.distributed as d; d.init_process_group('gloo'); d.barrier(); "
        "d.destroy_process_group()")
SLEEPER = "import time; time.sleep(600)"
PARTS = ("cold", "job", "loss", "serve")


def until(check: Callable[[], bool], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.05)


def cold_start(p: Platform, name: str) -> float:
    with Client(p.url, p.token) as client:
        started = time.perf_counter()
        client.deployments.create(name, "echo:1", resources={"cpu": 0.25, "memory": "256Mi"})
        with httpx.Client(timeout=5) as http:
            def answered() -> bool:
                try:
                    return http.post(f"{p.gateway_url}/default/{name}/echo", json={"text": "hi"},
                                     headers={"authorization": f"Bearer {p.token}"}).status_code == 200
                except httpx.HTTPError:
                    return False
            until(answered, f"{name} answers")
        elapsed = time.perf_counter() - started
        client.deployments.delete(name)
        return elapsed


def job_start(p: Platform, name: str) -> float:
    with Client(p.url, p.token) as client:
        started = time.perf_counter()
        job = client.jobs.submit(["python", "-c", GANG], name=name, workers=3,
                                 resources={"cpu": 0.5, "memory": "512Mi"})
        until(lambda: client.jobs.get(job.id).status in ("succeeded", "failed"), f"{name} ends", 300)
        elapsed = time.perf_counter() - started
        if client.jobs.get(job.id).status != "succeeded":
            raise RuntimeError(f"job {name} failed: {client.jobs.get(job.id).reason}")
        return elapsed


def node_of_name(nodes: dict[str, object], node_id: str) -> str:
    return next(name for name, handle in nodes.items() if str(handle.node_id) == node_id)  # type: ignore[attr-defined]


def replacement(p: Platform, cluster: object, nodes: dict[str, object], name: str) -> float:
    with Client(p.url, p.token) as client:
        client.deployments.create(name, "echo:1", resources={"cpu": 0.25, "memory": "256Mi"})
        client.deployments.wait_ready(name, timeout=180)
        (replica,) = [r for r in client.deployments.get(name).replicas if r.status == "ready"]
        lost = node_of_name(nodes, replica.node or "")
        killed = time.perf_counter()
        cluster.remove_node(nodes.pop(lost), allow_graceful=False)  # type: ignore[attr-defined]

        def replaced() -> bool:
            ready = [r for r in client.deployments.get(name).replicas if r.status == "ready"]
            return any(r.node != replica.node for r in ready)
        until(replaced, f"{name} has a ready replica elsewhere")
        elapsed = time.perf_counter() - killed
        client.deployments.delete(name)
    nodes[lost] = cluster.add_node(num_cpus=2)  # type: ignore[attr-defined]
    cluster.wait_for_nodes()  # type: ignore[attr-defined]
    return elapsed


def gang_resumed(p: Platform, cluster: object, nodes: dict[str, object], name: str) -> float:
    with Client(p.url, p.token) as client:
        job = client.jobs.submit(["python", "-c", SLEEPER], name=name, workers=2, spread=True, max_retries=2,
                                 resources={"cpu": 0.5, "memory": "256Mi"})
        until(lambda: client.jobs.get(job.id).status == "running", f"{name} runs")
        worker = client.jobs.get(job.id).worker_status[1]
        lost = node_of_name(nodes, worker.node or "")
        killed = time.perf_counter()
        cluster.remove_node(nodes.pop(lost), allow_graceful=False)  # type: ignore[attr-defined]
        until(lambda: (j := client.jobs.get(job.id)).attempt >= 2 and j.status == "running",
              f"{name}'s next attempt runs")
        elapsed = time.perf_counter() - killed
        client.jobs.cancel(job.id)
    nodes[lost] = cluster.add_node(num_cpus=2)  # type: ignore[attr-defined]
    cluster.wait_for_nodes()  # type: ignore[attr-defined]
    return elapsed


def start_s3(scratch: Path) -> tuple[subprocess.Popen[bytes], str]:
    if shutil.which("moto_server") is None:
        raise SystemExit("moto_server is missing: pip install 'moto[server]'")
    port = free_port()
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    until(lambda: _answers(url), "moto_server")
    urllib.request.urlopen(urllib.request.Request(f"{url}/bench", method="PUT"), timeout=10)
    return proc, url


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
        return True
    except httpx.HTTPError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    args = parser.parse_args()
    only = set(args.only.split(","))
    if not only or only - set(PARTS):
        parser.error(f"--only: a comma list of {', '.join(PARTS)}")
    if "serve" in only:
        require_serve()
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray's test cluster refuses loopback without it
    from ray.cluster_utils import Cluster  # the ray extra, once the environment is set

    scratch = Path(tempfile.mkdtemp(prefix="nubis-bench-cluster-"))
    os.environ["NUBIS_NODE_DIR"] = str(scratch / "nodes")
    s3, s3_url = start_s3(scratch)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "num_gpus": 0, "include_dashboard": False, "_system_config": HEALTH_CHECKS})
    nodes = {name: cluster.add_node(num_cpus=2, num_gpus=gpus) for name, gpus in
             (("gpu-a", 2), ("gpu-b", 2), ("cpu", 0))}
    cluster.wait_for_nodes()
    ray_env = {**S3_ENV, "NUBIS_S3_ENDPOINT_URL": s3_url}
    results: dict[str, list[float]] = {k: [] for k in ("cold local", "cold ray", "job local", "job ray",
                                                       "replacement", "gang resumed")}
    serve_plan, served = ServePlan(), {}
    needs_local = bool(only & {"cold", "job"})
    try:
        with platform(scratch / "local") if needs_local else contextlib.nullcontext() as local, platform(
                scratch / "ray", "--backend", "ray", "--ray-address", cluster.address, "--storage",
                "s3://bench/nubis", env=ray_env, timeout=180) as on_ray:
            for p in (local, on_ray) if needs_local else (on_ray,):
                with Client(p.url, p.token) as client:
                    client.photons.push(REPO / "examples" / "echo")
            for i in range(args.rounds if only - {"serve"} else 0):
                pairs = [("local", local), ("ray", on_ray)]
                for backend, p in pairs if i % 2 == 0 else pairs[::-1]:
                    if "cold" in only:
                        results[f"cold {backend}"].append(cold_start(p, f"cold-{i}"))
                    if "job" in only:
                        results[f"job {backend}"].append(job_start(p, f"gang-{i}"))
                if "loss" in only:
                    results["replacement"].append(replacement(on_ray, cluster, nodes, f"survivor-{i}"))
                    results["gang resumed"].append(gang_resumed(on_ray, cluster, nodes, f"resume-{i}"))
                print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in results.items() if v),
                      file=sys.stderr, flush=True)
            if "serve" in only:
                served = compare(on_ray, cluster.address, serve_plan, args.rounds)
    finally:
        cluster.shutdown()
        s3.terminate()
    report(results, args.rounds)
    if served:
        print(f"\nmedians of {args.rounds} rounds; {details(served, serve_plan)}")
        print(format_table(["", "gateway req/s", "Ray Serve req/s", "gateway / Ray Serve", "target"],
                           serve_rows(served, serve_plan)))


def report(results: dict[str, list[float]], rounds: int) -> None:
    m = {k: median(v) for k, v in results.items()}
    rows = []
    if results["cold ray"]:
        rows.append(["replica cold start", f"{m['cold local']:.2f}", f"{m['cold ray']:.2f}",
                     f"{m['cold ray'] / m['cold local']:.2f}x", "≤ 1.5x and ≤ 3 s"])
    if results["job ray"]:
        rows.append(["3-worker job start", f"{m['job local']:.2f}", f"{m['job ray']:.2f}",
                     f"+{m['job ray'] - m['job local']:.2f} s", "≤ +1.5 s"])
    if results["replacement"]:
        rows += [["node lost → replica ready elsewhere", "-", f"{m['replacement']:.2f}", "-", "≤ 10 s"],
                 ["node lost → gang's next attempt running", "-", f"{m['gang resumed']:.2f}", "-", "≤ 20 s"]]
    print(machine_line())
    if rows:
        print(f"medians of {rounds} rounds (s); Ray health checks 500 ms × 3")
        print(format_table(["", "local s", "ray s", "ray vs local", "target"], rows))


if __name__ == "__main__":
    main()

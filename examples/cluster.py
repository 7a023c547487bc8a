"""A 3-node Ray cluster on this machine, S3 on loopback, and ``nubis up --backend ray`` on them.

    pip install 'nubis[ray]' 'moto[server]'
    python examples/cluster.py            # then, in another shell, the `export` line it prints

Nodes (simulated by Ray's own test cluster, all on 127.0.0.1): a head with no workload resources
(the control plane's), ``gpu-a`` (2 CPU, 2 fake GPUs, label ``nubis.io/pool=a100``), ``gpu-b`` (2 CPU,
2 fake GPUs) and ``cpu`` (2 CPU), with Ray's health checks tightened so a lost node is noticed in
about 2 s. Storage is a bucket on a local ``moto_server`` (what MinIO or S3 is on real machines).

Type commands while it runs: ``nodes``, ``kill NAME`` (the node's processes die, as when its machine
loses power), ``stop NAME`` (``ray stop`` on it), ``add NAME`` (a new 2-CPU node), ``quit``.
Everything it starts stops with it. See docs/cluster.md for real machines.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HEALTH_CHECKS = {"health_check_period_ms": 500, "health_check_failure_threshold": 3,
                 "health_check_initial_delay_ms": 0}
NODES = {
    "gpu-a": {"num_cpus": 2, "num_gpus": 2, "labels": {"nubis.io/pool": "a100"}},
    "gpu-b": {"num_cpus": 2, "num_gpus": 2},
    "cpu": {"num_cpus": 2, "num_gpus": 0},
}
S3_ENV = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError as exc:
            if getattr(exc, "code", None):  # an HTTP error: it answers
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start within {timeout:.0f} s") from None
            time.sleep(0.2)


def start_s3(bucket: str) -> tuple[subprocess.Popen[bytes], str]:
    if shutil.which("moto_server") is None:
        raise SystemExit("moto_server is missing: pip install 'moto[server]'")
    port = free_port()
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(url, "moto_server")
    request = urllib.request.Request(f"{url}/{bucket}", method="PUT")
    urllib.request.urlopen(request, timeout=10)  # create the bucket
    return proc, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=None,
                        help="nubis's state folder (default: a new temporary one)")
    parser.add_argument("--port", type=int, default=8400)
    parser.add_argument("--gateway-port", type=int, default=8401)
    args = parser.parse_args()
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray's test cluster refuses loopback without it
    from ray.cluster_utils import Cluster  # the ray extra: imported once the environment is set

    home = args.home or Path(tempfile.mkdtemp(prefix="nubis-cluster-"))
    os.environ["NUBIS_NODE_DIR"] = str(home / "nodes")  # each simulated node's nubis folder
    s3, s3_url = start_s3("nubis")
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "num_gpus": 0, "include_dashboard": False, "_system_config": HEALTH_CHECKS})
    nodes = {name: cluster.add_node(**spec) for name, spec in NODES.items()}
    cluster.wait_for_nodes()
    env = {**os.environ, **S3_ENV, "NUBIS_S3_ENDPOINT_URL": s3_url}
    up = subprocess.Popen([sys.executable, "-m", "nubis.cli.main", "up", "--backend", "ray",
                           "--ray-address", cluster.address, "--storage", "s3://nubis/platform",
                           "--home", str(home), "--port", str(args.port),
                           "--gateway-port", str(args.gateway_port)], env=env)
    try:
        wait_http(f"http://127.0.0.1:{args.port}/healthz", "nubis up", timeout=120)
        print(f"\ncluster up: head + {', '.join(nodes)}; storage s3://nubis/platform on {s3_url}")
        print(f"in another shell:  export NUBIS_HOME={home}  then  nubis node list")
        print("commands here: nodes | kill NAME | stop NAME | add NAME | quit\n", flush=True)
        console(cluster, nodes)
    except (KeyboardInterrupt, EOFError):
        pass
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
        cluster.shutdown()
        s3.terminate()


def console(cluster: object, nodes: dict[str, object]) -> None:
    for line in sys.stdin:
        verb, _, name = line.strip().partition(" ")
        if verb == "quit":
            return
        if verb == "nodes":
            print(", ".join(f"{n} ({nodes[n].node_id[:12]})" for n in nodes))  # type: ignore[attr-defined]
        elif verb in ("kill", "stop") and name in nodes:
            cluster.remove_node(nodes.pop(name), allow_graceful=verb == "stop")  # type: ignore[attr-defined]
            print(f"{name}: {'stopped' if verb == 'stop' else 'killed'}")
        elif verb == "add" and name and name not in nodes:
            nodes[name] = cluster.add_node(num_cpus=2)  # type: ignore[attr-defined]
            cluster.wait_for_nodes()  # type: ignore[attr-defined]
            print(f"{name}: joined")
        else:
            print("commands: nodes | kill NAME | stop NAME | add NAME | quit")


if __name__ == "__main__":
    main()

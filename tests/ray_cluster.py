"""A simulated Ray cluster on loopback for tests: a head with no workload resources and three nodes.

``gpu-a`` (2 CPUs, 2 fake GPUs, label ``nubis.io/pool=a100``), ``gpu-b`` (2 CPUs, 2 fake GPUs) and
``cpu`` (2 CPUs), with Ray's health checks tightened so that a node removed ungracefully is seen
dead within about 2 s. Nodes share this machine; each node's nubis folder is ``node_dir``
(``NUBIS_NODE_DIR``, inherited by the raylets started here). Start it once per module: it takes
15 to 45 s on a loaded machine.

Import ``ray`` only through :func:`import_ray`: it sets what Ray needs on loopback first, and
skips the importing test module when Ray is not installed (fails under ``CI=true``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

HEALTH_CHECKS = {"health_check_period_ms": 500, "health_check_failure_threshold": 3,
                 "health_check_initial_delay_ms": 0}
NODES = {
    "gpu-a": {"num_cpus": 2, "num_gpus": 2, "labels": {"nubis.io/pool": "a100"}},
    "gpu-b": {"num_cpus": 2, "num_gpus": 2},
    "cpu": {"num_cpus": 2, "num_gpus": 0},
}


def import_ray() -> ModuleType:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray's test cluster refuses loopback without it
    try:
        import ray
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("ray is not installed: pip install 'nubis[ray]' to run the Ray backend's tests",
                    allow_module_level=True)
    return ray


@dataclass
class SimulatedCluster:
    address: str
    cluster: Any
    nodes: dict[str, Any]
    """Node name → Ray's node handle (``.node_id``)."""

    def node_id(self, name: str) -> str:
        return str(self.nodes[name].node_id)

    def add(self, name: str, **args: Any) -> str:
        """One more node (``Cluster.add_node``'s arguments); its id once it has joined."""
        self.nodes[name] = self.cluster.add_node(**args)
        self.cluster.wait_for_nodes()
        return self.node_id(name)

    def remove(self, name: str, *, graceful: bool) -> None:
        """Stop a node as ``ray stop`` does (graceful), or kill its processes, as when its machine
        loses power."""
        self.cluster.remove_node(self.nodes.pop(name), allow_graceful=graceful)


@contextmanager
def simulated_cluster(node_dir: Path) -> Iterator[SimulatedCluster]:
    ray = import_ray()
    from ray.cluster_utils import Cluster  # Ray's own test cluster: only with ray installed

    previous = os.environ.get("NUBIS_NODE_DIR")
    os.environ["NUBIS_NODE_DIR"] = str(node_dir)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "num_gpus": 0, "include_dashboard": False, "_system_config": HEALTH_CHECKS})
    try:
        nodes = {name: cluster.add_node(**args) for name, args in NODES.items()}
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace="nubis", log_to_driver=False)
        yield SimulatedCluster(cluster.address, cluster, nodes)
    except BaseException:
        shutdown(ray, cluster, previous)
        raise
    shutdown(ray, cluster, previous)
    left = until_gone(node_dir)
    assert not left, f"processes of the cluster's nodes outlived it: {left}"


def shutdown(ray: ModuleType, cluster: Any, previous: str | None) -> None:
    ray.shutdown()
    cluster.shutdown()
    if previous is None:
        os.environ.pop("NUBIS_NODE_DIR", None)
    else:
        os.environ["NUBIS_NODE_DIR"] = previous


def node_processes(node_dir: Path) -> list[str]:
    """Live processes that belong to the cluster's nodes: their environ names ``node_dir`` (every
    Ray worker and workload started there inherits it) or they run inside it."""
    marker = f"NUBIS_NODE_DIR={node_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in environ or cwd.startswith(str(node_dir)):
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def until_gone(node_dir: Path, timeout: float = 30.0) -> list[str]:
    """The node processes still alive after ``timeout`` s (Ray stops its workers asynchronously)."""
    deadline = time.monotonic() + timeout
    while (left := node_processes(node_dir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left

"""The Ray backend on a simulated 3-node cluster with real photon servers: nodes, GPUs, the replica
key, stop, a killed actor, adoption by a new control plane, orphans and a lost node."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

import polling
from ray_cluster import SimulatedCluster, import_ray, simulated_cluster

ray = import_ray()

from nubis.backends.artifacts import Artifact  # noqa: E402 - after the skip when ray is missing
from nubis.backends.base import (  # noqa: E402
    NodeFetchCapability,
    OrphansCapability,
    ReplicaHandle,
    ReplicaProbe,
    ReplicaSpec,
)
from nubis.backends.ray_actors import NAMESPACE, actor_name  # noqa: E402
from nubis.backends.ray_backend import RayBackend  # noqa: E402
from nubis.errors import NoCapacityError  # noqa: E402
from nubis.models.resources import Resources  # noqa: E402
from nubis.photon.build import build_bundle  # noqa: E402
from nubis.photon.runtime import REPLICA_KEY_HEADER  # noqa: E402
from nubis.storage import ObjectStore  # noqa: E402

from servers import EXAMPLES  # noqa: E402

pytestmark = pytest.mark.timeout(600)

READY_S = 120.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedCluster]:
    with simulated_cluster(tmp_path_factory.mktemp("ray-nodes")) as running:
        yield running


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Artifact]:
    """The echo photon in a local-folder storage every simulated node reaches."""
    folder = tmp_path_factory.mktemp("ray-storage")
    bundle, manifest = build_bundle(str(EXAMPLES / "echo"), folder / "echo.photon")
    storage = str(folder / "store")
    with bundle.open("rb") as fh:
        ObjectStore.from_url(storage).photons("default").put_file("echo/1.photon", fh)
    assert manifest.content_hash
    return storage, Artifact("default", "photons", "echo/1.photon", manifest.content_hash)


@pytest.fixture
def backend(cluster: SimulatedCluster, echo: tuple[str, Artifact], tmp_path: Path) -> RayBackend:
    return RayBackend(tmp_path / "control-plane", address=cluster.address, storage=echo[0])


def spec_for(echo: tuple[str, Artifact], replica_id: str, *, node: str | None = None,
             gpu: int = 0) -> ReplicaSpec:
    return ReplicaSpec(replica_id=replica_id, deployment="echo", workspace="default", bundle=None,
                       content_hash=echo[1].digest, artifact=echo[1], node=node,
                       resources=Resources(cpu=0.5, memory="256Mi", gpu=gpu))


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = READY_S) -> None:
    await polling.until(check, what, timeout)


async def until_probe(backend: RayBackend, handle: ReplicaHandle, accept: Callable[[ReplicaProbe], bool],
                      what: str) -> ReplicaProbe:
    return await polling.until_probe(backend, handle, accept, what, READY_S)


def replica_processes(replica_id: str) -> dict[int, dict[str, str]]:
    """Every live process of this machine started as ``replica_id`` (its environ names it)."""
    found = {}
    marker = f"NUBIS_REPLICA_ID={replica_id}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ:
            pairs = (item.decode(errors="replace").partition("=") for item in environ if item)
            found[int(proc.name)] = {k: v for k, _, v in pairs}
    return found


async def no_processes_left(replica_id: str) -> None:
    async def gone() -> bool:
        return not replica_processes(replica_id)

    await until(gone, f"every process of replica {replica_id} has ended", timeout=30)


async def actor_removed(replica_id: str) -> None:
    async def removed() -> bool:
        return actor_name(replica_id) not in await asyncio.to_thread(ray.util.list_named_actors)

    await until(removed, f"the actor of replica {replica_id} is removed", timeout=30)


def test_nodes_are_listed_with_their_gpus_and_labels(backend: RayBackend, cluster: SimulatedCluster) -> None:
    nodes = {n.id: n for n in backend.nodes()}
    for name, gpus in (("gpu-a", 2), ("gpu-b", 2), ("cpu", 0)):
        node = nodes[cluster.node_id(name)]
        assert node.alive and node.address == "127.0.0.1"
        assert (node.total.cpu, node.total.gpu) == (2.0, gpus)
        assert node.total.memory > 0 and node.free.cpu <= node.total.cpu
    assert nodes[cluster.node_id("gpu-a")].labels == {"nubis.io/pool": "a100"}
    assert nodes[cluster.node_id("cpu")].labels == {}
    head = [n for n in nodes.values() if n.id not in {cluster.node_id(k) for k in cluster.nodes}]
    assert [(n.total.cpu, n.total.gpu) for n in head] == [(0.0, 0)]
    workers = [nodes[cluster.node_id(name)] for name in cluster.nodes]
    capacity = backend.capacity()  # the head has no CPU: it runs no workload
    assert (capacity.cpu, capacity.gpus) == (6.0, (0, 1, 2, 3))
    assert capacity.memory == sum(n.total.memory for n in workers)


async def test_a_replica_that_fits_nowhere_is_refused_at_once(backend: RayBackend,
                                                              echo: tuple[str, Artifact],
                                                              cluster: SimulatedCluster) -> None:
    with pytest.raises(NoCapacityError):
        await backend.start_replica(spec_for(echo, "too-big", gpu=3))
    with pytest.raises(NoCapacityError, match="GPU"):
        await backend.start_replica(spec_for(echo, "no-gpu-there", node=cluster.node_id("cpu"), gpu=1))
    assert actor_name("too-big") not in ray.util.list_named_actors()


async def test_gpu_and_cpu_replicas_serve_with_their_key_and_leave_nothing(
        backend: RayBackend, echo: tuple[str, Artifact], cluster: SimulatedCluster) -> None:
    gpu = await backend.start_replica(spec_for(echo, "r-gpu", gpu=1))
    cpu = await backend.start_replica(spec_for(echo, "r-cpu", node=cluster.node_id("cpu")))
    assert gpu.endpoint is None and cpu.node == cluster.node_id("cpu")
    for handle in (gpu, cpu):
        ready = await until_probe(backend, handle, lambda p: p.ready, f"{handle.replica_id} ready")
        assert ready.endpoint == backend.endpoint_of(handle)
    gpu_nodes = {cluster.node_id("gpu-a"), cluster.node_id("gpu-b")}
    [gpu_env] = replica_processes("r-gpu").values()
    [cpu_env] = replica_processes("r-cpu").values()
    assert gpu_env["CUDA_VISIBLE_DEVICES"] in {"0", "1"}
    assert backend.gpus_of(gpu) == (int(gpu_env["CUDA_VISIBLE_DEVICES"]),)
    assert cpu_env["CUDA_VISIBLE_DEVICES"] == "" and backend.gpus_of(cpu) == ()
    assert backend.node_of(gpu) in gpu_nodes
    assert not any(k.startswith("RAY_") for k in gpu_env)

    endpoint = backend.endpoint_of(cpu)
    assert endpoint is not None and endpoint.startswith("http://127.0.0.1:")
    async with httpx.AsyncClient(timeout=10) as client:
        keyed = await client.post(f"{endpoint}/echo", json={"text": "hi"},
                                  headers={REPLICA_KEY_HEADER: cpu.ref["replica_key"]})
        unkeyed = await client.post(f"{endpoint}/echo", json={"text": "hi"})
    assert keyed.status_code == 200 and keyed.json() == {"text": "hi"}
    assert unkeyed.status_code == 401

    await backend.probe(cpu)
    assert any("photon echo on http://127.0.0.1" in line for line in backend.read_logs(cpu))
    followed: list[str] = []

    async def follow() -> None:
        async for line in backend.follow_logs(cpu, from_start=True):
            followed.append(line)

    follower = asyncio.create_task(follow())
    for handle in (gpu, cpu):
        await backend.stop_replica(handle, grace_s=10)
        await no_processes_left(handle.replica_id)
        assert not (await backend.probe(handle)).alive
    await backend.stop_replica(cpu)  # already gone: not an error
    assert any("photon echo on http://127.0.0.1" in line for line in backend.read_logs(cpu))
    await asyncio.wait_for(follower, 60)  # ends once the replica is gone
    assert any("photon echo on http://127.0.0.1" in line for line in followed)


async def test_a_bundle_that_storage_serves_wrong_is_refused_on_the_node(
        backend: RayBackend, echo: tuple[str, Artifact]) -> None:
    wrong = Artifact("default", "photons", "echo/1.photon", "0" * 64)
    handle = await backend.start_replica(replace(spec_for(echo, "r-wrong"), artifact=wrong))
    probe = await until_probe(backend, handle, lambda p: not p.alive, "r-wrong refused")
    assert probe.exit_code is None and "not the expected 000000000000" in probe.last_error_lines[-1]
    assert not replica_processes("r-wrong")
    await backend.stop_replica(handle)
    await actor_removed("r-wrong")


async def test_killing_the_actor_kills_its_child(backend: RayBackend,
                                                 echo: tuple[str, Artifact]) -> None:
    handle = await backend.start_replica(spec_for(echo, "r-killed"))
    await until_probe(backend, handle, lambda p: p.ready, "r-killed ready")
    assert replica_processes("r-killed")
    ray.kill(ray.get_actor(actor_name("r-killed"), namespace=NAMESPACE), no_restart=True)
    await no_processes_left("r-killed")
    probe = await until_probe(backend, handle, lambda p: not p.alive, "r-killed seen gone")
    assert probe.node_lost is None


async def test_a_new_control_plane_adopts_its_replicas_and_removes_unknown_ones(
        backend: RayBackend, echo: tuple[str, Artifact], cluster: SimulatedCluster,
        tmp_path: Path) -> None:
    kept = await backend.start_replica(spec_for(echo, "r-kept"))
    orphan = await backend.start_replica(spec_for(echo, "r-orphan"))
    await until_probe(backend, kept, lambda p: p.ready, "r-kept ready")
    await until_probe(backend, orphan, lambda p: p.ready, "r-orphan ready")
    [kept_pid] = replica_processes("r-kept")

    restarted = RayBackend(tmp_path / "restarted", address=cluster.address, storage=echo[0])
    assert isinstance(restarted, OrphansCapability) and isinstance(restarted, NodeFetchCapability)
    stored = ReplicaHandle.from_dict(kept.to_dict())
    assert await restarted.adopt(stored)
    assert restarted.endpoint_of(stored) == backend.endpoint_of(kept)
    assert (await restarted.probe(stored)).ready
    assert not await restarted.adopt(ReplicaHandle.from_dict({**kept.to_dict(), "ref": {"run": "other"}}))

    assert await restarted.collect_orphans({"r-kept"}) >= 1
    await no_processes_left("r-orphan")
    await actor_removed("r-orphan")
    assert actor_name("r-kept") in ray.util.list_named_actors()
    assert list(replica_processes("r-kept")) == [kept_pid]
    await restarted.stop_replica(stored, grace_s=10)
    await no_processes_left("r-kept")


async def test_no_child_outlives_a_node_stopped_gracefully(
        backend: RayBackend, echo: tuple[str, Artifact], cluster: SimulatedCluster) -> None:
    """Ray leaves a worker's children that lead their own session running when it stops a node."""
    node = cluster.add("spare", num_cpus=1)  # Ray starts a node from the main thread only
    handle = await backend.start_replica(spec_for(echo, "r-stopped", node=node))
    await until_probe(backend, handle, lambda p: p.ready, "r-stopped ready")
    cluster.remove("spare", graceful=True)
    await no_processes_left("r-stopped")
    probe = await until_probe(backend, handle, lambda p: not p.alive, "r-stopped seen gone")
    assert probe.node_lost
    await backend.stop_replica(handle)


async def test_a_replica_on_a_lost_node_is_reported_lost(
        backend: RayBackend, echo: tuple[str, Artifact], cluster: SimulatedCluster) -> None:
    """Last in this module: it removes a node."""
    node = cluster.node_id("gpu-b")
    handle = await backend.start_replica(spec_for(echo, "r-lost", node=node))
    await until_probe(backend, handle, lambda p: p.ready, "r-lost ready")
    cluster.remove("gpu-b", graceful=False)
    probe = await until_probe(backend, handle, lambda p: not p.alive, "r-lost seen gone")
    assert probe.node_lost and "health check" in probe.node_lost
    assert any("photon echo on http://127.0.0.1" in line for line in probe.last_error_lines)
    await no_processes_left("r-lost")
    [lost] = [n for n in backend.nodes() if n.id == node]
    assert not lost.alive and lost.death_reason == probe.node_lost
    await backend.stop_replica(handle)

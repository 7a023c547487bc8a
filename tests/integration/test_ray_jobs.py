"""Jobs on the Ray backend, on a simulated 3-node cluster: a spread gang's gloo all_reduce across
nodes with torchrun's env, a gang that cannot be placed, a failing rank, stop, checkpoints that
follow a job to another node, and a worker whose node is lost."""

from __future__ import annotations

import asyncio
import json
import time
import zipfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

import polling
from ray_cluster import SimulatedCluster, import_ray, simulated_cluster

ray = import_ray()

from nubis.backends.artifacts import Artifact, file_sha256  # noqa: E402 - after the skip when ray is missing
from nubis.backends.base import GangSpec, JobsCapability, ReplicaHandle, ReplicaProbe  # noqa: E402
from nubis.backends.local_jobs import CHECKPOINT_RETENTION_S  # noqa: E402
from nubis.backends.ray_backend import RayBackend  # noqa: E402
from nubis.backends.ray_jobs import GANG_PREFIX, WORKER_PREFIX  # noqa: E402
from nubis.errors import NoCapacityError  # noqa: E402
from nubis.models.jobs import job_outputs_path  # noqa: E402
from nubis.models.resources import Resources  # noqa: E402
from nubis.storage import ObjectStore  # noqa: E402

pytestmark = pytest.mark.timeout(600)

WAIT_S = 150.0
WORKSPACE = "default"
ALL_REDUCE = """\
import json, os
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
total = torch.tensor([float(os.environ["RANK"]) + 1.0])
dist.all_reduce(total)
names = ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
         "NUBIS_NODE_IPS", "CUDA_VISIBLE_DEVICES", "NUBIS_CHECKPOINT_DIR", "NUBIS_OUTPUT_DIR")
seen = {name: os.environ.get(name) for name in names}
seen["sum"] = total.item()
with open(os.path.join(os.environ["NUBIS_OUTPUT_DIR"], f"rank-{os.environ['RANK']}.json"), "w") as fh:
    json.dump(seen, fh)
print("all_reduce", seen["sum"], flush=True)
dist.destroy_process_group()
"""
WRITE_CHECKPOINT = """\
import os, time
with open(os.path.join(os.environ["NUBIS_CHECKPOINT_DIR"], "step.txt"), "w") as fh:
    fh.write("written by attempt " + os.environ["NUBIS_JOB_ATTEMPT"])
print("checkpoint written", flush=True)
time.sleep(3600)
"""
READ_CHECKPOINT = """\
import os, sys
with open(os.path.join(os.environ["NUBIS_CHECKPOINT_DIR"], "step.txt")) as fh:
    found = fh.read()
print("resumed from:", found, flush=True)
sys.exit(0 if found == "written by attempt 1" else 3)
"""
FAIL_ON_RANK_1 = """\
import os, time
rank = int(os.environ["RANK"])
print("rank", rank, "gpus", os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
if rank:
    from torch.distributed.elastic.multiprocessing.errors import record

    @record
    def main():
        raise ValueError("loss is nan at step 7")

    main()
time.sleep(3600)
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedCluster]:
    with simulated_cluster(tmp_path_factory.mktemp("ray-nodes")) as running:
        yield running


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A local-folder storage: the simulated nodes share this machine, so every node reaches it."""
    return str(tmp_path_factory.mktemp("ray-storage") / "store")


@pytest.fixture
def backend(cluster: SimulatedCluster, storage: str, tmp_path: Path) -> RayBackend:
    backend = RayBackend(tmp_path / "control-plane", address=cluster.address, storage=storage)
    assert isinstance(backend, JobsCapability)
    return backend


def code_artifact(storage: str, tmp_path: Path, name: str, script: str) -> Artifact:
    """A job's code (one script) as a zip in the workspace's storage, as ``nubis job submit`` leaves it."""
    archive = tmp_path / f"{name}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("main.py", script)
    with archive.open("rb") as fh:
        ObjectStore.from_url(storage).files(WORKSPACE).put_file(f"code/{name}.zip", fh)
    return Artifact(WORKSPACE, "files", f"code/{name}.zip", file_sha256(archive))


def gang(storage: str, job_id: str, nodes: tuple[str, ...], *,
         command: tuple[str, ...] = ("python", "main.py"), code: Artifact | None = None, attempt: int = 1,
         spread: bool = False, gpu: int = 0) -> GangSpec:
    env = {"NUBIS_JOB_ID": job_id, "NUBIS_JOB_ATTEMPT": str(attempt), "NUBIS_WORKSPACE": WORKSPACE,
           "NUBIS_STORAGE_URL": ObjectStore.from_url(storage).files_url(WORKSPACE)}
    return GangSpec(job_id=job_id, attempt=attempt, workspace=WORKSPACE, command=command, nodes=nodes,
                    env=env, resources=Resources(cpu=0.5, memory="256Mi", gpu=gpu), code_artifact=code,
                    spread=spread)


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = WAIT_S) -> None:
    await polling.until(check, what, timeout)


async def until_probe(backend: RayBackend, handle: ReplicaHandle, accept: Callable[[ReplicaProbe], bool],
                      what: str) -> ReplicaProbe:
    return await polling.until_probe(backend, handle, accept, what, WAIT_S)


def worker_processes(worker_id: str) -> list[int]:
    """Every live process of this machine started as ``worker_id`` (its environ names it)."""
    marker = f"NUBIS_REPLICA_ID={worker_id}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def ours(prefix: str) -> list[str]:
    """The ``nubis`` worker actors, or the groups not removed, whose name starts with ``prefix``."""
    if prefix.startswith(WORKER_PREFIX):
        named = ray.util.list_named_actors(all_namespaces=True)
        return [e["name"] for e in named if e["name"].startswith(prefix)]
    return [g["name"] for g in ray.util.placement_group_table().values()
            if g["name"].startswith(prefix) and g["state"] != "REMOVED"]


async def stop_all(backend: RayBackend, handles: list[ReplicaHandle], job_id: str) -> None:
    """Stop the gang; nothing of it is left: no actor, no group, no process."""
    await asyncio.gather(*(backend.stop_replica(h, grace_s=5) for h in handles))
    assert ours(f"{WORKER_PREFIX}{job_id}-") == []
    assert ours(f"{GANG_PREFIX}{job_id}-") == []

    async def no_process() -> bool:
        return not any(worker_processes(h.replica_id) for h in handles)

    await until(no_process, f"every process of job {job_id} has ended", timeout=30)


async def test_a_spread_gang_all_reduces_over_three_nodes_with_torchruns_env(
        backend: RayBackend, cluster: SimulatedCluster, storage: str, tmp_path: Path) -> None:
    nodes = tuple(cluster.node_id(name) for name in ("cpu", "gpu-a", "gpu-b"))
    code = code_artifact(storage, tmp_path, "all-reduce", ALL_REDUCE)
    handles = await backend.start_gang(gang(storage, "ddp", nodes, code=code, spread=True))
    assert [h.replica_id for h in handles] == ["ddp-1-0", "ddp-1-1", "ddp-1-2"]
    assert tuple(h.node for h in handles) == nodes and all(h.endpoint is None for h in handles)
    assert ours(f"{GANG_PREFIX}ddp-1") == [f"{GANG_PREFIX}ddp-1"]
    for handle in handles:
        probe = await until_probe(backend, handle, lambda p: not p.alive, f"{handle.replica_id} done")
        assert probe.exit_code == 0, probe.last_error_lines
    assert any("all_reduce 6.0" in line for line in backend.read_logs(handles[0]))

    files = ObjectStore.from_url(storage).files(WORKSPACE)
    seen = [json.loads(files.read_bytes(f"{job_outputs_path('ddp')}/rank-{rank}.json")) for rank in range(3)]
    port = seen[0]["MASTER_PORT"]
    for rank, env in enumerate(seen):
        assert env["sum"] == 6.0
        assert (env["RANK"], env["LOCAL_RANK"], env["NODE_RANK"]) == (str(rank), "0", str(rank))
        assert (env["WORLD_SIZE"], env["LOCAL_WORLD_SIZE"]) == ("3", "1")
        assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("127.0.0.1", port)
        assert env["NUBIS_NODE_IPS"] == "127.0.0.1,127.0.0.1,127.0.0.1"
        assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert len({env["NUBIS_CHECKPOINT_DIR"] for env in seen}) == 3  # each rank's own folder on its node
    await stop_all(backend, handles, "ddp")


async def test_a_gang_ray_cannot_place_is_refused_and_leaves_no_group(
        backend: RayBackend, cluster: SimulatedCluster, storage: str) -> None:
    three = tuple(cluster.node_id(name) for name in ("cpu", "gpu-a", "gpu-b"))
    with pytest.raises(NoCapacityError, match="each on a different node"):
        await backend.start_gang(gang(storage, "four-spread", (*three, three[0]), spread=True))
    with pytest.raises(NoCapacityError, match="3 GPU"):
        await backend.start_gang(gang(storage, "three-gpus", ("anywhere",), gpu=3))
    for job_id in ("four-spread", "three-gpus"):
        assert ours(f"{GANG_PREFIX}{job_id}-") == [] and ours(f"{WORKER_PREFIX}{job_id}-") == []


async def test_a_rank_exiting_1_shows_its_code_and_stop_leaves_nothing(
        backend: RayBackend, cluster: SimulatedCluster, storage: str) -> None:
    command = ("python", "-c", FAIL_ON_RANK_1)
    nodes = (cluster.node_id("gpu-a"),) * 2
    handles = await backend.start_gang(gang(storage, "fails", nodes, command=command, gpu=1))
    failed = await until_probe(backend, handles[1], lambda p: not p.alive, "rank 1 exited")
    assert failed.exit_code == 1 and failed.node_lost is None
    assert failed.last_error_lines[-1] == ("error reported by the script (torch.distributed.elastic): "
                                           "ValueError: loss is nan at step 7")
    running = await until_probe(backend, handles[0], lambda p: bool(backend.read_logs(handles[0])),
                                "rank 0 running")
    assert running.alive and running.exit_code is None and worker_processes("fails-1-0")
    [gpu_1] = [line.removeprefix("rank 1 gpus ") for line in failed.last_error_lines if "gpus" in line]
    [gpu_0] = [line.removeprefix("rank 0 gpus ") for line in backend.read_logs(handles[0])]
    assert {gpu_0, gpu_1} == {"0", "1"}  # one GPU each, from Ray

    followed = [line async for line in backend.follow_logs(handles[1], from_start=True)]
    assert followed[0] == f"rank 1 gpus {gpu_1}"  # and it ends: the worker has exited
    await stop_all(backend, handles, "fails")
    assert not (await backend.probe(handles[0])).alive
    await backend.stop_replica(handles[0])  # already gone: not an error


async def test_a_new_control_plane_adopts_its_workers_and_removes_unknown_gangs(
        backend: RayBackend, cluster: SimulatedCluster, storage: str, tmp_path: Path) -> None:
    command = ("python", "-c", "import time; print('up', flush=True); time.sleep(3600)")
    kept = await backend.start_gang(gang(storage, "kept", (cluster.node_id("cpu"),), command=command))
    orphan = await backend.start_gang(gang(storage, "orphan", (cluster.node_id("cpu"),), command=command))
    for handle in (*kept, *orphan):
        await until_probe(backend, handle, lambda p, h=handle: p.alive and backend.read_logs(h) == ["up"],
                          f"{handle.replica_id} running")
    [kept_pid] = worker_processes("kept-1-0")

    restarted = RayBackend(tmp_path / "restarted", address=cluster.address, storage=storage)
    stored = ReplicaHandle.from_dict(kept[0].to_dict())
    assert await restarted.adopt(stored)
    assert await restarted.collect_orphans({"kept-1-0"}) == 2  # the orphan's worker and its group
    assert ours(f"{WORKER_PREFIX}orphan-") == [] and ours(f"{GANG_PREFIX}orphan-") == []
    assert ours(f"{WORKER_PREFIX}kept-") == [f"{WORKER_PREFIX}kept-1-0"]

    async def orphan_gone() -> bool:
        return not worker_processes("orphan-1-0")

    await until(orphan_gone, "the orphan's process has ended", timeout=30)
    assert worker_processes("kept-1-0") == [kept_pid]
    assert (await restarted.probe(stored)).alive
    await stop_all(restarted, [stored], "kept")


async def test_a_checkpoint_follows_the_job_to_another_node_when_its_node_is_lost(
        backend: RayBackend, cluster: SimulatedCluster, storage: str, tmp_path: Path) -> None:
    """Last in this module: it removes a node."""
    lost_node = cluster.node_id("gpu-b")
    first = code_artifact(storage, tmp_path, "write", WRITE_CHECKPOINT)
    [handle] = await backend.start_gang(gang(storage, "resumes", (lost_node,), code=first))
    files = ObjectStore.from_url(storage).files(WORKSPACE)

    async def pushed() -> bool:
        return bool(files.list(".jobs/resumes/checkpoints/step.txt"))

    await until(pushed, "attempt 1's checkpoint pushed to storage while it runs")
    await until_probe(backend, handle, lambda p: backend.read_logs(handle) == ["checkpoint written"],
                      "attempt 1's output pulled by a probe, as each round of the reconciler does")
    cluster.remove("gpu-b", graceful=False)
    probe = await until_probe(backend, handle, lambda p: not p.alive, "the worker seen gone with its node")
    assert probe.node_lost and "checkpoint written" in probe.last_error_lines
    await stop_all(backend, [handle], "resumes")

    second = code_artifact(storage, tmp_path, "read", READ_CHECKPOINT)
    [resumed] = await backend.start_gang(gang(storage, "resumes", (cluster.node_id("cpu"),), code=second,
                                              attempt=2))
    assert resumed.node == cluster.node_id("cpu")
    probe = await until_probe(backend, resumed, lambda p: not p.alive, "attempt 2 done")
    assert probe.exit_code == 0, probe.last_error_lines
    assert "resumed from: written by attempt 1" in probe.last_error_lines
    await stop_all(backend, [resumed], "resumes")

    backend.forget_job("resumes")  # the job ended: its checkpoints stay for a while, then go
    assert backend.sweep_jobs(now=time.time()) == 0 and files.list(".jobs/resumes/checkpoints/")
    assert backend.sweep_jobs(now=time.time() + CHECKPOINT_RETENTION_S + 1) == 1
    assert files.list(".jobs/resumes/checkpoints/") == []

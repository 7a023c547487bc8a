"""nubis on a Ray cluster as a user runs it: a simulated 3-node cluster on loopback (a head with no
workload resources, two GPU nodes, one CPU node), S3 on a local moto_server, a real
`nubis up --backend ray` and the CLI. The tests run in file order on one cluster; the last one
takes a node away."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from platform_process import PlatformProcess, nubis_up
from ray_cluster import SimulatedCluster, import_ray, simulated_cluster
from servers import EXAMPLES, Load, s3_bucket_in_env

import_ray()

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
WAIT_S = 180.0


@dataclass
class Cluster:
    ray: SimulatedCluster
    platform: PlatformProcess

    def cli(self, *args: str) -> str:
        done = self.platform.cli(*args, cwd=EXAMPLES.parent, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--output", "json"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with s3_bucket_in_env() as bucket, simulated_cluster(tmp_path_factory.mktemp("nodes")) as ray_cluster, \
            nubis_up(tmp_path_factory.mktemp("platform") / "home", "--backend", "ray", "--ray-address",
                     ray_cluster.address, "--storage", f"{bucket}/nubis", timeout=180) as platform:
        yield Cluster(ray_cluster, platform)


def until(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.5)


def job_end(cluster: Cluster, name: str) -> dict[str, Any]:
    return until(lambda: (j := cluster.json("job", "get", name))["status"] in ("succeeded", "failed") and j,
                 f"job {name} ends")


def test_nodes_are_listed_with_capacity_and_labels(cluster: Cluster) -> None:
    nodes = {n["id"]: n for n in cluster.json("node", "list")}
    ids = {name: cluster.ray.node_id(name) for name in ("gpu-a", "gpu-b", "cpu")}
    assert set(ids.values()) <= set(nodes)
    assert nodes[ids["gpu-a"]]["labels"] == {"nubis.io/pool": "a100"}
    assert nodes[ids["gpu-b"]]["total"]["gpu"] == 2 and nodes[ids["cpu"]]["total"]["gpu"] == 0
    assert all(n["alive"] for n in nodes.values())


def test_gpu_replicas_land_on_gpu_nodes_and_serve_through_the_gateway(cluster: Cluster) -> None:
    cluster.cli("deploy", "examples/echo", "--name", "echo", "--min", "2", "--max", "2", "--gpu", "1",
                "--cpu", "0.5", "--memory", "256Mi", "--timeout", "240")
    replicas = cluster.json("deployment", "get", "echo")["replicas"]
    gpu_nodes = {cluster.ray.node_id("gpu-a"), cluster.ray.node_id("gpu-b")}
    assert len(replicas) == 2 and {r["node"] for r in replicas} == gpu_nodes  # one on each
    token = cluster.platform.admin_token
    with httpx.Client(timeout=30) as http:
        answers = [http.post(f"{cluster.platform.gateway_url}/default/echo/echo", json={"text": f"hi {i}"},
                             headers={"authorization": f"Bearer {token}"}) for i in range(20)]
    assert [a.status_code for a in answers] == [200] * 20


def test_node_labels_pick_the_node(cluster: Cluster) -> None:
    cluster.cli("deploy", "echo", "--name", "pinned", "--cpu", "0.25", "--memory", "128Mi",
                "--node-label", "nubis.io/pool=a100", "--timeout", "240")
    (replica,) = cluster.json("deployment", "get", "pinned")["replicas"]
    assert replica["node"] == cluster.ray.node_id("gpu-a")
    cluster.cli("deployment", "delete", "pinned", "--yes")


DDP = """import os, torch, torch.distributed as dist
dist.init_process_group("gloo")
total = torch.ones(1) * (dist.get_rank() + 1)
dist.all_reduce(total)
print(f"rank {dist.get_rank()} node_rank {os.environ['NODE_RANK']} of {os.environ['NUBIS_NODE_IPS']}: "
      f"sum {total.item():g}", flush=True)
dist.destroy_process_group()
"""


def test_a_spread_gang_runs_one_worker_per_node(cluster: Cluster, tmp_path: Path) -> None:
    (tmp_path / "ddp.py").write_text(DDP)
    cluster.cli("job", "submit", "--name", "ddp", "--workers", "3", "--spread", "--cpu", "1", "--memory",
                "512Mi", "--workdir", str(tmp_path), "--", "python", "ddp.py")
    job = job_end(cluster, "ddp")
    assert job["status"] == "succeeded", job["reason"]
    assert len({w["node"] for w in job["worker_status"]}) == 3
    for rank in range(3):
        out = cluster.cli("job", "logs", "ddp", "--worker", str(rank))
        assert f"rank {rank} node_rank {rank} of " in out and "sum 6" in out, out


def test_train_on_three_nodes_registers_the_model(cluster: Cluster) -> None:
    """The trainer's workers read and write the workspace's S3 storage through the API with their
    job token (no S3 credentials reach a workload), one worker per node."""
    job = cluster.json("train", "--model", "cnn", "--data", "builtin:digits", "--workers", "3", "--spread",
                       "--epochs", "6", "--cpu", "1", "--memory", "768Mi")
    assert job["status"] == "succeeded", job["reason"]
    assert len({w["node"] for w in job["worker_status"]}) == 3
    assert job["metrics"]["accuracy"] >= 0.9, job["metrics"]
    assert job["model"] == "digits-cnn:1"
    (version,) = cluster.json("model", "list")[0]["versions"]
    assert version["ref"] == "digits-cnn:1" and version["size_bytes"] > 0


SLOW_JOB = "import time; time.sleep(25); print('slept through it', flush=True)"


def test_a_control_plane_crash_and_restart_adopts_everything(cluster: Cluster) -> None:
    cluster.cli("job", "submit", "--name", "sleeper", "--cpu", "0.25", "--memory", "128Mi", "--no-code",
                "--", "python", "-c", SLOW_JOB)
    until(lambda: cluster.json("job", "get", "sleeper")["status"] == "running", "the job runs")
    before = cluster.json("deployment", "get", "echo")["replicas"]
    load = Load(f"{cluster.platform.gateway_url}/default/echo/echo",
                {"authorization": f"Bearer {cluster.platform.admin_token}"})
    with load.running():
        assert load.served_during(1.5) > 0
        cluster.platform.crash()  # the gateway and every actor go on
        assert load.served_during(2) > 0
        cluster.platform.start(timeout=180)
        assert load.served_during(2) > 0
        after = until(lambda: (d := cluster.json("deployment", "get", "echo"))["ready_replicas"] == 2 and d,
                      "the replicas adopted")
    assert load.failures == [], load.failures[:5]
    assert {(r["id"], r["node"], r["restarts"]) for r in after["replicas"]} == \
        {(r["id"], r["node"], r["restarts"]) for r in before}
    messages = [e["message"] for e in cluster.json("deployment", "events", "echo")]
    assert messages.count("adopted after a restart") == 2, messages
    job = job_end(cluster, "sleeper")
    assert (job["status"], job["attempt"]) == ("succeeded", 1), job
    assert "slept through it" in cluster.cli("job", "logs", "sleeper")


def nubis_ray_objects(job_id: str) -> list[str]:
    """The job's placement groups not removed and its worker actors, as Ray lists them."""
    import ray

    groups = [g["name"] for g in ray.util.placement_group_table().values()
              if job_id in g["name"] and g["state"] != "REMOVED"]
    actors = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if job_id in a["name"]]
    return groups + actors


def test_a_gang_the_nodes_cannot_hold_now_waits_with_the_reason_and_cancel_frees_it(cluster: Cluster) -> None:
    never = cluster.platform.cli("job", "submit", "--name", "four", "--workers", "4", "--spread", "--no-code",
                                 "--cpu", "0.25", "--memory", "128Mi", "--", "python", "-c", "pass")
    assert never.returncode == 1 and "needs 4 distinct nodes" in never.stderr, never.stderr
    # a sleeper holds 1 of gpu-a's 2 CPUs: three nodes with 1.5 CPU free each, not now, maybe later
    cluster.cli("job", "submit", "--name", "hog", "--cpu", "1", "--memory", "128Mi", "--node-label",
                "nubis.io/pool=a100", "--no-code", "--", "python", "-c", "import time; time.sleep(600)")
    until(lambda: cluster.json("job", "get", "hog")["status"] == "running", "the sleeper runs")
    job = cluster.json("job", "submit", "--name", "later", "--workers", "3", "--spread", "--cpu", "1.5",
                       "--memory", "128Mi", "--no-code", "--output", "json", "--", "python", "-c", "pass")
    waiting = until(lambda: " CPU" in ((j := cluster.json("job", "get", "later"))["reason"] or "") and j,
                    "the reason it waits (what it needs, what is free)")
    assert waiting["status"] == "queued", waiting
    for name in ("later", "hog"):
        cluster.cli("job", "cancel", name)
        until(lambda n=name: cluster.json("job", "get", n)["status"] == "cancelled", f"{name} cancelled")
    assert nubis_ray_objects(job["id"]) == []


FAILING_RANK = "import os, sys; sys.exit(1 if os.environ['RANK'] == '1' else 0)"


def test_a_rank_exiting_1_stops_the_gang_and_it_is_retried(cluster: Cluster) -> None:
    job = cluster.json("job", "submit", "--name", "flaky", "--workers", "2", "--cpu", "0.25", "--memory",
                       "128Mi", "--max-retries", "1", "--no-code", "--output", "json", "--",
                       "python", "-c", FAILING_RANK)
    done = job_end(cluster, "flaky")
    assert (done["status"], done["attempt"]) == ("failed", 2), done
    assert "worker 1 exited with code 1" in done["reason"], done["reason"]
    messages = " ".join(e["message"] for e in cluster.json("job", "events", "flaky"))
    assert "retry" in messages, messages
    until(lambda: nubis_ray_objects(job["id"]) == [], "the gang's actors and group removed")


def trainer_pids(job_id: str, attempt: int) -> list[int]:
    """The trainer processes of one attempt of a job, on every simulated node (they share this host)."""
    marker = f"NUBIS_REPLICA_ID={job_id}-{attempt}-".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
            environ = (entry / "environ").read_bytes() if b"nubis.train.tasks" in cmdline else b""
        except OSError:
            continue
        if any(v.startswith(marker) for v in environ.split(b"\0")):
            found.append(int(entry.name))
    return found


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # its node is gone, and it with it
            os.kill(pid, sig)


def test_a_lost_node_s_replica_moves_and_its_gang_resumes_from_the_checkpoint(cluster: Cluster) -> None:
    replicas = cluster.json("deployment", "get", "echo")["replicas"]
    lost = cluster.ray.node_id("gpu-b")
    assert lost in {r["node"] for r in replicas}
    name = cluster.json("train", "--model", "mlp", "--data", "builtin:digits", "--workers", "3", "--spread",
                        "--epochs", "15", "--batch-size", "16", "--cpu", "1", "--memory", "768Mi",
                        "--name", "moved", "--no-wait")["name"]
    job = until(lambda: (j := cluster.json("job", "get", name))["metrics"].get("epoch", 0) >= 4 and j,
                "the trainer passes epoch 4", timeout=300)
    assert lost in {w["node"] for w in job["worker_status"]}  # one worker per node: one on gpu-b
    # The gang is held still until its node is gone: on a quiet machine the last epochs ran out before
    # the new node had started, and the job ended on attempt 1 with nothing to resume.
    frozen = trainer_pids(job["id"], attempt=1)
    assert len(frozen) == 3, frozen
    signal_all(frozen, signal.SIGSTOP)
    try:
        cluster.ray.add("gpu-c", num_cpus=2, num_gpus=2)  # where the replica and the worker can go
        load = Load(f"{cluster.platform.gateway_url}/default/echo/echo",
                    {"authorization": f"Bearer {cluster.platform.admin_token}"})
        with load.running(threads=2):
            cluster.ray.remove("gpu-b", graceful=False)
            signal_all(frozen, signal.SIGCONT)

            def replaced() -> bool:
                now = cluster.json("deployment", "get", "echo")["replicas"]
                ready = [r for r in now if r["status"] == "ready"]
                return len(ready) == 2 and lost not in {r["node"] for r in ready}

            until(replaced, "two ready replicas, none on the lost node")
            assert load.served_during(1) > 0
    finally:
        signal_all(frozen, signal.SIGCONT)
    node = cluster.json("node", "get", lost[:12])
    assert node["alive"] is False
    assert [e["kind"] for e in node["events"]][-1] == "lost"
    events = cluster.json("deployment", "events", "echo")
    assert any("its node was lost" in e["message"] for e in events), events
    fired = until(lambda: [a for a in cluster.json("alert", "list") if a["rule"] == "node_lost"],
                  "the node_lost alert (evaluated every 15 s)", timeout=60)
    assert [(a["object"], a["state"]) for a in fired] == [(lost, "firing")], fired

    done = job_end(cluster, job["name"])
    assert done["status"] == "succeeded", done["reason"]
    assert done["attempt"] == 2 and lost not in {w["node"] for w in done["worker_status"]}
    assert done["metrics"]["accuracy"] >= 0.9
    job_events = " ".join(e["message"] for e in cluster.json("job", "events", job["name"]))
    assert "node_lost" in job_events or "node was lost" in job_events, job_events
    resumed = cluster.cli("job", "logs", job["name"], "--worker", "0", "--tail", "500")
    assert "resuming from epoch" in resumed, resumed[-2000:]


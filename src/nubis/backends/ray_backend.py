"""The Ray backend (``nubis[ray]``, Ray 2.60): replicas as detached named actors on a Ray cluster.

Each replica is a ``ReplicaActor`` (``ray_actors.py``) named ``nubis:replica:<id>`` in the ``nubis``
namespace, holding the replica's CPU, memory and GPUs, placed on the node placement chose
(``ReplicaSpec.node``, a hard node affinity) and running the photon server as its child there. The
actor outlives the control plane (``lifetime="detached"``) and is never restarted by Ray
(``max_restarts=0``: nubis owns restarts); a new control plane finds it again by name (``adopt``) and
removes the ``nubis`` actors it does not know (``collect_orphans``).

``start_replica`` returns at once with no endpoint: the actor fetches the bundle and starts the
server on its node, and ``probe`` learns the endpoint (``ReplicaProbe.endpoint``, ``endpoint_of``).
The replica key is made here and kept in the handle's ``ref``, as on the local backend. Storage is
reached from every node with the URL and the options given here (S3 endpoint and credentials travel
as the actor's arguments, never in the workload's env). Logs are pulled from the node into
``state_dir/logs/<id>.log`` on every probe, on stop and while followed, so they outlive the node.

Every Ray call of the async methods runs off the event loop (awaited object refs, or
``asyncio.to_thread``); the sync ones (``nodes``, ``capacity``, ``free``) ask Ray's GCS directly and
belong in a thread when called from async code. Imported only when the Ray backend is chosen, so
``ray`` is imported here at module top.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import threading
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray._private.state  # per-node free resources: Ray 2.60 has no public API for it without the dashboard
from ray.actor import ActorHandle
from ray.exceptions import RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from nubis.backends.base import (
    Backend,
    Capacity,
    GpuCapability,
    LogsCapability,
    NodeFetchCapability,
    OrphansCapability,
    ReplicaHandle,
    ReplicaProbe,
    ReplicaSpec,
)
from nubis.backends.local import readyz
from nubis.backends.local_processes import REPLICA_ID, tail_lines
from nubis.backends.nodes import Amounts, NodeInfo
from nubis.backends.ray_actors import NAMESPACE, REPLICA_PREFIX, ReplicaActor, actor_name, spec_payload
from nubis.backends.ray_jobs import RayJobs, is_worker
from nubis.errors import BundleError, NoCapacityError
from nubis.models.resources import format_size

log = logging.getLogger("nubis.backends.ray")

CALL_TIMEOUT_S = 2.0
"""How long a call to an actor may take; a pending actor (not placed yet) does not answer."""
LOG_CHUNK = 1 << 20
ERROR_LINES = 20
FOLLOW_POLL_S = 0.5
NAME_FREED_S = 10.0
LIVE = ("pending", "starting", "running")


def storage_options_from_env(url: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """What a node needs to open ``url`` as the control plane does: for S3, the endpoint and the
    credentials of the control plane's env (``NUBIS_S3_ENDPOINT_URL``/``AWS_*``)."""
    if not url.startswith("s3://"):
        return {}
    options: dict[str, Any] = {}
    client: dict[str, str] = {}
    endpoint = environ.get("NUBIS_S3_ENDPOINT_URL") or environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        client["endpoint_url"] = endpoint
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        client["region_name"] = region
    if client:
        options["client_kwargs"] = client
    for option, name in (("key", "AWS_ACCESS_KEY_ID"), ("secret", "AWS_SECRET_ACCESS_KEY"),
                         ("token", "AWS_SESSION_TOKEN")):
        if environ.get(name):
            options[option] = environ[name]
    return options


def _amounts(resources: Mapping[str, float]) -> Amounts:
    return Amounts(cpu=float(resources.get("CPU", 0.0)), memory=int(resources.get("memory", 0)),
                   gpu=int(resources.get("GPU", 0)))


def node_info(raw: Mapping[str, Any], free: Mapping[str, float]) -> NodeInfo:
    """One entry of ``ray.nodes()`` with the node's free resources; Ray's own labels left out."""
    alive = bool(raw.get("Alive"))
    return NodeInfo(
        id=str(raw["NodeID"]), address=str(raw.get("NodeManagerAddress", "")), alive=alive,
        total=_amounts(raw.get("Resources") or {}), free=_amounts(free) if alive else Amounts(),
        labels={k: str(v) for k, v in (raw.get("Labels") or {}).items() if not k.startswith("ray.io/")},
        death_reason=None if alive else (raw.get("DeathReasonMessage") or "the node died"),
    )


def _fits(node: NodeInfo, spec: ReplicaSpec) -> bool:
    need = spec.resources
    return (node.alive and node.free.cpu >= need.cpu and node.free.memory >= need.memory
            and node.free.gpu >= need.gpu)


async def _result(ref: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
    async def wait() -> Any:
        return await ref

    return await asyncio.wait_for(wait(), timeout)


def _pulled(mark: Path, run: str) -> int:
    """How much of ``run``'s node log was pulled (0 for a new run: its log starts anew)."""
    try:
        mark_run, offset = mark.read_text().split()
        return int(offset) if mark_run == run else 0
    except (OSError, ValueError):
        return 0


@dataclass
class Seen:
    """What the last answer of a replica's actor said (the endpoint, node and GPUs it learnt)."""

    run: str
    endpoint: str | None
    node: str | None
    gpus: tuple[int, ...]


class RayBackend(Backend, RayJobs, NodeFetchCapability, OrphansCapability, LogsCapability, GpuCapability):
    name = "ray"

    def __init__(self, state_dir: Path, *, address: str, storage: str,
                 storage_options: dict[str, Any] | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.address = address
        self.storage = storage
        self.storage_options = (storage_options if storage_options is not None
                                else storage_options_from_env(storage, os.environ))
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").chmod(0o700)
        self._seen: dict[str, Seen] = {}
        self._log_locks: dict[str, asyncio.Lock] = {}
        self._actor_class: Any = None
        self._connecting = threading.Lock()

    def _connect(self) -> None:
        with self._connecting:  # from several threads at once: one ray.init
            if not ray.is_initialized():
                ray.init(address=self.address, namespace=NAMESPACE, log_to_driver=False,
                         logging_level=logging.WARNING)
            if self._actor_class is None:
                self._actor_class = ray.remote(ReplicaActor)

    def log_path(self, replica_id: str) -> Path:
        return self.state_dir / "logs" / f"{replica_id}.log"

    # nodes and capacity

    def nodes(self) -> list[NodeInfo]:
        self._connect()
        free = ray._private.state.available_resources_per_node()
        return [node_info(raw, free.get(raw["NodeID"], {})) for raw in ray.nodes()]

    def _sum(self, free: bool) -> Capacity:
        """Over the alive nodes that can run a workload (a head started with no CPU cannot)."""
        alive = [n.free if free else n.total for n in self.nodes() if n.alive and n.total.cpu > 0]
        return Capacity(cpu=sum(a.cpu for a in alive), memory=sum(a.memory for a in alive),
                        gpus=tuple(range(sum(a.gpu for a in alive))))

    def capacity(self) -> Capacity:
        return self._sum(free=False)

    def free(self) -> Capacity:
        return self._sum(free=True)

    # replicas

    async def start_replica(self, spec: ReplicaSpec) -> ReplicaHandle:
        if not REPLICA_ID.match(spec.replica_id):
            raise ValueError(f"replica id {spec.replica_id!r} must match {REPLICA_ID.pattern}")
        if spec.artifact is None:
            raise BundleError(f"replica {spec.replica_id}: the Ray backend starts a replica from its bundle "
                              "in storage, and the spec names none")
        await asyncio.to_thread(self._check_fits, spec)
        await self._free_name(spec.replica_id)
        run, key = secrets.token_hex(8), secrets.token_urlsafe(32)
        await asyncio.to_thread(self._create, spec, run, key)
        log_path = self.log_path(spec.replica_id)
        handle = ReplicaHandle(
            replica_id=spec.replica_id, backend=self.name, endpoint=None, node=spec.node,
            ref={"actor": actor_name(spec.replica_id), "run": run, "replica_key": key,
                 "log_offset": str(log_path.stat().st_size if log_path.exists() else 0)},
        )
        self._seen[spec.replica_id] = Seen(run, None, spec.node, ())
        log.info("started replica %s of %s/%s as a Ray actor (node %s)", spec.replica_id, spec.workspace,
                 spec.deployment, spec.node or "Ray's choice")
        return handle

    def _check_fits(self, spec: ReplicaSpec) -> None:
        nodes = self.nodes()
        if spec.node is not None:
            nodes = [n for n in nodes if n.id == spec.node]
            if not nodes or not nodes[0].alive:
                raise NoCapacityError(f"node {spec.node} is not alive", details={"node": spec.node})
        if not any(_fits(n, spec) for n in nodes):
            need = spec.resources
            where = f"node {spec.node} does not have" if spec.node else "no alive node has"
            raise NoCapacityError(
                f"{where} {need.cpu:g} CPU, {format_size(need.memory)} memory and {need.gpu} GPU free",
                details={"needs": {"cpu": need.cpu, "memory": need.memory, "gpu": need.gpu},
                         "node": spec.node})

    def _create(self, spec: ReplicaSpec, run: str, key: str) -> ActorHandle:
        self._connect()
        options: dict[str, Any] = {
            "name": actor_name(spec.replica_id), "namespace": NAMESPACE, "lifetime": "detached",
            "max_restarts": 0, "num_cpus": spec.resources.cpu, "num_gpus": spec.resources.gpu,
        }
        if spec.resources.memory:
            options["memory"] = spec.resources.memory
        if spec.node is not None:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(spec.node, soft=False)
        payload = spec_payload(spec, run=run, key=key)
        actor = self._actor_class.options(**options).remote(payload, self.storage, self.storage_options)
        actor.poll.remote()  # starts it as soon as Ray has placed it; any later call would too
        return actor

    async def _free_name(self, replica_id: str) -> None:
        """An earlier run of this id that has ended still holds the actor's name: kill it."""
        actor = await asyncio.to_thread(self._actor, replica_id)
        if actor is None:
            return
        status = await self._ask(actor)
        if status is not None and status["state"] in LIVE:
            raise ValueError(f"replica {replica_id} is already running here")
        await asyncio.to_thread(ray.kill, actor, no_restart=True)
        deadline = asyncio.get_running_loop().time() + NAME_FREED_S
        while await asyncio.to_thread(self._actor, replica_id) is not None:
            if asyncio.get_running_loop().time() > deadline:
                raise ValueError(f"replica {replica_id}'s previous actor still holds its name")
            await asyncio.sleep(0.1)

    def _actor(self, replica_id: str) -> ActorHandle | None:
        self._connect()
        try:
            return ray.get_actor(actor_name(replica_id), namespace=NAMESPACE)
        except ValueError:
            return None

    async def _ask(self, actor: ActorHandle, timeout: float = CALL_TIMEOUT_S) -> dict[str, Any] | None:
        """The actor's ``poll``; ``{"state": "pending"}`` when it does not answer in time (not placed
        yet); None when it is dead."""
        try:
            return await _result(actor.poll.remote(), timeout)
        except TimeoutError:
            return {"state": "pending"}
        except RayError:
            return None

    async def _status(self, handle: ReplicaHandle, timeout: float = CALL_TIMEOUT_S,
                      ) -> tuple[dict[str, Any] | None, ActorHandle | None]:
        """This run's actor and what it says; (None, None) when it is gone (or replaced by a later run)."""
        actor = await asyncio.to_thread(self._actor, handle.replica_id)
        status = None if actor is None else await self._ask(actor, timeout)
        if status is None or status.get("run", handle.ref.get("run")) != handle.ref.get("run"):
            return None, None
        if status["state"] != "pending":
            self._seen[handle.replica_id] = Seen(
                status["run"], status["endpoint"], status["node"], tuple(int(g) for g in status["gpus"]))
        return status, actor

    async def probe(self, handle: ReplicaHandle) -> ReplicaProbe:
        if is_worker(handle):
            return await self.probe_worker(handle)
        status, actor = await self._status(handle)
        if status is None:
            return await self._gone(handle)
        if status["state"] in ("pending", "starting"):
            return ReplicaProbe(alive=True, ready=False)
        await self._pull_quietly(handle, actor)
        endpoint = status["endpoint"]
        if status["state"] == "running":
            return ReplicaProbe(alive=True, ready=await readyz(endpoint), endpoint=endpoint)
        lines = self.read_logs(handle, tail=ERROR_LINES)
        if status["detail"]:
            lines.append(status["detail"])
        return ReplicaProbe(alive=False, ready=False, exit_code=status["exit_code"], last_error_lines=lines,
                            endpoint=endpoint)

    async def _gone(self, handle: ReplicaHandle) -> ReplicaProbe:
        """Its actor is dead: ``node_lost`` when the node it was on has died."""
        seen = self._seen.get(handle.replica_id)
        node = (seen.node if seen is not None and seen.run == handle.ref.get("run") else None) or handle.node
        lost = None
        if node is not None:
            info = next((n for n in await asyncio.to_thread(self.nodes) if n.id == node), None)
            if info is not None and not info.alive:
                lost = info.death_reason
        lines = self.read_logs(handle, tail=ERROR_LINES)
        return ReplicaProbe(alive=False, ready=False, last_error_lines=lines, node_lost=lost)

    async def stop_replica(self, handle: ReplicaHandle, *, grace_s: float = 30.0) -> None:
        if is_worker(handle):
            await self.stop_worker(handle, grace_s=grace_s)
            return
        status, actor = await self._status(handle)
        if actor is None:
            return
        if status is not None and status["state"] != "pending":
            with contextlib.suppress(RayError, TimeoutError):
                await _result(actor.stop.remote(grace_s), grace_s + 2 * CALL_TIMEOUT_S + 10)
            await self._pull_quietly(handle, actor)
            with contextlib.suppress(RayError, TimeoutError):
                await _result(actor.forget.remote())
        await asyncio.to_thread(ray.kill, actor, no_restart=True)
        self._seen.pop(handle.replica_id, None)
        log.info("stopped replica %s", handle.replica_id)

    async def adopt(self, handle: ReplicaHandle) -> bool:
        if handle.backend != self.name:
            return False
        if is_worker(handle):
            return await self.adopt_worker(handle)
        status, _ = await self._status(handle, timeout=5 * CALL_TIMEOUT_S)
        return status is not None and status["state"] in LIVE

    async def collect_orphans(self, known_ids: Collection[str]) -> int:
        """Kill the ``nubis`` replica actors whose replica is not in ``known_ids``; how many."""
        self._connect()
        named = await asyncio.to_thread(ray.util.list_named_actors, all_namespaces=True)
        orphans = [entry["name"].removeprefix(REPLICA_PREFIX) for entry in named
                   if entry["namespace"] == NAMESPACE and entry["name"].startswith(REPLICA_PREFIX)
                   and entry["name"].removeprefix(REPLICA_PREFIX) not in known_ids]
        for replica_id in orphans:
            actor = await asyncio.to_thread(self._actor, replica_id)
            if actor is not None:
                await asyncio.to_thread(ray.kill, actor, no_restart=True)
                log.warning("removed orphaned replica actor %s", actor_name(replica_id))
        return len(orphans) + await self.collect_gang_orphans(known_ids)

    def endpoint_of(self, handle: ReplicaHandle) -> str | None:
        """The endpoint the last ``probe`` or ``adopt`` learnt (``handle.endpoint`` stays None)."""
        seen = self._seen.get(handle.replica_id)
        if seen is not None and seen.run == handle.ref.get("run") and seen.endpoint:
            return seen.endpoint
        return handle.endpoint

    def node_of(self, handle: ReplicaHandle) -> str | None:
        """The node the replica runs on: the one placement chose, else the one a probe learnt."""
        seen = self._seen.get(handle.replica_id)
        if seen is not None and seen.run == handle.ref.get("run") and seen.node:
            return seen.node
        return handle.node

    # LogsCapability

    async def pull_logs(self, handle: ReplicaHandle, actor: ActorHandle | None = None) -> None:
        """Append what the node's log holds beyond what was pulled to ``log_path`` (the offset
        pulled so far, per run, is kept next to it so a new control plane resumes there)."""
        lock = self._log_locks.setdefault(handle.replica_id, asyncio.Lock())
        async with lock:
            actor = actor or await asyncio.to_thread(self._actor, handle.replica_id)
            if actor is None:
                return
            run = handle.ref.get("run", "")
            mark = self.log_path(handle.replica_id).with_suffix(".pulled")
            offset = _pulled(mark, run)
            while True:
                data, offset = await _result(actor.read_log.remote(offset, LOG_CHUNK))
                if not data:
                    return
                with self.log_path(handle.replica_id).open("ab") as out:
                    out.write(data)
                mark.write_text(f"{run} {offset}\n")
                if len(data) < LOG_CHUNK:
                    return

    async def _pull_quietly(self, handle: ReplicaHandle, actor: ActorHandle | None) -> None:
        try:
            await self.pull_logs(handle, actor)
        except (RayError, TimeoutError) as exc:
            log.info("could not pull the log of replica %s: %s", handle.replica_id, exc)

    def read_logs(self, handle: ReplicaHandle, *, tail: int = 100) -> list[str]:
        """What was pulled so far (each probe pulls): also once the node is gone."""
        return tail_lines(self.log_path(handle.replica_id), tail)

    async def follow_logs(self, handle: ReplicaHandle, *, tail: int = 0,
                          from_start: bool = False) -> AsyncIterator[str]:
        path = self.log_path(handle.replica_id)
        async with self._log_locks.setdefault(handle.replica_id, asyncio.Lock()):
            path.touch()
            first = [] if from_start else tail_lines(path, tail)
            fh = path.open("rb")
            fh.seek(int(handle.ref.get("log_offset") or 0) if from_start else path.stat().st_size)
        with fh:
            for line in first:
                yield line
            pending = b""
            while True:
                status, actor = await (self.worker_status(handle) if is_worker(handle)
                                       else self._status(handle))
                if actor is not None:
                    await self._pull_quietly(handle, actor)
                pending += fh.read()
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
                if status is None or status["state"] not in LIVE:
                    if pending:
                        yield pending.decode(errors="replace")
                    return
                if not lines:
                    await asyncio.sleep(FOLLOW_POLL_S)

    # GpuCapability

    def gpus_of(self, handle: ReplicaHandle) -> tuple[int, ...]:
        """The node-local GPU indices Ray gave the replica, once a probe or adopt learnt them."""
        seen = self._seen.get(handle.replica_id)
        return seen.gpus if seen is not None and seen.run == handle.ref.get("run") else ()

"""Jobs on the Ray backend: a gang is a detached placement group with one worker actor per rank.

``start_gang`` reserves one bundle per rank (``{CPU, memory, GPU}`` of the job's resources) in a
detached placement group ``nubis:gang:<job>-<attempt>`` (namespace ``nubis``): ``STRICT_SPREAD``
for a ``spread`` job, else ``PACK``, each bundle pinned to the node placement chose for its rank
(a ``ray.io/node-id`` label selector). A group Ray cannot place within ``PLACE_TIMEOUT_S`` is
removed and the gang refused with ``NoCapacityError`` (the job waits, saying why). Then one
detached ``WorkerActor`` (``ray_gang_actors.py``) per rank, ``nubis:worker:<worker id>``, in its
bundle, never restarted by Ray (``max_restarts=0``: nubis retries the whole gang). Rank 0's actor
reserves ``MASTER_PORT`` on its node; each rank gets torchrun's env from the nodes the group's
bundles landed on (``nodes.rank_envs``). A failure part-way removes whatever started.

Worker handles have ``ref["kind"] == "worker"`` (``is_worker``): ``RayBackend.probe``,
``stop_replica``, ``adopt`` and ``follow_logs`` hand them to ``probe_worker``, ``stop_worker``,
``adopt_worker`` and ``worker_status``, and ``collect_orphans`` adds ``collect_gang_orphans``; the
logs are pulled and read as a replica's (``pull_logs``, ``read_logs``: same actor methods).
Stopping the last worker of a gang removes its group; so does
``forget_job`` for every attempt of the job. The checkpoints stay in storage for
``CHECKPOINT_RETENTION_S`` after the job ended (``forget_job``), as on the local backend; then
``sweep_jobs`` deletes them.

Checkpoints live in the workspace's storage (``.jobs/<job>/checkpoints/``, pushed by the workers
every few seconds and at exit) and outputs are uploaded by the workers at exit, so neither is on
the control plane's machine: ``output_dir`` names a folder there that never exists, and the control
plane's own copy of it (``save_outputs``) changes nothing. Requirements are installed by each worker
on its node (a cached virtualenv per node), so ``prepare_environment`` answers ``ready`` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import shutil
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayError
from ray.util.placement_group import NODE_ID_LABEL_KEY, PlacementGroup
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from nubis.backends.base import Environment, GangSpec, JobsCapability, ReplicaHandle, ReplicaProbe
from nubis.backends.local_jobs import CHECKPOINT_RETENTION_S, ENDED
from nubis.backends.local_processes import REPLICA_ID
from nubis.backends.nodes import rank_envs
from nubis.backends.ray_actors import NAMESPACE
from nubis.backends.ray_gang_actors import WorkerActor, checkpoints_path
from nubis.errors import BundleError, NoCapacityError, NotFoundError, NubisError
from nubis.models.resources import format_size
from nubis.storage import ObjectStore

log = logging.getLogger("nubis.backends.ray")

WORKER_PREFIX = "nubis:worker:"
GANG_PREFIX = "nubis:gang:"
PLACE_TIMEOUT_S = 10.0
CREATE_TIMEOUT_S = 120.0
"""How long the workers' actors may take to come up once their group is placed."""
CALL_TIMEOUT_S = 2.0
NAME_FREED_S = 10.0
LIVE = ("pending", "starting", "running")
ERROR_LINES = 20
WORKSPACE_FILE = "workspace"


def worker_name(worker_id: str) -> str:
    return f"{WORKER_PREFIX}{worker_id}"


def group_name(job_id: str, attempt: int) -> str:
    return f"{GANG_PREFIX}{job_id}-{attempt}"


def is_worker(handle: ReplicaHandle) -> bool:
    return handle.ref.get("kind") == "worker"


@functools.cache
def _worker_class() -> Any:
    return ray.remote(WorkerActor)


def _bundle(spec: GangSpec) -> dict[str, float]:
    bundle = {"CPU": spec.resources.cpu}
    if spec.resources.memory:
        bundle["memory"] = float(spec.resources.memory)
    if spec.resources.gpu:
        bundle["GPU"] = float(spec.resources.gpu)
    return bundle


def _payload(spec: GangSpec, rank: int, run: str) -> dict[str, Any]:
    return {"replica_id": spec.worker_id(rank), "run": run, "job_id": spec.job_id,
            "workspace": spec.workspace, "rank": rank, "command": list(spec.command),
            "requirements": list(spec.requirements),
            "code": spec.code_artifact.to_dict() if spec.code_artifact is not None else None}


async def _result(ref: Any, timeout: float) -> Any:
    async def wait() -> Any:
        return await ref

    return await asyncio.wait_for(wait(), timeout)


class RayJobs(JobsCapability):
    """Mixed into ``RayBackend``: uses its connection, storage settings, log pulling and nodes."""

    name: str
    state_dir: Path
    storage: str
    storage_options: dict[str, Any]

    # the job's folders: in storage and on the nodes; here only which workspace a job is of

    def job_dir(self, job_id: str) -> Path:
        return self.state_dir / "jobs" / job_id

    def checkpoint_dir(self, job_id: str) -> str:
        """The workspace storage path the workers' ``NUBIS_CHECKPOINT_DIR`` is kept in."""
        return checkpoints_path(job_id)

    def output_dir(self, job_id: str) -> str:
        """A folder that never exists here: the workers upload their outputs themselves."""
        return str(self.job_dir(job_id) / "outputs-uploaded-by-the-workers")

    def forget_job(self, job_id: str) -> None:
        """Remove whatever of the job is still on the cluster (every attempt's group and workers)."""
        self._connect()  # type: ignore[attr-defined]
        for entry in ray.util.list_named_actors(all_namespaces=True):
            if entry["namespace"] == NAMESPACE and entry["name"].startswith(f"{WORKER_PREFIX}{job_id}-"):
                self._kill(entry["name"])
        for name in self._group_names():
            if name.startswith(f"{GANG_PREFIX}{job_id}-"):
                self._remove_group(name)
        if self.job_dir(job_id).is_dir():
            (self.job_dir(job_id) / ENDED).touch()

    def sweep_jobs(self, *, now: float, retention_s: float = CHECKPOINT_RETENTION_S) -> int:
        """Delete from storage the checkpoints of the jobs that ended over ``retention_s`` ago."""
        try:
            folders = list((self.state_dir / "jobs").iterdir())
        except FileNotFoundError:
            return 0
        removed = 0
        for folder in folders:
            try:
                ended = (folder / ENDED).stat().st_mtime
                workspace = (folder / WORKSPACE_FILE).read_text().strip()
            except (FileNotFoundError, NotADirectoryError):
                continue
            if now - ended <= retention_s:
                continue
            try:
                self._store.files(workspace).delete(checkpoints_path(folder.name), recursive=True)
            except NotFoundError:
                pass
            except (NubisError, OSError) as exc:  # storage unreachable now: the next sweep tries again
                log.warning("checkpoints of job %s not deleted: %s", folder.name, exc)
                continue
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
        return removed

    def prepare_environment(self, workspace: str, requirements: Sequence[str]) -> Environment:
        """Ready: each worker installs the job's requirements on its node (a virtualenv cached per
        node and requirement set) before it runs the command."""
        return Environment("ready")

    # starting a gang

    async def start_gang(self, spec: GangSpec) -> list[ReplicaHandle]:
        for rank in range(spec.workers):
            if not REPLICA_ID.match(spec.worker_id(rank)):
                raise ValueError(f"worker id {spec.worker_id(rank)!r} must match {REPLICA_ID.pattern}")
        if spec.code is not None and spec.code_artifact is None:
            raise BundleError(f"job {spec.job_id}: Ray's nodes fetch a job's code from storage, and the spec "
                              "names none")
        await self._free_worker_names(spec)
        await asyncio.to_thread(self._record_job, spec)
        saved = asyncio.ensure_future(asyncio.to_thread(self._has_checkpoints, spec))  # never raises
        group = await asyncio.to_thread(self._place, spec)
        run = secrets.token_hex(8)
        actors: list[ActorHandle] = []
        try:
            nodes, addresses = await asyncio.to_thread(self._placed_nodes, group)
            actors = await asyncio.to_thread(self._create_workers, spec, group, run)
            first = await _result(actors[0].prepare.remote(), CREATE_TIMEOUT_S)
            envs = rank_envs(nodes, addresses, master_port=first["port"], user_env=spec.env)
            restore = await saved  # listed while the group was placed and the actors came up
            starts = [a.start.remote({**spec.env, **env}, restore)
                      for a, env in zip(actors, envs, strict=True)]
            await _result(asyncio.gather(*starts), CREATE_TIMEOUT_S)
        except BaseException:
            await asyncio.to_thread(self._undo, spec, actors)
            raise
        log.info("started job %s attempt %d: %d worker(s) on %s", spec.job_id, spec.attempt, spec.workers,
                 ", ".join(nodes))
        return [self._worker_handle(spec, rank, run, node) for rank, node in enumerate(nodes)]

    @functools.cached_property
    def _store(self) -> ObjectStore:
        return ObjectStore.from_url(self.storage, **self.storage_options)

    def _has_checkpoints(self, spec: GangSpec) -> bool:
        """Whether the job has checkpoints in storage for its workers to restore, asked once here
        rather than by every worker (one that finds none never opens storage: no S3 client to
        load in its fresh process); True when storage cannot say, so the workers look themselves."""
        try:
            return bool(self._store.files(spec.workspace).list(checkpoints_path(spec.job_id) + "/"))
        except Exception as exc:  # never a reason not to start: the workers look themselves
            log.info("job %s: checkpoints not listed (%s); its workers look themselves", spec.job_id, exc)
            return True

    def _record_job(self, spec: GangSpec) -> None:
        """Which workspace's storage holds the job's checkpoints (``sweep_jobs`` deletes them)."""
        folder = self.job_dir(spec.job_id)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        (folder / WORKSPACE_FILE).write_text(spec.workspace)
        (folder / ENDED).unlink(missing_ok=True)

    def _worker_handle(self, spec: GangSpec, rank: int, run: str, node: str) -> ReplicaHandle:
        worker_id = spec.worker_id(rank)
        log_path: Path = self.log_path(worker_id)  # type: ignore[attr-defined]
        return ReplicaHandle(
            replica_id=worker_id, backend=self.name, endpoint=None, node=node,
            ref={"kind": "worker", "actor": worker_name(worker_id),
                 "group": group_name(spec.job_id, spec.attempt), "run": run,
                 "log_offset": str(log_path.stat().st_size if log_path.exists() else 0)})

    def _place(self, spec: GangSpec) -> PlacementGroup:
        """The gang's group, placed; ``NoCapacityError`` (and no group) when Ray cannot place it."""
        self._connect()  # type: ignore[attr-defined]
        name = group_name(spec.job_id, spec.attempt)
        self._remove_group(name)  # left by a start that was cut short
        known = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        pinned = [{NODE_ID_LABEL_KEY: node} if node in known else {} for node in spec.nodes]
        strategy = "STRICT_SPREAD" if spec.spread else "PACK"
        group = ray.util.placement_group([_bundle(spec)] * spec.workers, strategy=strategy, name=name,
                                         lifetime="detached",
                                         bundle_label_selector=pinned if any(pinned) else None)
        if group.wait(timeout_seconds=PLACE_TIMEOUT_S):
            return group
        ray.util.remove_placement_group(group)
        need = spec.resources
        how = "each on a different node" if spec.spread else "packed"
        raise NoCapacityError(
            f"the cluster cannot place {spec.workers} worker(s) of {need.cpu:g} CPU, "
            f"{format_size(need.memory)} memory and {need.gpu} GPU {how} on the nodes chosen "
            f"within {PLACE_TIMEOUT_S:g} s",
            details={"workers": spec.workers, "strategy": strategy, "nodes": list(spec.nodes),
                     "needs": {"cpu": need.cpu, "memory": need.memory, "gpu": need.gpu}})

    def _placed_nodes(self, group: PlacementGroup) -> tuple[list[str], dict[str, str]]:
        """The node of each bundle (rank) and every node's address."""
        table = ray.util.placement_group_table(group)
        by_bundle = table["bundles_to_node_id"]
        nodes = [str(by_bundle[index]) for index in sorted(by_bundle)]
        addresses = {str(n["NodeID"]): str(n["NodeManagerAddress"]) for n in ray.nodes()}
        return nodes, addresses

    def _create_workers(self, spec: GangSpec, group: PlacementGroup, run: str) -> list[ActorHandle]:
        options: dict[str, Any] = {"namespace": NAMESPACE, "lifetime": "detached", "max_restarts": 0,
                                   "num_cpus": spec.resources.cpu, "num_gpus": spec.resources.gpu}
        if spec.resources.memory:
            options["memory"] = spec.resources.memory
        actors = []
        for rank in range(spec.workers):
            strategy = PlacementGroupSchedulingStrategy(placement_group=group,
                                                        placement_group_bundle_index=rank)
            actors.append(_worker_class().options(
                name=worker_name(spec.worker_id(rank)), scheduling_strategy=strategy, **options,
            ).remote(_payload(spec, rank, run), self.storage, self.storage_options))
        return actors

    def _undo(self, spec: GangSpec, actors: list[ActorHandle]) -> None:
        for actor in actors:
            with contextlib.suppress(RayError, ValueError):
                ray.kill(actor, no_restart=True)
        self._remove_group(group_name(spec.job_id, spec.attempt))
        log.warning("job %s attempt %d: the gang did not start; its workers and group are removed",
                    spec.job_id, spec.attempt)

    async def _free_worker_names(self, spec: GangSpec) -> None:
        """Earlier workers of this attempt (a start cut short) that still hold their names: kill them."""
        names = {worker_name(spec.worker_id(rank)) for rank in range(spec.workers)}
        deadline = asyncio.get_running_loop().time() + NAME_FREED_S
        while held := names & set(await asyncio.to_thread(self._worker_names)):
            if asyncio.get_running_loop().time() > deadline:
                raise ValueError(f"job {spec.job_id}: earlier workers still hold {', '.join(sorted(held))}")
            for name in held:
                await asyncio.to_thread(self._kill, name)
            await asyncio.sleep(0.1)

    # Ray's names

    def _worker_names(self) -> list[str]:
        self._connect()  # type: ignore[attr-defined]
        return [e["name"] for e in ray.util.list_named_actors(all_namespaces=True)
                if e["namespace"] == NAMESPACE and e["name"].startswith(WORKER_PREFIX)]

    def _group_names(self) -> list[str]:
        """The ``nubis`` groups not removed yet."""
        self._connect()  # type: ignore[attr-defined]
        return [str(g["name"]) for g in ray.util.placement_group_table().values()
                if str(g.get("name", "")).startswith(GANG_PREFIX) and g.get("state") != "REMOVED"]

    def _kill(self, name: str) -> None:
        with contextlib.suppress(ValueError, RayError):
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)

    def _remove_group(self, name: str) -> None:
        with contextlib.suppress(ValueError, RayError):
            ray.util.remove_placement_group(ray.util.get_placement_group(name))

    def _worker_actor(self, handle: ReplicaHandle) -> ActorHandle | None:
        self._connect()  # type: ignore[attr-defined]
        try:
            return ray.get_actor(worker_name(handle.replica_id), namespace=NAMESPACE)
        except ValueError:
            return None

    # worker handles (RayBackend's probe, stop_replica, adopt and collect_orphans call these)

    async def worker_status(self, handle: ReplicaHandle, timeout: float = CALL_TIMEOUT_S,
                             ) -> tuple[dict[str, Any] | None, ActorHandle | None]:
        actor = await asyncio.to_thread(self._worker_actor, handle)
        status = None if actor is None else await self._ask(actor, timeout)  # type: ignore[attr-defined]
        if status is None or status.get("run", handle.ref.get("run")) != handle.ref.get("run"):
            return None, None
        return status, actor

    async def probe_worker(self, handle: ReplicaHandle) -> ReplicaProbe:
        """Alive while its command runs; its exit code once it ended; ``node_lost`` when its actor
        died with its node. Pulls its log to the control plane."""
        status, actor = await self.worker_status(handle)
        if status is None:
            return await self._gone(handle)  # type: ignore[attr-defined, no-any-return]
        if status["state"] in ("pending", "starting"):
            return ReplicaProbe(alive=True, ready=False)
        await self._pull_quietly(handle, actor)  # type: ignore[attr-defined]
        if status["state"] == "running":
            return ReplicaProbe(alive=True, ready=False)
        lines: list[str] = self.read_logs(handle, tail=ERROR_LINES)  # type: ignore[attr-defined]
        if status["detail"]:
            lines.append(status["detail"])
        return ReplicaProbe(alive=False, ready=False, exit_code=status["exit_code"], last_error_lines=lines)

    async def stop_worker(self, handle: ReplicaHandle, *, grace_s: float = 30.0) -> None:
        """Stop its command (SIGTERM, SIGKILL after ``grace_s``; its checkpoints and outputs saved),
        kill its actor; the last worker of a gang removes the group."""
        status, actor = await self.worker_status(handle)
        if actor is not None:
            if status is not None and status["state"] != "pending":
                with contextlib.suppress(RayError, TimeoutError):
                    await _result(actor.stop.remote(grace_s), grace_s + 2 * CALL_TIMEOUT_S + 130)
                await self._pull_quietly(handle, actor)  # type: ignore[attr-defined]
                with contextlib.suppress(RayError, TimeoutError):
                    await _result(actor.forget.remote(), CALL_TIMEOUT_S)
            await asyncio.to_thread(ray.kill, actor, no_restart=True)
            name = worker_name(handle.replica_id)
            deadline = asyncio.get_running_loop().time() + NAME_FREED_S
            while name in await asyncio.to_thread(self._worker_names):
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.1)
        group = handle.ref.get("group", "")
        siblings = WORKER_PREFIX + group.removeprefix(GANG_PREFIX) + "-"
        if group and not any(n.startswith(siblings) for n in await asyncio.to_thread(self._worker_names)):
            await asyncio.to_thread(self._remove_group, group)
        log.info("stopped worker %s", handle.replica_id)

    async def adopt_worker(self, handle: ReplicaHandle) -> bool:
        status, _ = await self.worker_status(handle, timeout=5 * CALL_TIMEOUT_S)
        return status is not None and status["state"] in LIVE

    async def collect_gang_orphans(self, known_ids: Collection[str]) -> int:
        """Kill the worker actors no row knows and remove the groups none of whose workers it knows."""
        orphans = [n for n in await asyncio.to_thread(self._worker_names)
                   if n.removeprefix(WORKER_PREFIX) not in known_ids]
        for name in orphans:
            await asyncio.to_thread(self._kill, name)
            log.warning("removed orphaned worker actor %s", name)
        groups = [g for g in await asyncio.to_thread(self._group_names)
                  if not any(k.startswith(g.removeprefix(GANG_PREFIX) + "-") for k in known_ids)]
        for name in groups:
            await asyncio.to_thread(self._remove_group, name)
            log.warning("removed orphaned placement group %s", name)
        return len(orphans) + len(groups)

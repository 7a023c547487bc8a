"""What every backend does (``Backend``) and what some can do (capability mixins).

A backend runs replicas (``python -m nubis.photon.serve BUNDLE``) somewhere and tells the
reconciler how they are. It knows nothing about the database: the reconciler stores each
``ReplicaHandle`` (its ``ref`` is JSON) and hands it back, also after a control-plane restart,
when ``adopt`` decides whether the replica is still there.

Backends register by subclassing (a class with a ``name``); optional features are small ABCs
mixed in and checked with ``isinstance(backend, LogsCapability)``, never with ``hasattr``.
Only the local backend (``local*.py``) may know about PIDs and local paths; everything else
treats ``ref`` as opaque.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from nubis.backends.artifacts import Artifact
from nubis.backends.nodes import LOCAL_NODE, Amounts, NodeInfo
from nubis.models.resources import Resources


@dataclass(frozen=True)
class ReplicaSpec:
    """One replica to start: a bundle already fetched from storage, env, resources."""

    replica_id: str
    deployment: str
    workspace: str
    bundle: Path | None
    """A local copy of the bundle (backends without ``NodeFetchCapability``), else None."""
    content_hash: str
    env: dict[str, str] = field(default_factory=dict, repr=False)
    """Already includes decrypted secrets: never log the values (hence ``repr=False``)."""
    resources: Resources = field(default_factory=Resources)
    artifact: Artifact | None = None
    """Where the bundle lies in storage, for backends whose nodes fetch it themselves."""
    node: str | None = None
    """The node placement chose (``NodeInfo.id``); None: the backend's only node."""


@dataclass(frozen=True)
class WorkerSpec:
    """One worker of a job attempt: a command, its env (with the rendezvous and secrets), resources.

    ``code`` is a local zip of the working directory, already fetched from storage, unpacked as the
    worker's cwd (shared by the workers of one job); None runs in an empty folder of the job.
    ``requirements``: pip requirements its ``python`` must see (``JobsCapability.prepare_environment``).
    """

    worker_id: str
    job_id: str
    workspace: str
    rank: int
    command: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict, repr=False)
    resources: Resources = field(default_factory=Resources)
    code: Path | None = None
    requirements: tuple[str, ...] = ()


@dataclass(frozen=True)
class GangSpec:
    """Every worker of one job attempt, started as one call (``JobsCapability.start_gang``).

    ``nodes`` is the node of each rank, as placement chose; the backend adds each rank's torchrun
    env from it (``nodes.rank_envs``: ranks, ``MASTER_ADDR``/``MASTER_PORT``, ``NUBIS_NODE_IPS``).
    ``code`` is a local copy of ``code_artifact`` for backends without ``NodeFetchCapability``.
    """

    job_id: str
    attempt: int
    workspace: str
    command: tuple[str, ...]
    nodes: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict, repr=False)
    resources: Resources = field(default_factory=Resources)
    code: Path | None = None
    code_artifact: Artifact | None = None
    requirements: tuple[str, ...] = ()
    spread: bool = False

    @property
    def workers(self) -> int:
        return len(self.nodes)

    def worker_id(self, rank: int) -> str:
        return f"{self.job_id}-{self.attempt}-{rank}"


@dataclass(frozen=True)
class Environment:
    """Where a workload's requirements stand on a backend.

    ``missing``: what the platform's environment lacks (what gets installed). ``detail``: when
    ``ready``, what the build installed and how long it took (empty when nothing was missing or the
    build is older than this process); when ``building``, what and for how long so far; when
    ``failed``, pip's last lines.
    """

    state: Literal["ready", "building", "failed"]
    missing: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True)
class ReplicaHandle:
    """How to find a replica again. ``ref`` is backend-private, JSON-serialisable, stored in the DB."""

    replica_id: str
    backend: str
    endpoint: str | None
    """Base URL of the replica's photon server (``http://host:port``), None while unknown."""
    ref: dict[str, str] = field(default_factory=dict)
    node: str | None = None
    """The node it runs on (``NodeInfo.id``), when the backend has several."""

    def to_dict(self) -> dict[str, Any]:
        return {"replica_id": self.replica_id, "backend": self.backend,
                "endpoint": self.endpoint, "ref": dict(self.ref), "node": self.node}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReplicaHandle:
        return cls(
            replica_id=str(data["replica_id"]),
            backend=str(data["backend"]),
            endpoint=data.get("endpoint"),
            ref={str(k): str(v) for k, v in (data.get("ref") or {}).items()},
            node=data.get("node"),
        )


@dataclass(frozen=True)
class ReplicaProbe:
    """One look at a replica: alive (process exists), ready (``/readyz`` answered 200)."""

    alive: bool
    ready: bool
    exit_code: int | None = None
    """Set when the backend saw the exit (negative: killed by that signal); None if unknown."""
    last_error_lines: list[str] = field(default_factory=list)
    """The end of the replica's output once it has exited (why it died)."""
    node_lost: str | None = None
    """Set when it is gone because its node died: the engine's reason."""
    endpoint: str | None = None
    """Its endpoint, when the backend learnt it after the start (``ReplicaHandle.endpoint`` None)."""


@dataclass(frozen=True)
class Capacity:
    """CPU cores, memory bytes and GPU indices: the total of a backend, or what is free."""

    cpu: float
    memory: int
    gpus: tuple[int, ...] = ()


_BACKENDS: dict[str, type[Backend]] = {}


class Backend(ABC):
    """Runs replicas. Methods never wait for a replica to be ready; the reconciler probes."""

    name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            _BACKENDS[cls.name] = cls

    @abstractmethod
    async def start_replica(self, spec: ReplicaSpec) -> ReplicaHandle:
        """Launch and return at once. Raises ``NoCapacityError`` (retry later) when it does not
        fit now, and another ``NubisError`` when it can never start as given."""

    @abstractmethod
    async def probe(self, handle: ReplicaHandle) -> ReplicaProbe:
        """Alive, ready (``GET {endpoint}/readyz`` is 200 within a short timeout), exit code."""

    @abstractmethod
    async def stop_replica(self, handle: ReplicaHandle, *, grace_s: float = 30.0) -> None:
        """Ask it to drain and stop, wait ``grace_s``, then kill; release its resources.
        Stopping a replica that is already gone is not an error."""

    @abstractmethod
    async def adopt(self, handle: ReplicaHandle) -> bool:
        """After a control-plane restart: is this replica still ours and alive? If so, account
        its resources again and manage it from now on; False means it is gone."""

    @abstractmethod
    def capacity(self) -> Capacity:
        """Everything this backend can place."""

    @abstractmethod
    def free(self) -> Capacity:
        """What is not allocated to replicas now."""

    def nodes(self) -> list[NodeInfo]:
        """Every node, alive or dead: by default one node, this machine (``capacity``/``free``)."""
        total, free = self.capacity(), self.free()
        return [NodeInfo(id=LOCAL_NODE, address="127.0.0.1", alive=True,
                         total=Amounts(total.cpu, total.memory, len(total.gpus)),
                         free=Amounts(free.cpu, free.memory, len(free.gpus)))]


class NodeFetchCapability(ABC):  # noqa: B024 (a marker: no method of its own)
    """The backend's nodes fetch what they run themselves (``ReplicaSpec.artifact``, hash-checked);
    without it the control plane fetches the bundle and passes a local ``ReplicaSpec.bundle``."""


class OrphansCapability(ABC):
    """Workloads can outlive the control plane on this backend (detached actors, groups): at start,
    remove those no row knows of (``known_ids``: replica and worker ids)."""

    @abstractmethod
    async def collect_orphans(self, known_ids: Collection[str]) -> int:
        """Stop and remove every workload of ours whose id is not in ``known_ids``; how many."""


class LogsCapability(ABC):
    """The backend can show a replica's output."""

    @abstractmethod
    def read_logs(self, handle: ReplicaHandle, *, tail: int = 100) -> list[str]:
        """The last ``tail`` lines, without line endings."""

    @abstractmethod
    def follow_logs(self, handle: ReplicaHandle, *, tail: int = 0,
                    from_start: bool = False) -> AsyncIterator[str]:
        """The last ``tail`` lines, then new lines as they are written; ends once the replica
        has exited and its output is drained. ``from_start``: instead of the last lines, this run's
        output from its first line (a replica started again writes on after its earlier runs)."""


class JobsCapability(ABC):
    """The backend can run job workers. Their handles are ``ReplicaHandle``s with no endpoint:
    ``probe``, ``stop_replica``, ``adopt`` and the logs work on them as on replicas, and ``probe``
    reports a worker's exit code even when it ended while the control plane was down."""

    @abstractmethod
    async def start_gang(self, spec: GangSpec) -> list[ReplicaHandle]:
        """Launch every worker (in rank order) and return at once, or start none: ``NoCapacityError``
        when they do not fit now, another ``NubisError`` when they can never start as given."""

    @abstractmethod
    def checkpoint_dir(self, job_id: str) -> str:
        """Where the job's workers keep checkpoints across retries (``NUBIS_CHECKPOINT_DIR``)."""

    @abstractmethod
    def output_dir(self, job_id: str) -> str:
        """Where the job's workers write what must outlive it (``NUBIS_OUTPUT_DIR``); the control
        plane copies it to the workspace's storage when each attempt ends."""

    @abstractmethod
    def forget_job(self, job_id: str) -> None:
        """The job is over: drop its working folders; its checkpoints may stay for a while."""

    def sweep_jobs(self, *, now: float) -> int:
        """Remove what ended jobs left (their checkpoints) once kept long enough; returns how many."""
        return 0

    def prepare_environment(self, workspace: str, requirements: Sequence[str]) -> Environment:
        """Where a job's ``requirements`` stand here; starts installing what is missing in the
        background (returns at once). ``start_worker`` runs the workers with it once it is ready."""
        if not requirements:
            return Environment("ready")
        return Environment("failed", tuple(requirements), "this backend cannot install a job's requirements")


class GpuCapability(ABC):
    """The backend can give replicas GPUs (``Resources.gpu``)."""

    @abstractmethod
    def gpus_of(self, handle: ReplicaHandle) -> tuple[int, ...]:
        """The GPU indices the replica was given (empty when none)."""


def get_backend_class(name: str) -> type[Backend] | None:
    return _BACKENDS.get(name)


def backend_names() -> list[str]:
    return sorted(_BACKENDS)

"""The Ray backend's replica actor: one detached named actor per replica, on the node it was put on.

The actor holds the replica's CPU, memory and GPUs in Ray's accounting and runs the photon server
as its child on its node, as the local backend does on the control plane's machine: it fetches the
bundle from the platform's storage into the node's ``ArtifactCache`` (hash-checked), prepares a
virtualenv when the bundle needs packages the node lacks, and starts
``python -m nubis.photon.serve BUNDLE --host NODE_IP --port P`` inside the node's ``Sandbox`` with
the replica key, ``CUDA_VISIBLE_DEVICES`` from Ray (empty when it has no GPU) and its output in a
node-local log that the control plane pulls (``read_log``).

No workload child outlives its actor: the child gets ``SIGKILL`` when the actor's process ends
(``PR_SET_PDEATHSIG``, set again by the sandbox launcher after it changes uid), which covers
``ray.kill``, the actor's deletion and its node stopping; ``stop``, ``atexit`` and the actor's own
exit kill the child's whole process group as well.

Node-local state lives under ``$NUBIS_NODE_DIR`` (default ``$TMPDIR/nubis-node``): ``state/artifacts``,
``state/venvs``, ``state/work/<replica>``, ``state/logs/<replica>.<run>.log``.

Imported only when the Ray backend is chosen (by ``ray_backend.py``), so ``ray`` is imported here
at module top.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import ray

from nubis.backends.artifacts import Artifact, ArtifactCache
from nubis.backends.base import ReplicaSpec
from nubis.backends.local import check_bundle, replica_env, venv_of
from nubis.backends.local_processes import signal_group
from nubis.backends.local_venvs import VirtualenvCache, missing_requirements, requirements_key
from nubis.backends.sandbox import LAUNCHER, Policy, Sandbox
from nubis.errors import EnvironmentPendingError, NubisError
from nubis.models.resources import Resources
from nubis.photon.runtime import REPLICA_KEY_ENV
from nubis.storage import ObjectStore, Store

log = logging.getLogger("nubis.backends.ray")

NAMESPACE = "nubis"
REPLICA_PREFIX = "nubis:replica:"
NODE_DIR_ENV = "NUBIS_NODE_DIR"
PR_SET_PDEATHSIG = 1
ENV_POLL_S = 1.0
STOP_WAIT_S = 10.0

_libc = ctypes.CDLL(None, use_errno=True)


def actor_name(replica_id: str) -> str:
    return f"{REPLICA_PREFIX}{replica_id}"


def node_state_dir() -> Path:
    """This node's nubis folder (the sandbox's private state: its parent holds the uid map)."""
    root = os.environ.get(NODE_DIR_ENV) or str(Path(tempfile.gettempdir()) / "nubis-node")
    return Path(root) / "state"


def spec_payload(spec: ReplicaSpec, *, run: str, key: str) -> dict[str, Any]:
    """What the actor needs of a spec, as JSON-shaped data (its bundle is fetched on the node)."""
    if spec.artifact is None:
        raise ValueError("a Ray replica starts from an artifact in storage")
    return {"replica_id": spec.replica_id, "deployment": spec.deployment, "workspace": spec.workspace,
            "content_hash": spec.content_hash, "env": dict(spec.env),
            "resources": spec.resources.model_dump(), "artifact": spec.artifact.to_dict(),
            "run": run, "key": key}


def _die_with_parent() -> None:
    """In the forked child, before exec: SIGKILL when the thread that started it ends."""
    _libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def launch_command(sandbox: Sandbox, argv: list[str], policy: Policy) -> list[str]:
    """The sandboxed command, with the launcher setting the parent-death signal again after it
    drops to the workspace's uid (a uid change clears it)."""
    command = sandbox.command(argv, policy)
    if sandbox.enabled:
        at = command.index(str(LAUNCHER)) + 1
        command[at:at] = ["--pdeathsig", str(int(signal.SIGKILL))]
    return command


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def node_sandbox(root: Path, workspace: str) -> Sandbox:
    """This node's sandbox, with ``workspace``'s uid settled: the actors of a node are separate
    processes sharing one uid map, so each reads it and adds to it under a file lock (two
    workspaces never get the same uid)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with (root.parent / "workload-uids.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sandbox = Sandbox.detect(root)
        sandbox.uid_for(workspace)
    return sandbox


class NodeStore:
    """The platform's storage as a node reaches it, opened on first use: a fresh actor process
    spends 0.2–0.5 s loading the S3 client, which a bundle already in the node's cache (or a job
    worker with no code to fetch and nothing to restore or save) never needs."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self.url = url
        self.options = options
        self._store: ObjectStore | None = None
        self._opening = threading.Lock()

    def opened(self) -> ObjectStore:
        with self._opening:  # from the actor's threads
            if self._store is None:
                self._store = ObjectStore.from_url(self.url, **self.options)
            return self._store

    def photons(self, workspace: str) -> Store:
        return self.opened().photons(workspace)

    def files(self, workspace: str) -> Store:
        return self.opened().files(workspace)


class ReplicaActor:
    """One replica on one node. Every method first starts the replica if nothing did yet, so the
    first call (the backend's, or a new control plane's after a restart) starts it, once."""

    def __init__(self, payload: dict[str, Any], storage_url: str, storage_options: dict[str, Any]) -> None:
        self.payload = payload
        self.store = NodeStore(storage_url, storage_options)
        self.state = "starting"
        self.detail = ""
        self.endpoint: str | None = None
        self.exit_code: int | None = None
        self.gpus = [str(g) for g in ray.get_gpu_ids()]
        self.node_id = ray.get_runtime_context().get_node_id()
        self.host = ray.util.get_node_ip_address()
        self.root = node_state_dir()
        self.log_path = self.root / "logs" / f"{payload['replica_id']}.{payload['run']}.log"
        self.work = self.root / "work" / payload["replica_id"]
        self.process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        atexit.register(self._kill_child)

    def _ensure_started(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        try:
            await self._launch()
        except NubisError as exc:
            self.state, self.detail = "failed", exc.message
            log.warning("replica %s cannot start: %s", self.payload["replica_id"], self.detail)
        except Exception as exc:  # the actor stays to say why; the control plane replaces it
            self.state, self.detail = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("replica %s failed to start", self.payload["replica_id"])

    async def _launch(self) -> None:
        p = self.payload
        sandbox = await asyncio.to_thread(node_sandbox, self.root, p["workspace"])
        # workloads reach their own folders and bundles below (by name: no listing)
        for folder in (self.root, self.root / "work", self.root / "artifacts"):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o711)
        (self.root / "logs").mkdir(mode=0o700, exist_ok=True)
        self.detail = "fetching its bundle"
        bundle = await asyncio.to_thread(
            ArtifactCache(self.store, self.root / "artifacts").fetch, Artifact.from_dict(p["artifact"]))
        spec = ReplicaSpec(replica_id=p["replica_id"], deployment=p["deployment"], workspace=p["workspace"],
                           bundle=bundle, content_hash=p["content_hash"], env=p["env"],
                           resources=Resources(**p["resources"]))
        requirements = await asyncio.to_thread(check_bundle, spec)
        python = await self._python(requirements, spec.workspace, sandbox)
        await asyncio.to_thread(shutil.rmtree, self.work, True)
        for folder in (self.work, self.work / "home", self.work / "tmp"):
            sandbox.own(folder, spec.workspace)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # no way into the cluster
        env = replica_env(env, spec, home=self.work / "home", gpus=())
        env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus)
        env.update(sandbox.env(spec.workspace, tmp=self.work / "tmp", home=self.work))
        env[REPLICA_KEY_ENV] = p["key"]
        port = free_port(self.host)
        policy = sandbox.policy(workspace=spec.workspace, read=[str(bundle), *venv_of(python)],
                                write=[str(self.work)])
        argv = [python, "-m", "nubis.photon.serve", str(bundle), "--host", self.host, "--port", str(port)]
        with self.log_path.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                *launch_command(sandbox, argv, policy), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, env=env, cwd=self.work, start_new_session=True,
                preexec_fn=_die_with_parent)
        self.endpoint = f"http://{self.host}:{port}"
        self.state, self.detail = "running", ""
        log.info("replica %s: pid %d on %s, gpus [%s]", spec.replica_id, self.process.pid,
                 self.endpoint, ",".join(self.gpus))
        self.exit_code = await self.process.wait()
        self.state = "exited"

    async def _python(self, requirements: list[str], workspace: str, sandbox: Sandbox) -> str:
        """The interpreter for the bundle; a missing requirement set is built once per node (other
        actors wait on the build's file lock, then find it ready)."""
        venvs = VirtualenvCache(self.root / "venvs", sandbox)
        if not missing_requirements(requirements):
            return venvs.python_for(requirements, workspace=workspace)
        (self.root / "venvs").mkdir(parents=True, exist_ok=True)
        lock_path = self.root / "venvs" / f"{requirements_key(requirements, workspace)}.lock"
        with lock_path.open("a") as lock:
            self.detail = "waiting for another replica's virtualenv build on this node"
            await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
            while True:
                try:
                    return venvs.python_for(requirements, workspace=workspace)
                except EnvironmentPendingError as exc:
                    self.detail = exc.message
                await asyncio.sleep(ENV_POLL_S)

    async def poll(self) -> dict[str, Any]:
        """``state``: starting, running, exited or failed; ``detail``: what it is doing or why it failed."""
        self._ensure_started()
        return {"run": self.payload["run"], "state": self.state, "detail": self.detail,
                "endpoint": self.endpoint, "pid": self.process.pid if self.process else None,
                "exit_code": self.exit_code, "node": self.node_id, "gpus": list(self.gpus)}

    async def read_log(self, offset: int, limit: int) -> tuple[bytes, int]:
        """Up to ``limit`` bytes of the child's output from ``offset``, and the offset after them."""
        self._ensure_started()
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                data = fh.read(limit)
        except FileNotFoundError:
            data = b""
        return data, offset + len(data)

    async def stop(self, grace_s: float) -> int | None:
        """SIGTERM the child's process group, SIGKILL it after ``grace_s``; its exit code."""
        self._ensure_started()
        if self._task is not None and not self._task.done() and self.process is None:
            self._task.cancel()
            self.state, self.detail = "failed", "stopped before it started"
        if self.process is None or self.process.returncode is not None:
            return self.exit_code
        signal_group(self.process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(self.process.wait()), grace_s)
        except TimeoutError:
            log.warning("replica %s did not stop within %.0f s: killing it",
                        self.payload["replica_id"], grace_s)
        signal_group(self.process.pid, signal.SIGKILL)  # and whatever it started in its group
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.process.wait()), STOP_WAIT_S)
        return self.process.returncode

    async def forget(self) -> None:
        """The control plane has pulled its output: drop the node-local log and working folder."""
        self._kill_child()
        self.log_path.unlink(missing_ok=True)
        await asyncio.to_thread(shutil.rmtree, self.work, True)

    def _kill_child(self) -> None:
        if self.process is not None:
            signal_group(self.process.pid, signal.SIGKILL)

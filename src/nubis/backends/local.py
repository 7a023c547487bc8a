"""The local backend: each replica is a photon server process on this machine.

A replica is ``python -m nubis.photon.serve BUNDLE --host 127.0.0.1 --port P`` in its own session
(process group), so it outlives a crashed control plane and a new one can ``adopt`` it from the
handle's ``ref``. CPU, memory and GPU indices are accounted here, in memory (``Ledger``); a replica
sees only its GPUs through ``CUDA_VISIBLE_DEVICES``. Output goes to ``state_dir/logs/<id>.log``.
Job workers (``local_jobs.py``) share the ledger, the process table and the logs.

Adoption and probing of processes that are not our children read ``/proc`` (Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import BinaryIO

import httpx

from nubis.backends.base import (
    Backend,
    Capacity,
    GpuCapability,
    LogsCapability,
    ReplicaHandle,
    ReplicaProbe,
    ReplicaSpec,
)
from nubis.backends.local_jobs import LocalJobs, elastic_error, read_exit_code
from nubis.backends.local_processes import (
    REPLICA_ID,
    REPLICA_ID_ENV,
    SECRET_ENV,
    Allocation,
    Ledger,
    TrackedProcess,
    detect_capacity,
    free_port,
    is_alive_from_ref,
    process_gone,
    process_start_time,
    signal_group,
    tail_lines,
)
from nubis.backends.local_venvs import VirtualenvCache
from nubis.backends.sandbox import Sandbox
from nubis.errors import BundleError
from nubis.http_clients import async_client
from nubis.photon.bundle import read_manifest, verified_hash
from nubis.photon.runtime import REPLICA_KEY_ENV

log = logging.getLogger("nubis.backends.local")


ERROR_LINES = 20
PROBE_TIMEOUT_S = 1.0


def replica_env(base: Mapping[str, str], spec: ReplicaSpec, *, home: Path,
                gpus: tuple[int, ...]) -> dict[str, str]:
    """The control plane's env minus its credentials, the spec's env, then what we set."""
    env = {k: v for k, v in base.items() if not SECRET_ENV.search(k)}
    env.update(spec.env)
    env.update({
        "NUBIS_HOME": str(home),
        "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus)),
        REPLICA_ID_ENV: spec.replica_id,
        "NUBIS_DEPLOYMENT": spec.deployment,
        "NUBIS_WORKSPACE": spec.workspace,
        "PYTHONUNBUFFERED": "1",
    })
    return env


def venv_of(python: str) -> list[str]:
    """The cached virtualenv an interpreter belongs to (read-only to the workload), if any."""
    return [] if python == sys.executable else [str(Path(python).parent.parent)]


class LocalBackend(Backend, LogsCapability, GpuCapability, LocalJobs):
    name = "local"

    def __init__(self, state_dir: Path, *, cpus: float | None = None, memory: int | None = None,
                 gpus: list[int] | None = None, sandbox: Sandbox | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.ledger = Ledger(detect_capacity(cpus=cpus, memory=memory, gpus=gpus))
        self.sandbox = sandbox if sandbox is not None else Sandbox.detect(self.state_dir)
        self.venvs = VirtualenvCache(self.state_dir / "venvs", self.sandbox)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for folder in (self.state_dir, self.state_dir / "work", self.state_dir / "jobs"):
            folder.mkdir(exist_ok=True)
            folder.chmod(0o711)  # workloads reach their own folders below, and list nothing
        (self.state_dir / "logs").mkdir(exist_ok=True)
        (self.state_dir / "logs").chmod(0o700)  # every workload's output: the control plane's only
        self._replicas: dict[str, TrackedProcess] = {}
        self._exit_codes: dict[tuple[str, int], int | None] = {}  # (id, pid) of forgotten ones

    def work_dir(self, replica_id: str) -> Path:
        """A replica's own folder (cwd, ``NUBIS_HOME`` for its extracted bundle, ``TMPDIR``)."""
        return self.state_dir / "work" / replica_id

    def log_path(self, replica_id: str) -> Path:
        return self.state_dir / "logs" / f"{replica_id}.log"

    def capacity(self) -> Capacity:
        return self.ledger.total

    def free(self) -> Capacity:
        return self.ledger.free()

    async def start_replica(self, spec: ReplicaSpec) -> ReplicaHandle:
        if not REPLICA_ID.match(spec.replica_id):
            raise ValueError(f"replica id {spec.replica_id!r} must match {REPLICA_ID.pattern}")
        if not self._forget_exited(spec.replica_id):
            raise ValueError(f"replica {spec.replica_id} is already running here")
        python = self.venvs.python_for(check_bundle(spec), workspace=spec.workspace)
        allocation = self.ledger.allocate(spec.replica_id, spec.resources)
        try:
            return await self._launch(spec, allocation, python)
        except BaseException:
            self.ledger.release(spec.replica_id)
            raise

    async def _launch(self, spec: ReplicaSpec, allocation: Allocation, python: str) -> ReplicaHandle:
        port = free_port()
        bundle = str(Path(spec.bundle).resolve())
        log_path = self.log_path(spec.replica_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        work = self.work_dir(spec.replica_id)
        await asyncio.to_thread(shutil.rmtree, work, True)
        for folder in (work, work / "home", work / "tmp"):
            self.sandbox.own(folder, spec.workspace)
        env = replica_env(os.environ, spec, home=work / "home", gpus=allocation.gpus)
        env.update(self.sandbox.env(spec.workspace, tmp=work / "tmp", home=work))
        key = secrets.token_urlsafe(32)  # the replica answers only requests that carry it (the
        # gateway sends it; ReplicaHandle.ref["replica_key"] keeps it for the routing table)
        env[REPLICA_KEY_ENV] = key
        policy = self.sandbox.policy(workspace=spec.workspace, read=[bundle, *venv_of(python)],
                                     write=[str(work)])
        argv = [python, "-m", "nubis.photon.serve", bundle, "--host", "127.0.0.1", "--port", str(port)]
        with log_path.open("ab") as out:
            log_offset = out.tell()  # where this run's output starts (a restart appends)
            process = await asyncio.create_subprocess_exec(
                *self.sandbox.command(argv, policy),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, cwd=work, start_new_session=True,
            )
        handle = ReplicaHandle(
            replica_id=spec.replica_id,
            backend=self.name,
            endpoint=f"http://127.0.0.1:{port}",
            ref={
                "pid": str(process.pid),
                "start_time": process_start_time(process.pid) or "",
                "port": str(port),
                "log": str(log_path),
                "log_offset": str(log_offset),
                "bundle": bundle,
                "millicpu": str(allocation.millicpu),
                "memory": str(allocation.memory),
                "gpus": ",".join(map(str, allocation.gpus)),
                "replica_key": key,
            },
        )
        replica = TrackedProcess(handle, process.pid, process)
        replica.waiter = asyncio.create_task(self._reap(replica))
        self._replicas[spec.replica_id] = replica
        log.info("started replica %s of %s/%s: pid %d, port %d, gpus [%s]", spec.replica_id,
                 spec.workspace, spec.deployment, process.pid, port, handle.ref["gpus"])
        return handle

    async def _reap(self, replica: TrackedProcess) -> None:
        """Wait for our child to exit, keep its exit code, give its resources back."""
        assert replica.process is not None
        replica.exit_code = await replica.process.wait()
        self._release(replica)
        log.info("replica %s exited with %s", replica.handle.replica_id, replica.exit_code)

    def _tracked(self, handle: ReplicaHandle) -> TrackedProcess | None:
        """The replica this instance manages for ``handle``: same id and same pid."""
        replica = self._replicas.get(handle.replica_id)
        if replica is None or str(replica.pid) != handle.ref.get("pid"):
            return None
        return replica

    def _release(self, replica: TrackedProcess) -> None:
        if self._replicas.get(replica.handle.replica_id) is replica:
            self.ledger.release(replica.handle.replica_id)

    def _forget_exited(self, replica_id: str) -> bool:
        """Drop the record of an exited replica so that its id can run again; False if alive."""
        replica = self._replicas.get(replica_id)
        if replica is None:
            return True
        if self._alive(replica.handle):
            return False
        self._release(replica)
        self._exit_codes[(replica_id, replica.pid)] = replica.exit_code
        del self._replicas[replica_id]
        return True

    def _alive(self, handle: ReplicaHandle) -> bool:
        replica = self._tracked(handle)
        if replica is not None and replica.process is not None:
            return replica.process.returncode is None
        return is_alive_from_ref(handle)

    async def probe(self, handle: ReplicaHandle) -> ReplicaProbe:
        if not self._alive(handle):
            replica = self._tracked(handle)
            if replica is not None and replica.process is None:
                self._release(replica)  # adopted, not our child: seen gone here
            exit_code = read_exit_code(handle.ref.get("exit_file"))  # a job worker's own code
            if exit_code is None:
                exit_code = (replica.exit_code if replica is not None
                             else self._exit_codes.get((handle.replica_id, int(handle.ref.get("pid", -1)))))
            lines = self.read_logs(handle, tail=ERROR_LINES)
            error = elastic_error(handle.ref.get("error_file")) if exit_code else None
            if error:
                lines.append(f"error reported by the script (torch.distributed.elastic): {error}")
            return ReplicaProbe(alive=False, ready=False, exit_code=exit_code, last_error_lines=lines)
        return ReplicaProbe(alive=True, ready=await readyz(handle.endpoint))

    async def stop_replica(self, handle: ReplicaHandle, *, grace_s: float = 30.0) -> None:
        replica = self._tracked(handle)
        if self._alive(handle):
            pid = int(handle.ref["pid"])
            signal_group(pid, signal.SIGTERM)
            if not await self._wait_gone(handle, grace_s):
                log.warning("replica %s did not stop within %.0f s: killing it",
                            handle.replica_id, grace_s)
                signal_group(pid, signal.SIGKILL)
                await self._wait_gone(handle, 10.0)
        if replica is not None and replica.waiter is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(replica.waiter), 10.0)
        if replica is not None:
            self._forget_exited(handle.replica_id)
        if handle.endpoint is not None and not self._alive(handle):
            await asyncio.to_thread(shutil.rmtree, self.work_dir(handle.replica_id), True)

    async def _wait_gone(self, handle: ReplicaHandle, timeout: float) -> bool:
        replica = self._tracked(handle)
        if replica is not None and replica.process is not None:
            try:
                await asyncio.wait_for(asyncio.shield(replica.process.wait()), timeout)
                return True
            except TimeoutError:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process_gone(handle):  # not is_alive_from_ref: an exiting process hides its environ
                return True
            await asyncio.sleep(0.05)
        return False

    async def adopt(self, handle: ReplicaHandle) -> bool:
        if handle.backend != self.name:
            return False
        if self._tracked(handle) is not None:
            return self._alive(handle)
        if not is_alive_from_ref(handle) or not self._forget_exited(handle.replica_id):
            return False
        self.ledger.claim(handle.replica_id, Allocation(
            int(handle.ref.get("millicpu", 0)), int(handle.ref.get("memory", 0)), self.gpus_of(handle)))
        self._replicas[handle.replica_id] = TrackedProcess(handle, int(handle.ref["pid"]))
        log.info("adopted replica %s: pid %s", handle.replica_id, handle.ref["pid"])
        return True

    # LogsCapability

    def read_logs(self, handle: ReplicaHandle, *, tail: int = 100) -> list[str]:
        return tail_lines(self.log_path(handle.replica_id), tail)

    async def follow_logs(self, handle: ReplicaHandle, *, tail: int = 0,
                          from_start: bool = False) -> AsyncIterator[str]:
        path = self.log_path(handle.replica_id)
        with contextlib.suppress(FileNotFoundError), path.open("rb") as fh:
            # the first lines and what follows come from one open file: no line is lost in between
            if from_start:  # this run's output: a restarted replica appends to the same file
                fh.seek(int(handle.ref.get("log_offset") or 0))
                lines, pending = [], b""
            else:
                lines, pending = _last_lines(fh, tail)
            for line in lines:
                yield line.decode(errors="replace")
            while True:
                chunk = fh.read(64 * 1024)
                if chunk:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        yield line.decode(errors="replace")
                    continue
                if not self._alive(handle):
                    if pending:
                        yield pending.decode(errors="replace")
                    return
                await asyncio.sleep(0.2)

    # GpuCapability

    def gpus_of(self, handle: ReplicaHandle) -> tuple[int, ...]:
        return tuple(int(g) for g in handle.ref.get("gpus", "").split(",") if g)


def _last_lines(fh: BinaryIO, tail: int) -> tuple[list[bytes], bytes]:
    """The last ``tail`` complete lines of an open log and the unfinished one after them; leaves
    the file at its end."""
    end = fh.seek(0, os.SEEK_END)
    if tail <= 0:
        return [], b""
    fh.seek(max(0, end - 64 * 1024 * (tail // 100 + 1)))
    *lines, pending = fh.read(end - fh.tell()).split(b"\n")
    return lines[-tail:], pending


def check_bundle(spec: ReplicaSpec) -> list[str]:
    """Refuse a bundle that is not the one asked for, hashing its files again before each start
    (a cached bundle is reused by every replica of that content); return its requirements."""
    digest = verified_hash(Path(spec.bundle))
    if spec.content_hash and digest != spec.content_hash:
        raise BundleError(f"{spec.bundle}: content hash {digest[:12]} is not the "
                          f"expected {spec.content_hash[:12]}")
    return list(read_manifest(Path(spec.bundle)).requirements)


async def readyz(endpoint: str | None) -> bool:
    if endpoint is None:
        return False
    try:
        async with async_client(timeout=PROBE_TIMEOUT_S) as client:
            return (await client.get(f"{endpoint}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False

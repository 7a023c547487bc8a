"""The local backend: each replica is a photon server process on this machine.

A replica is ``python -m nubis.photon.serve BUNDLE --host 127.0.0.1 --port P`` in its own session
(process group), so it outlives a crashed control plane and a new one can ``adopt`` it from the
handle's ``ref``. CPU, memory and GPU indices are accounted here, in memory (``Ledger``); a replica
sees only its GPUs through ``CUDA_VISIBLE_DEVICES``. Output goes to ``state_dir/logs/<id>.log``.

Adoption and probing of processes that are not our children read ``/proc`` (Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

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
from nubis.errors import BundleError, NoCapacityError, PhotonLoadError
from nubis.models.resources import Resources
from nubis.photon.bundle import read_manifest

log = logging.getLogger("nubis.backends.local")

REPLICA_ID_ENV = "NUBIS_REPLICA_ID"
REPLICA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# control-plane credentials a workload must not inherit (its own secrets come in spec.env)
SECRET_ENV = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|MASTER_KEY|ACCESS_KEY|CREDENTIAL|DATABASE_URL|DB_URL",
                        re.IGNORECASE)
ERROR_LINES = 20
PROBE_TIMEOUT_S = 1.0
_GIB = 2**30



@dataclass(frozen=True)
class Allocation:
    millicpu: int
    memory: int
    gpus: tuple[int, ...] = ()


class Ledger:
    """CPU (in millicores, so sums are exact), memory and GPU indices given to each replica.

    ``allocate`` never over-commits. ``claim`` records what an adopted replica already holds,
    even beyond the total (the process runs either way); ``allocate`` then refuses until it ends.
    """

    def __init__(self, total: Capacity) -> None:
        self.total = total
        self._total_millicpu = math.floor(round(total.cpu * 1000, 6))
        self._held: dict[str, Allocation] = {}

    def _used(self) -> tuple[int, int, set[int]]:
        cpu = sum(a.millicpu for a in self._held.values())
        mem = sum(a.memory for a in self._held.values())
        gpus = {g for a in self._held.values() for g in a.gpus}
        return cpu, mem, gpus

    def free(self) -> Capacity:
        cpu, mem, gpus = self._used()
        return Capacity(
            cpu=max(0, self._total_millicpu - cpu) / 1000,
            memory=max(0, self.total.memory - mem),
            gpus=tuple(g for g in self.total.gpus if g not in gpus),
        )

    def allocate(self, key: str, resources: Resources) -> Allocation:
        """Reserve ``resources`` for ``key`` or raise ``NoCapacityError`` saying what is short."""
        if key in self._held:
            raise ValueError(f"{key} already holds resources")
        free = self.free()
        millicpu = to_millicpu(resources.cpu)
        short = []
        if millicpu > to_millicpu(free.cpu):
            short.append(f"needs {resources.cpu:g} CPU, {free.cpu:g} free")
        if resources.memory > free.memory:
            short.append(f"needs {_gib(resources.memory)} memory, {_gib(free.memory)} free")
        if resources.gpu > len(free.gpus):
            short.append(f"needs {resources.gpu} GPU, {len(free.gpus)} free")
        if short:
            raise NoCapacityError("; ".join(short), details={
                "needs": {"cpu": resources.cpu, "memory": resources.memory, "gpu": resources.gpu},
                "free": {"cpu": free.cpu, "memory": free.memory, "gpu": len(free.gpus)},
            })
        allocation = Allocation(millicpu, resources.memory, free.gpus[: resources.gpu])
        self._held[key] = allocation
        return allocation

    def claim(self, key: str, allocation: Allocation) -> None:
        self._held[key] = allocation

    def release(self, key: str) -> Allocation | None:
        return self._held.pop(key, None)


def to_millicpu(cpu: float) -> int:
    """Cores → millicores, rounding up (0.0001 CPU still costs 1), ignoring float noise."""
    return math.ceil(round(cpu * 1000, 6))


def _gib(n: int) -> str:
    return f"{n / _GIB:.2f} GiB"



def detect_capacity(*, cpus: float | None, memory: int | None, gpus: list[int] | None) -> Capacity:
    """Arguments win; else this machine (CPU affinity, /proc/meminfo, NUBIS_FAKE_GPUS, nvidia-smi)."""
    if cpus is None:
        cpus = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                     else os.cpu_count() or 1)
    return Capacity(
        cpu=cpus,
        memory=memory if memory is not None else total_memory(),
        gpus=tuple(gpus) if gpus is not None else detect_gpus(),
    )


def total_memory() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def detect_gpus() -> tuple[int, ...]:
    """``NUBIS_FAKE_GPUS=N`` (tests, demos) wins; else what ``nvidia-smi`` lists; else none."""
    fake = os.environ.get("NUBIS_FAKE_GPUS")
    if fake:
        return tuple(range(int(fake)))
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        out = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed, no GPUs: %s", exc)
        return ()
    return tuple(int(line) for line in out.split() if line.strip().isdigit())


def missing_requirements(requirements: list[str]) -> list[str]:
    """Requirements whose distribution is not installed here (names only, versions unchecked)."""
    missing = []
    for req in requirements:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
        if match is None:
            continue
        try:
            importlib.metadata.distribution(match.group(1))
        except importlib.metadata.PackageNotFoundError:
            missing.append(req.strip())
    return missing


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



def process_start_time(pid: int) -> str | None:
    """Clock ticks since boot when ``pid`` started (with the pid, names one process), or None
    if it does not exist or is a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) "
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def process_is_replica(pid: int, replica_id: str, bundle: str) -> bool:
    """Its environ names the replica; if environ cannot be read, its cmdline names the bundle."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        return f"{REPLICA_ID_ENV}={replica_id}".encode() in environ
    except PermissionError:
        pass
    except OSError:
        return False
    try:
        return bundle.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def tail_lines(path: Path, n: int) -> list[str]:
    if n <= 0:
        return []
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024 * max(1, n // 100 + 1)))
            data = fh.read()
    except OSError:
        return []
    return [line.decode(errors="replace") for line in data.splitlines()[-n:]]



@dataclass
class _Replica:
    handle: ReplicaHandle
    pid: int
    process: asyncio.subprocess.Process | None = None  # our child; None when adopted
    exit_code: int | None = None
    waiter: asyncio.Task[None] | None = None


class LocalBackend(Backend, LogsCapability, GpuCapability):
    name = "local"

    def __init__(self, state_dir: Path, *, cpus: float | None = None, memory: int | None = None,
                 gpus: list[int] | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.ledger = Ledger(detect_capacity(cpus=cpus, memory=memory, gpus=gpus))
        self._replicas: dict[str, _Replica] = {}
        self._exit_codes: dict[tuple[str, int], int | None] = {}  # (id, pid) of forgotten ones

    @property
    def home(self) -> Path:  # NUBIS_HOME of the replicas: extracted bundles, shared by content hash
        return self.state_dir / "home"

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
        check_bundle(spec)
        allocation = self.ledger.allocate(spec.replica_id, spec.resources)
        try:
            return await self._launch(spec, allocation)
        except BaseException:
            self.ledger.release(spec.replica_id)
            raise

    async def _launch(self, spec: ReplicaSpec, allocation: Allocation) -> ReplicaHandle:
        port = free_port()
        bundle = str(Path(spec.bundle).resolve())
        log_path = self.log_path(spec.replica_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        env = replica_env(os.environ, spec, home=self.home, gpus=allocation.gpus)
        with log_path.open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "nubis.photon.serve", bundle,
                "--host", "127.0.0.1", "--port", str(port),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, cwd=self.state_dir, start_new_session=True,
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
                "bundle": bundle,
                "millicpu": str(allocation.millicpu),
                "memory": str(allocation.memory),
                "gpus": ",".join(map(str, allocation.gpus)),
            },
        )
        replica = _Replica(handle, process.pid, process)
        replica.waiter = asyncio.create_task(self._reap(replica))
        self._replicas[spec.replica_id] = replica
        log.info("started replica %s of %s/%s: pid %d, port %d, gpus [%s]", spec.replica_id,
                 spec.workspace, spec.deployment, process.pid, port, handle.ref["gpus"])
        return handle

    async def _reap(self, replica: _Replica) -> None:
        """Wait for our child to exit, keep its exit code, give its resources back."""
        assert replica.process is not None
        replica.exit_code = await replica.process.wait()
        self._release(replica)
        log.info("replica %s exited with %s", replica.handle.replica_id, replica.exit_code)

    def _tracked(self, handle: ReplicaHandle) -> _Replica | None:
        """The replica this instance manages for ``handle``: same id and same pid."""
        replica = self._replicas.get(handle.replica_id)
        if replica is None or str(replica.pid) != handle.ref.get("pid"):
            return None
        return replica

    def _release(self, replica: _Replica) -> None:
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
            exit_code = (replica.exit_code if replica is not None
                         else self._exit_codes.get((handle.replica_id, int(handle.ref.get("pid", -1)))))
            return ReplicaProbe(
                alive=False, ready=False, exit_code=exit_code,
                last_error_lines=self.read_logs(handle, tail=ERROR_LINES),
            )
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
        self._replicas[handle.replica_id] = _Replica(handle, int(handle.ref["pid"]))
        log.info("adopted replica %s: pid %s", handle.replica_id, handle.ref["pid"])
        return True

    # LogsCapability

    def read_logs(self, handle: ReplicaHandle, *, tail: int = 100) -> list[str]:
        return tail_lines(self.log_path(handle.replica_id), tail)

    async def follow_logs(self, handle: ReplicaHandle, *, tail: int = 0) -> AsyncIterator[str]:
        path = self.log_path(handle.replica_id)
        for line in tail_lines(path, tail):
            yield line
        with contextlib.suppress(FileNotFoundError), path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            pending = b""
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


def check_bundle(spec: ReplicaSpec) -> None:
    """Refuse what can never start: a bundle that is not the one asked for, missing requirements.

    Building a virtualenv per bundle is not done yet: requirements must be installed in the
    platform's own environment.
    """
    manifest = read_manifest(Path(spec.bundle))
    if manifest.content_hash and spec.content_hash and manifest.content_hash != spec.content_hash:
        raise BundleError(f"{spec.bundle}: content hash {manifest.content_hash[:12]} is not the "
                          f"expected {spec.content_hash[:12]}")
    missing = missing_requirements(manifest.requirements)
    if missing:
        raise PhotonLoadError(
            "; ".join(f"requirement {r} is not installed in the platform's environment"
                      for r in missing),
            details={"missing_requirements": missing},
        )


def is_alive_from_ref(handle: ReplicaHandle) -> bool:
    """The pid in ``ref`` runs, started when it did, and is this replica (not a reused pid)."""
    if not handle.ref.get("pid", "").isdigit() or process_gone(handle):
        return False
    return process_is_replica(int(handle.ref["pid"]), handle.replica_id, handle.ref.get("bundle", ""))


def process_gone(handle: ReplicaHandle) -> bool:
    """The pid in ``ref`` has exited (or is a zombie), or now names a process started later."""
    started = process_start_time(int(handle.ref["pid"]))
    expected = handle.ref.get("start_time")
    return started is None or (bool(expected) and started != expected)


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the replica's process group (it leads its own session), so its children go too."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


async def readyz(endpoint: str | None) -> bool:
    if endpoint is None:
        return False
    try:
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S) as client:
            return (await client.get(f"{endpoint}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False

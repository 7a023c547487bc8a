"""Processes on this machine, shared by the local backend's replicas and job workers.

Resource accounting (``Ledger``), capacity detection, and what ``/proc`` says about a process
(Linux). Only the local backend's modules use this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from nubis.backends.base import Capacity, ReplicaHandle
from nubis.errors import NoCapacityError
from nubis.models.resources import Resources

log = logging.getLogger("nubis.backends.local")

REPLICA_ID_ENV = "NUBIS_REPLICA_ID"
REPLICA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# control-plane credentials a workload must not inherit (its own secrets come in spec.env)
SECRET_ENV = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|MASTER_KEY|ACCESS_KEY|CREDENTIAL|DATABASE_URL|DB_URL",
                        re.IGNORECASE)
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
    """Its environ names the replica (or worker); if environ cannot be read, its cmdline holds
    ``bundle`` (the replica's bundle, the worker's exit file)."""
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
class TrackedProcess:
    handle: ReplicaHandle
    pid: int
    process: asyncio.subprocess.Process | None = None  # our child; None when adopted
    exit_code: int | None = None
    waiter: asyncio.Task[None] | None = None


def is_alive_from_ref(handle: ReplicaHandle) -> bool:
    """The pid in ``ref`` runs, started when it did, and is this replica (not a reused pid)."""
    if not handle.ref.get("pid", "").isdigit() or process_gone(handle):
        return False
    marker = handle.ref.get("bundle") or handle.ref.get("exit_file", "")
    return process_is_replica(int(handle.ref["pid"]), handle.replica_id, marker)


def process_gone(handle: ReplicaHandle) -> bool:
    """The pid in ``ref`` has exited (or is a zombie), or now names a process started later."""
    started = process_start_time(int(handle.ref["pid"]))
    expected = handle.ref.get("start_time")
    return started is None or (bool(expected) and started != expected)


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the replica's process group (it leads its own session), so its children go too."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)

"""The worker's place in a job: the torch.distributed env contract and a few collectives.

Workers get ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (from
the platform or ``torchrun``). Without ``WORLD_SIZE`` the trainer runs as one process and never
calls ``init_process_group``. Platform extras: ``NUBIS_JOB_ID``, ``NUBIS_CHECKPOINT_DIR``,
``NUBIS_API_URL`` + ``NUBIS_JOB_TOKEN`` (metric reports), ``NUBIS_STORAGE_URL`` +
``NUBIS_WORKSPACE`` (data), ``NUBIS_TRAIN_FAIL_AT_EPOCH`` (a test hook, see checkpoint.py).
"""

from __future__ import annotations

import gc
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from nubis.errors import BadRequestError


class EnvError(BadRequestError):
    """The distributed env variables are inconsistent."""


@dataclass(frozen=True)
class WorkerEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    distributed: bool = False
    """True when WORLD_SIZE was given: the process group must be set up (even for one worker)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WorkerEnv:
        if "WORLD_SIZE" not in env:
            return cls()
        try:
            world = int(env["WORLD_SIZE"])
            rank = int(env.get("RANK", "0"))
            local = int(env.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise EnvError("WORLD_SIZE, RANK and LOCAL_RANK must be integers") from None
        if world < 1 or not 0 <= rank < world or local < 0:
            raise EnvError(f"RANK {rank} does not fit WORLD_SIZE {world}")
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
        if missing:
            raise EnvError(f"WORLD_SIZE is set but {' and '.join(missing)} is not")
        return cls(rank=rank, local_rank=local, world_size=world, distributed=True)


def pick_device(worker: WorkerEnv) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", worker.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def cpu_threads(env: Mapping[str, str]) -> int:
    """Compute threads per worker: ``OMP_NUM_THREADS`` when set, else 1.

    These networks are small: one thread per worker is fastest, and more threads on busy cores
    make every step wait on the slowest one (measured 100x slower with 2 threads on 2 busy cores).
    """
    value = env.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else 1


def start(worker: WorkerEnv, device: torch.device) -> None:
    """Join the process group: nccl on GPUs, gloo on CPUs (env:// rendezvous)."""
    if not worker.distributed:
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        rank=worker.rank,
        world_size=worker.world_size,
    )


def stop(worker: WorkerEnv) -> None:
    """Leave the process group while the interpreter is whole, so that the process exits cleanly.

    A DDP wrapper sits in a reference cycle and keeps the group (and gloo's worker threads) alive
    until the garbage collector runs, which may be interpreter finalization: tearing gloo down
    then can abort the process ("terminate called without an active exception"). Collect it
    first, then destroy the group.
    """
    if worker.distributed and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
        gc.collect()


def sum_across(values: list[float], *, worker: WorkerEnv, device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over every worker (the values themselves for one process)."""
    if not worker.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def barrier(worker: WorkerEnv) -> None:
    if worker.distributed:
        dist.barrier()

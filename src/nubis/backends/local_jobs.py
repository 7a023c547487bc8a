"""Job workers on the local backend: processes on this machine, like replicas.

Each worker is ``python worker_exit.py EXIT_FILE COMMAND...`` in its own session, so it outlives a
crashed control plane and its exit code survives in ``state_dir/jobs/<job>/exit/<worker>``.
The job's folder holds its unpacked code (every worker's cwd), its checkpoints and its outputs,
kept across retries. ``forget_job`` (the job ended) removes all but the checkpoints, which stay
``CHECKPOINT_RETENTION_S`` after the job ended; ``sweep_jobs`` removes them then. Workers of a job
with requirements the platform's environment lacks run on the workspace's cached virtualenv for
them (``local_venvs.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

from nubis.backends.base import Environment, GangSpec, JobsCapability, ReplicaHandle, WorkerSpec
from nubis.backends.local_processes import (
    REPLICA_ID,
    REPLICA_ID_ENV,
    SECRET_ENV,
    Allocation,
    TrackedProcess,
    free_port,
    process_start_time,
)
from nubis.backends.local_venvs import VirtualenvCache, venv_of
from nubis.backends.nodes import LOCAL_NODE, rank_envs
from nubis.backends.sandbox import Policy, Sandbox
from nubis.errors import ValidationError
from nubis.models.limits import check_code_archive

log = logging.getLogger("nubis.backends.local")

WORKER_EXIT = Path(__file__).with_name("worker_exit.py")
PYTHON_NAMES = ("python", "python3", f"python3.{sys.version_info.minor}")
CHECKPOINT_RETENTION_S = 7 * 24 * 3600.0
ENDED = "ended"  # a job folder's marker: the job ended at this file's mtime


def worker_argv(command: tuple[str, ...], exit_file: Path, sandbox: Sandbox, policy: Policy, *,
                python: str = sys.executable) -> list[str]:
    """The wrapper (outside the sandbox: it records the exit code), then the sandboxed command
    with ``python`` meaning the job's interpreter (the platform's, or its requirements' virtualenv)."""
    argv = list(command)
    if argv[0] in PYTHON_NAMES:
        argv[0] = python
    return [sys.executable, str(WORKER_EXIT), str(exit_file), *sandbox.command(argv, policy)]


def local_storage(url: str | None) -> Path | None:
    """The workspace's storage folder when storage is a local folder (granted to its workers)."""
    if not url or "://" in url.removeprefix("file://"):
        return None
    return Path(url.removeprefix("file://"))


def read_exit_code(path: str | None) -> int | None:
    if not path:
        return None
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def elastic_error(path: str | None) -> str | None:
    """What ``torch.distributed.elastic``'s ``@record`` wrote on the way out (its error file), e.g.
    ``ValueError: loss is nan``; None when nothing was written or it cannot be read."""
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            message = json.load(fh)["message"]
        text = message["message"] if isinstance(message, dict) else message
        return str(text)[:1000] if text else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def unpack_code(archive: Path, dest: Path) -> None:
    """Unpack a job's code zip once into ``dest`` (atomically: a folder renamed into place)."""
    if dest.exists():
        return
    tmp = dest.with_name(f"{dest.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            check_code_archive(zf.infolist(), archive_size=archive.stat().st_size)  # sizes hold: see its doc
            zf.extractall(tmp)  # zipfile drops absolute paths and '..' from member names
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValidationError(f"the job's code archive cannot be unpacked: {exc}") from None
    try:
        tmp.rename(dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another worker of the gang was first


class LocalJobs(JobsCapability):
    """Mixed into ``LocalBackend``: uses its ledger, process table and log files."""

    state_dir: Path
    venvs: VirtualenvCache

    def job_dir(self, job_id: str) -> Path:
        return self.state_dir / "jobs" / job_id

    def checkpoint_dir(self, job_id: str) -> str:
        return str(self.job_dir(job_id) / "checkpoints")

    def output_dir(self, job_id: str) -> str:
        return str(self.job_dir(job_id) / "outputs")

    def forget_job(self, job_id: str) -> None:
        """Drop the job's code, tmp and outputs (already copied to storage); keep its checkpoints
        for ``CHECKPOINT_RETENTION_S`` (``sweep_jobs``)."""
        job_dir = self.job_dir(job_id)
        if not job_dir.is_dir():
            return
        for name in ("code", "tmp", "outputs", "exit"):
            shutil.rmtree(job_dir / name, ignore_errors=True)
        checkpoints = job_dir / "checkpoints"
        if checkpoints.is_dir() and any(checkpoints.iterdir()):
            (job_dir / ENDED).touch()
        else:
            shutil.rmtree(job_dir, ignore_errors=True)

    def sweep_jobs(self, *, now: float, retention_s: float = CHECKPOINT_RETENTION_S) -> int:
        """Remove the folders (checkpoints) of jobs that ended over ``retention_s`` ago."""
        removed = 0
        try:
            folders = list((self.state_dir / "jobs").iterdir())
        except FileNotFoundError:
            return 0
        for folder in folders:
            try:
                ended = (folder / ENDED).stat().st_mtime
            except (FileNotFoundError, NotADirectoryError):
                continue
            if now - ended > retention_s:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed

    def prepare_environment(self, workspace: str, requirements: Sequence[str]) -> Environment:
        return self.venvs.environment(list(requirements), workspace=workspace)

    async def start_gang(self, spec: GangSpec) -> list[ReplicaHandle]:
        """Every rank on this machine (node ``local``), each with torchrun's env for its rank."""
        ranks = rank_envs([LOCAL_NODE] * spec.workers, {LOCAL_NODE: "127.0.0.1"}, master_port=free_port(),
                          user_env=spec.env)
        handles: list[ReplicaHandle] = []
        try:
            for rank, rank_env in enumerate(ranks):
                handles.append(await self.start_worker(WorkerSpec(
                    worker_id=spec.worker_id(rank), job_id=spec.job_id, workspace=spec.workspace, rank=rank,
                    command=spec.command, resources=spec.resources, code=spec.code,
                    requirements=spec.requirements, env={**spec.env, **rank_env})))
        except BaseException:
            await asyncio.gather(*(self.stop_replica(h, grace_s=1.0) for h in handles),  # type: ignore[attr-defined]
                                 return_exceptions=True)
            raise
        return handles

    async def start_worker(self, spec: WorkerSpec) -> ReplicaHandle:
        if not REPLICA_ID.match(spec.worker_id):
            raise ValueError(f"worker id {spec.worker_id!r} must match {REPLICA_ID.pattern}")
        if not self._forget_exited(spec.worker_id):  # type: ignore[attr-defined]
            raise ValueError(f"worker {spec.worker_id} is already running here")
        python = self.venvs.python_for(list(spec.requirements), workspace=spec.workspace)
        allocation: Allocation = self.ledger.allocate(spec.worker_id, spec.resources)  # type: ignore[attr-defined]
        try:
            return await self._launch_worker(spec, allocation, python)
        except BaseException:
            self.ledger.release(spec.worker_id)  # type: ignore[attr-defined]
            raise

    async def _launch_worker(self, spec: WorkerSpec, allocation: Allocation, python: str) -> ReplicaHandle:
        job_dir = self.job_dir(spec.job_id)
        sandbox: Sandbox = self.sandbox  # type: ignore[attr-defined]
        job_dir.mkdir(parents=True, exist_ok=True)
        job_dir.chmod(0o711)
        cwd = job_dir / "code"
        if spec.code is not None and not cwd.exists():
            await asyncio.to_thread(unpack_code, Path(spec.code), cwd)
            await asyncio.to_thread(sandbox.give, cwd, spec.workspace)  # the workers write in their cwd
        (job_dir / ENDED).unlink(missing_ok=True)
        outputs = Path(self.output_dir(spec.job_id))
        for folder in (cwd, Path(self.checkpoint_dir(spec.job_id)), outputs, job_dir / "tmp"):
            sandbox.own(folder, spec.workspace)
        exit_file = job_dir / "exit" / spec.worker_id
        exit_file.parent.mkdir(parents=True, exist_ok=True)
        exit_file.parent.chmod(0o700)
        exit_file.unlink(missing_ok=True)
        log_path = self.log_path(spec.worker_id)  # type: ignore[attr-defined]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        gpus = tuple(allocation.gpus)  # type: ignore[attr-defined]
        bins = dict.fromkeys([str(Path(python).parent), str(Path(sys.executable).parent)])  # the job's first
        env = {k: v for k, v in os.environ.items() if not SECRET_ENV.search(k)}
        env.update(spec.env)
        env.update({
            "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus)),
            REPLICA_ID_ENV: spec.worker_id,
            "NUBIS_CHECKPOINT_DIR": self.checkpoint_dir(spec.job_id),
            "NUBIS_OUTPUT_DIR": str(outputs),
            "PYTHONUNBUFFERED": "1",
            "PATH": os.pathsep.join([*bins, env.get("PATH", "")]),
            **sandbox.env(spec.workspace, tmp=job_dir / "tmp", home=job_dir / "tmp"),
        })
        error_file = job_dir / "tmp" / f"error-{spec.worker_id}.json"
        error_file.unlink(missing_ok=True)  # an earlier attempt's
        if "TORCHELASTIC_ERROR_FILE" not in spec.env:  # torch.distributed.elastic's @record writes here
            env["TORCHELASTIC_ERROR_FILE"] = str(error_file)
        writable = [str(cwd), self.checkpoint_dir(spec.job_id), str(outputs), str(job_dir / "tmp")]
        storage = local_storage(env.get("NUBIS_STORAGE_URL"))
        if storage is not None:
            await asyncio.to_thread(sandbox.share_storage, storage, spec.workspace)
            writable.append(str(storage))
        policy = sandbox.policy(workspace=spec.workspace, read=venv_of(python), write=writable,
                                gang=int(spec.env.get("WORLD_SIZE", "1")) > 1)
        with log_path.open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                *worker_argv(spec.command, exit_file, sandbox, policy, python=python),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, cwd=cwd, start_new_session=True,
            )
        handle = ReplicaHandle(
            replica_id=spec.worker_id,
            backend=self.name,  # type: ignore[attr-defined]
            endpoint=None,
            ref={
                "pid": str(process.pid),
                "start_time": process_start_time(process.pid) or "",
                "log": str(log_path),
                "exit_file": str(exit_file),
                "error_file": env.get("TORCHELASTIC_ERROR_FILE", ""),
                "millicpu": str(allocation.millicpu),
                "memory": str(allocation.memory),  # type: ignore[attr-defined]
                "gpus": ",".join(map(str, gpus)),
            },
        )
        worker = TrackedProcess(handle, process.pid, process)
        worker.waiter = asyncio.create_task(self._reap(worker))  # type: ignore[attr-defined]
        self._replicas[spec.worker_id] = worker  # type: ignore[attr-defined]
        log.info("started worker %s (rank %d) of job %s: pid %d", spec.worker_id, spec.rank,
                 spec.job_id, process.pid)
        return handle


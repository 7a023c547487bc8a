"""Starting gangs in two steps: planned in the admission round's session, launched after it.

``plan`` (inside the session) builds the attempt's env — secrets, a job token, torchrun's
variables — for the placement admission chose; once the session is closed, ``launch`` fetches
the code (hash-checked) and starts the whole gang with one backend call; ``apply`` then records
the workers, guarded: a job cancelled or changed meanwhile has its new gang stopped again.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from nubis.backends.artifacts import Artifact, file_sha256
from nubis.backends.base import GangSpec, JobsCapability, ReplicaHandle
from nubis.backends.nodes import LOCAL_NODE
from nubis.errors import NoCapacityError, NubisError
from nubis.models.auth import Role
from nubis.models.jobs import JobSpec, JobStatus, WorkerStatus
from nubis.server.context import ServerContext
from nubis.server.orm import JobRow, JobWorkerRow, WorkspaceRow
from nubis.server.services import jobs, secrets, tokens, usage
from nubis.server.services.jobs import switch_job_status
from nubis.storage.remote import api_storage_url

J = JobStatus
TOKEN_LIFETIME = timedelta(days=7)


def torchrun_env(spec: JobSpec, *, job_id: str, attempt: int) -> dict[str, str]:
    """What ``torchrun`` sets for each worker besides the ranks and the rendezvous (those come from
    the placement: ``backends/nodes.rank_envs``), so scripts and frameworks (Lightning's environment
    detection) see the same; a value the user's env sets wins."""
    env = {
        "ROLE_NAME": "default", "TORCHELASTIC_RUN_ID": job_id, "TORCHELASTIC_RESTART_COUNT": str(attempt - 1),
        "TORCHELASTIC_MAX_RESTARTS": str(spec.max_retries),
        "TORCHELASTIC_USE_AGENT_STORE": "False",  # no agent: rank 0 hosts the store at MASTER_PORT
        "TORCHELASTIC_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT,SIGHUP,SIGQUIT",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    }
    return {k: v for k, v in env.items() if k not in spec.env}


@dataclass(frozen=True)
class GangOrder:
    job_id: str
    attempt: int
    code_path: str | None
    spec: GangSpec


@dataclass(frozen=True)
class GangResult:
    order: GangOrder
    handles: list[ReplicaHandle]
    error: NubisError | OSError | None = None


class JobStarts:
    def __init__(self, ctx: ServerContext, backend: JobsCapability) -> None:
        self.ctx = ctx
        self.backend = backend
        self.code_cache = ctx.settings.home / "cache" / "code"

    async def plan(self, session: AsyncSession, job: JobRow, nodes: Sequence[str]) -> GangOrder | None:
        """The next attempt's gang on ``nodes``, its token added to the session; None if it can
        never start (the job has failed then)."""
        spec = JobSpec.model_validate(job.spec)
        workspace = await session.get(WorkspaceRow, job.workspace_id)
        assert workspace is not None
        attempt = job.attempt + 1
        try:
            values = await secrets.decrypt_for_workload(session, self.ctx.box, job.workspace_id)
        except NubisError as exc:
            switch_job_status(session, job, J.failed, f"cannot start: {exc}")
            return None
        token_row, token = tokens.new_row(job.workspace_id, f"job {job.name} ({job.id[:8]})", Role.member,
                                          expires_at=datetime.now(UTC) + TOKEN_LIFETIME)
        session.add(token_row)
        await session.flush()
        job.token_id = token_row.id
        env = {
            **spec.env, **{k: values[k] for k in spec.secrets if k in values},
            "NUBIS_JOB_ID": job.id, "NUBIS_JOB_NAME": job.name, "NUBIS_JOB_ATTEMPT": str(attempt),
            "NUBIS_WORKSPACE": workspace.name, "NUBIS_STORAGE_URL": self._storage_url(workspace.name),
            "NUBIS_API_URL": self.ctx.settings.workload_api_url,
            "NUBIS_JOB_TOKEN": token,
            **torchrun_env(spec, job_id=job.id, attempt=attempt),
        }
        gang = GangSpec(job_id=job.id, attempt=attempt, workspace=workspace.name, command=tuple(spec.command),
                        nodes=tuple(nodes) or (LOCAL_NODE,) * spec.workers, env=env, resources=spec.resources,
                        requirements=tuple(spec.requirements), spread=spec.spread)
        return GangOrder(job.id, attempt, spec.code, gang)

    def _storage_url(self, workspace: str) -> str:
        """A local folder as it is (the sandbox grants it); S3 through the API with the job's
        token, so that no workload holds the platform's S3 credentials, on any node."""
        if self.ctx.store.local:
            return self.ctx.store.files_url(workspace)
        return api_storage_url(self.ctx.settings.workload_api_url)

    async def launch(self, order: GangOrder) -> GangResult:
        try:
            spec = order.spec
            if order.code_path is not None:
                local = await asyncio.to_thread(self._fetch_code, spec.workspace, order.code_path)
                digest = await asyncio.to_thread(file_sha256, local)
                spec = replace(spec, code=local,
                               code_artifact=Artifact(spec.workspace, "files", order.code_path, digest))
            return GangResult(order, await self.backend.start_gang(spec))
        except (NubisError, OSError) as exc:
            return GangResult(order, [], exc)

    def _fetch_code(self, workspace: str, path: str) -> Path:
        store = self.ctx.store.files(workspace)
        info = store.info(path)
        stamp = hashlib.sha256(f"{workspace}\0{path}\0{info.size}\0{info.modified}".encode()).hexdigest()
        dest = self.code_cache / f"{stamp}.zip"
        dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # every workspace's code: ours only
        if not dest.exists():
            store.download(path, dest)
        return dest

    async def apply(self, session: AsyncSession, result: GangResult) -> list[ReplicaHandle]:
        """Record a launch; returns the handles to stop when the job no longer wants them."""
        job = await session.get(JobRow, result.order.job_id)
        wanted = (job is not None and job.status == J.queued.value and not job.cancel_requested
                  and job.attempt == result.order.attempt - 1)
        if job is None or not wanted:
            if job is not None:
                await jobs.revoke_job_token(session, job)
            return result.handles
        if result.error is not None:
            await jobs.revoke_job_token(session, job)
            exc = result.error
            if isinstance(exc, NoCapacityError):
                job.reason = f"waiting for capacity: {exc}"
            else:
                switch_job_status(session, job, J.failed, f"cannot start: {exc}")
            return []
        spec = result.order.spec
        job.attempt = spec.attempt
        started_at = datetime.now(UTC)
        job.attempt_started_at = started_at.timestamp()
        job.next_start_at = None
        for rank, handle in enumerate(result.handles):
            worker = JobWorkerRow(id=handle.replica_id, job_id=job.id, attempt=spec.attempt, rank=rank,
                                  status=WorkerStatus.running.value, handle=handle.to_dict())
            session.add(worker)
            usage.worker_started(session, job, worker, spec.resources, at=started_at)
        started = f"attempt {spec.attempt}: {spec.workers} worker(s) started"
        switch_job_status(session, job, J.running, started if spec.attempt > 1 else None)
        return []

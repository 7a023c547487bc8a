"""A queued job's requirements are installed before it is admitted.

The backend builds a virtualenv for what the platform's environment lacks in the background
(``JobsCapability.prepare_environment`` returns at once); meanwhile the job stays queued, its reason
says what is being installed and for how long, and admission does not see it: it holds nothing and
preempts nothing while pip runs. Its events say what is installed, then how long it took, or pip's
last lines — a set pip cannot install fails the job (no retry: it would fail the same way).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.backends.base import Environment, JobsCapability
from nubis.models.jobs import JobSpec, JobStatus
from nubis.server.orm import JobRow, WorkspaceRow
from nubis.server.services.jobs import event, switch_job_status


class JobEnvironments:
    def __init__(self, backend: JobsCapability) -> None:
        self.backend = backend
        self._said: dict[str, str] = {}  # job id → the environment state its events last told

    async def ready(self, session: AsyncSession, queued: list[JobRow], *, active: set[str]) -> list[JobRow]:
        """The jobs of ``queued`` whose environment is ready; the others wait (or fail)."""
        self._said = {k: v for k, v in self._said.items() if k in active}
        wanted = [(job, JobSpec.model_validate(job.spec).requirements) for job in queued]
        if not any(requirements for _, requirements in wanted):
            return queued
        names = {r.id: r.name for r in (await session.scalars(select(WorkspaceRow))).all()}
        ready = []
        for job, requirements in wanted:
            if not requirements:
                ready.append(job)
                continue
            environment = self.backend.prepare_environment(names.get(job.workspace_id, ""), requirements)
            self._tell(session, job, environment)
            if environment.state == "ready":
                ready.append(job)
            elif environment.state == "building":
                job.reason = environment.detail[:2048]
            else:
                switch_job_status(session, job, JobStatus.failed,
                                  f"installing {', '.join(environment.missing)} failed: {environment.detail}")
        return ready

    def _tell(self, session: AsyncSession, job: JobRow, environment: Environment) -> None:
        """One event per change: installing what, then how it went (failing says it in the status)."""
        said, self._said[job.id] = self._said.get(job.id), environment.state
        missing = ", ".join(environment.missing)
        if said == environment.state or environment.state == "failed":
            return
        if environment.state == "building":
            message = f"installing {missing} into a virtualenv (missing from the platform's environment)"
        elif not missing:
            message = "the platform's environment has every requirement: no virtualenv needed"
        elif said == "building":
            message = environment.detail or f"installed {missing}"
        else:
            message = f"using the cached virtualenv for {missing}" + (
                f" (built earlier: {environment.detail})" if environment.detail else "")
        event(session, job.id, "environment", message)

"""A job's life as pure rules: the transition table, retry backoff, and what a gang's worker exits
mean. No I/O; time comes in as ``now``. The state diagram is in ``docs/jobs.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nubis.errors import ConflictError
from nubis.models.jobs import JobStatus

J = JobStatus

JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    J.queued: frozenset({J.running, J.cancelled, J.failed}),
    J.running: frozenset({J.stopping, J.succeeded, J.failed, J.queued}),
    # stopping ends where the reason says: queued (retry, preempted), failed, cancelled
    J.stopping: frozenset({J.queued, J.failed, J.cancelled}),
    J.succeeded: frozenset(),
    J.failed: frozenset(),
    J.cancelled: frozenset(),
    J.unknown: frozenset(set(J) - {J.unknown}),
}

RETRY_BASE_S = 1.0
RETRY_CAP_S = 60.0


def check_job_transition(old: JobStatus, new: JobStatus) -> None:
    """Raise :class:`~nubis.errors.ConflictError` when a job may not go from ``old`` to ``new``."""
    if old == new or new in JOB_TRANSITIONS[old]:
        return
    allowed = sorted(JOB_TRANSITIONS[old])
    where = ", ".join(f"'{s}'" for s in allowed) if allowed else f"nowhere ('{old}' is final)"
    raise ConflictError(
        f"a job cannot go from '{old}' to '{new}'; from '{old}' it can go to {where}",
        details={"from": str(old), "to": str(new), "allowed": [str(s) for s in allowed]},
    )


def retry_delay(failures: int) -> float:
    """Seconds before the gang starts again after its ``failures``-th failure: 1, 2, 4, … ≤ 60."""
    return min(RETRY_CAP_S, RETRY_BASE_S * 2 ** max(0, failures - 1))


@dataclass(frozen=True)
class WorkerExit:
    rank: int
    alive: bool
    exit_code: int | None


@dataclass(frozen=True)
class GangOutcome:
    """What the workers' states mean for the job: still running, all done, or one failed."""

    done: bool
    failed_rank: int | None = None
    exit_code: int | None = None

    @property
    def succeeded(self) -> bool:
        return self.done and self.failed_rank is None


def gang_outcome(workers: Sequence[WorkerExit]) -> GangOutcome:
    """Done when every worker exited 0; failed as soon as one exited otherwise (or vanished with no
    exit code): gang semantics, the others will be stopped."""
    for worker in sorted(workers, key=lambda w: w.rank):
        if not worker.alive and worker.exit_code != 0:
            return GangOutcome(done=True, failed_rank=worker.rank, exit_code=worker.exit_code)
    if workers and all(not w.alive for w in workers):
        return GangOutcome(done=True)
    return GangOutcome(done=False)


def describe_exit(rank: int, exit_code: int | None) -> str:
    if exit_code is None:
        return f"worker {rank} disappeared"
    if exit_code < 0:
        return f"worker {rank} was killed by signal {-exit_code}"
    return f"worker {rank} exited with code {exit_code}"


def retry_or_fail(*, failures: int, max_retries: int) -> JobStatus:
    """After the ``failures``-th failure: queued again while retries are left, else failed."""
    return J.queued if failures <= max_retries else J.failed

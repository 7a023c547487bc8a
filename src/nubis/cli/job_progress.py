"""What ``nubis train`` (and ``nubis model quantize|export``) says while it follows a job: one plain
line per change, from the job each poll returns. Pure: no console, no clock.

    queued (waiting for capacity: needs 2 CPU; free 1 CPU)
    starting 2 workers
    epoch 1/10 loss=1.02 accuracy=0.71 val_accuracy=0.83
    …
    succeeded

A job seen in one poll already further on (it started, or ran every epoch, between two polls)
still gets each step it passed: the workers' start and one line per epoch it reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nubis.models.jobs import TERMINAL_JOB_STATUSES, Job, JobStatus

EPOCH_METRICS = ("loss", "accuracy", "val_accuracy")


@dataclass
class JobProgress:
    """The lines shown so far of one job; :meth:`update` returns the new ones."""

    lines: list[str] = field(default_factory=list)
    attempt: int = 0  # the last attempt whose start was shown
    reported: int = 0  # how many of the job's metrics records were shown

    @property
    def latest(self) -> str:
        return self.lines[-1] if self.lines else ""

    def update(self, job: Job) -> list[str]:
        new: list[str] = []
        if job.attempt > self.attempt:
            self.attempt = job.attempt
            new.append(starting_line(job))
        records = job.history[self.reported:]
        self.reported = len(job.history)
        new.extend(epoch_line(r) for r in records if isinstance(r.get("epoch"), int))
        state = status_line(job)
        if state is not None and state != (new[-1] if new else self.latest):
            new.append(state)
        self.lines.extend(new)
        return new


def starting_line(job: Job) -> str:
    workers = f"{job.workers} worker" + ("s" if job.workers != 1 else "")
    return f"starting {workers}" + (f" (attempt {job.attempt})" if job.attempt > 1 else "")


def epoch_line(record: dict[str, Any]) -> str:
    epochs = record.get("epochs")
    shown = f"epoch {record['epoch']}" + (f"/{epochs}" if isinstance(epochs, int) else "")
    numbers = [f"{k}={record[k]:.4g}" for k in EPOCH_METRICS if _number(record.get(k))]
    return " ".join([shown, *numbers])


def status_line(job: Job) -> str | None:
    """The job's state, where the starting and epoch lines do not already say it (running)."""
    if job.status == JobStatus.running:
        return None
    if job.status in (JobStatus.queued, JobStatus.stopping):
        return f"{job.status} ({job.reason})" if job.reason else str(job.status)
    if job.status in TERMINAL_JOB_STATUSES and job.reason:
        return f"{job.status}: {job.reason}"
    return str(job.status)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)

"""``client.jobs`` and ``client.train``: batch work run by gangs of workers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from nubis.client.base import ResourceAPI
from nubis.client.storage import StorageAPI
from nubis.errors import BadRequestError, NubisError
from nubis.models.jobs import TERMINAL_JOB_STATUSES, Job, JobEvent, job_outputs_path
from nubis.models.resources import Resources
from nubis.models.storage import StorageObject, normalize_path

POLL_S = 0.5


class JobTimeoutError(NubisError):
    """``wait`` gave up before the job ended."""

    code = "job_timeout"
    http_status = 504


def _resources(resources: Resources | dict[str, Any] | None) -> dict[str, Any] | None:
    if resources is None:
        return None
    return resources.model_dump(mode="json") if isinstance(resources, Resources) else dict(resources)


class JobsAPI(ResourceAPI):
    def submit(
        self,
        command: Sequence[str],
        *,
        name: str | None = None,
        workers: int = 1,
        resources: Resources | dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        secrets: list[str] | None = None,
        code: str | None = None,
        max_retries: int = 0,
        timeout_s: float | None = None,
        priority: int = 0,
        requirements: Sequence[str] = (),
        spread: bool = False,
        node_selector: dict[str, str] | None = None,
    ) -> Job:
        """Queue ``command`` on ``workers`` processes started together (torch.distributed env set).

        ``code`` is the storage path of a zip of the working directory (``nubis job submit`` makes
        and uploads it); ``python`` in the command is the platform's interpreter, or a cached
        virtualenv over it with the ``requirements`` (pip lines) it lacks. ``spread`` puts each
        worker on a different node; ``node_selector`` keeps them on nodes with those labels."""
        body: dict[str, Any] = {
            "name": name, "command": list(command), "workers": workers, "env": env or {},
            "secrets": secrets or [], "code": code, "max_retries": max_retries, "timeout_s": timeout_s,
            "priority": priority, "requirements": list(requirements), "spread": spread,
            "node_selector": node_selector or {},
        }
        if resources is not None:
            body["resources"] = _resources(resources)
        return Job.model_validate(self._t.json("POST", "/jobs", json=body))

    def list(self, *, status: str | None = None, limit: int = 100) -> list[Job]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        return [Job.model_validate(j) for j in self._t.json("GET", "/jobs", params=params)]

    def get(self, ref: str) -> Job:
        """By id, or the latest job with that name."""
        return Job.model_validate(self._t.json("GET", f"/jobs/{ref}"))

    def cancel(self, ref: str) -> Job:
        return Job.model_validate(self._t.json("POST", f"/jobs/{ref}/cancel"))

    def events(self, ref: str, *, limit: int = 100) -> list[JobEvent]:
        return [JobEvent.model_validate(e) for e in self._t.json("GET", f"/jobs/{ref}/events",
                                                                  params={"limit": limit})]

    def outputs(self, ref: str) -> list[StorageObject]:
        """The files the job left in ``NUBIS_OUTPUT_DIR`` (storage paths under ``job.outputs``)."""
        return [StorageObject.model_validate(o) for o in self._t.json("GET", f"/jobs/{ref}/outputs")]

    def get_outputs(self, ref: str, dest: str | Path) -> list[Path]:
        """Download the job's outputs into ``dest`` (their layout kept); the files written."""
        job = self.get(ref)
        prefix = job_outputs_path(job.id)
        storage = StorageAPI(self._t)
        written = []
        for obj in self.outputs(job.id):
            rel = obj.path[len(prefix):].lstrip("/")
            if not obj.path.startswith(prefix + "/") or normalize_path(rel) != rel:
                raise BadRequestError(f"refusing to write {obj.path!r} outside {dest}")
            written.append(storage.get(obj.path, Path(dest) / rel))
        return written

    def logs(self, ref: str, *, worker: int = 0, tail: int = 100, attempt: int | None = None) -> list[str]:
        params: dict[str, Any] = {"worker": worker, "tail": tail}
        if attempt is not None:
            params["attempt"] = attempt
        return list(self._t.json("GET", f"/jobs/{ref}/logs", params=params))

    def follow_logs(self, ref: str, *, worker: int = 0, tail: int = 100) -> Iterator[str]:
        """One worker's output as it is written, through retries, until the job ends."""
        params = {"worker": worker, "tail": tail}
        with self._t.stream("GET", f"/jobs/{ref}/logs/follow", params=params,
                            timeout=httpx.Timeout(10.0, read=None)) as response:
            yield from response.iter_lines()

    def wait(self, ref: str, *, timeout: float | None = None,
             on_update: Callable[[Job], None] | None = None) -> Job:
        """Poll until the job ends (succeeded, failed or cancelled); returns it either way."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(ref)
            if on_update is not None:
                on_update(job)
            if job.status in TERMINAL_JOB_STATUSES:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise JobTimeoutError(f"job {job.name} is still {job.status} after {timeout:g} s")
            time.sleep(POLL_S)

    def train(
        self,
        model: str,
        data: str,
        *,
        epochs: int = 10,
        workers: int = 1,
        name: str | None = None,
        batch_size: int = 64,
        learning_rate: float | None = None,
        amp: bool = False,
        label_column: str = "label",
        resources: Resources | dict[str, Any] | None = None,
        max_retries: int = 2,
        priority: int = 0,
        spread: bool = False,
        node_selector: dict[str, str] | None = None,
    ) -> Job:
        """``POST /api/v1/train``: queue the built-in trainer; returns at once (``wait`` for it).
        ``spread`` and ``node_selector`` place the workers as for :meth:`submit`."""
        body: dict[str, Any] = {
            "model_name": model, "data_path": data, "num_epochs": epochs, "num_workers": workers,
            "name": name, "batch_size": batch_size, "learning_rate": learning_rate, "amp": amp,
            "label_column": label_column, "max_retries": max_retries, "priority": priority,
            "spread": spread, "node_selector": node_selector or {},
        }
        if resources is not None:
            body["resources"] = _resources(resources)
        return Job.model_validate(self._t.json("POST", "/train", json=body))

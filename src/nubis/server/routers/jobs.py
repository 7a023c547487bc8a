"""/api/v1/jobs and /api/v1/train."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from nubis.models.jobs import Job, JobEvent, JobSpec, JobStatus, MetricsReport, TrainRequest
from nubis.models.limits import MAX_VERSION
from nubis.models.storage import StorageObject
from nubis.server.deps import Context, Reader, Session, Writer
from nubis.server.services import job_outputs, jobs, models

router = APIRouter(prefix="/api/v1", tags=["jobs"])


@router.post("/jobs", status_code=201)
async def create_job(spec: JobSpec, caller: Writer, session: Session, ctx: Context) -> Job:
    """Queue a job; it starts once all its workers fit (watch `status` and `reason`)."""
    return await jobs.create(session, ctx, caller, spec)


@router.get("/jobs")
async def list_jobs(
    caller: Reader, session: Session, status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Job]:
    """The newest jobs first."""
    return await jobs.list_jobs(session, caller, status=status.value if status else None, limit=limit)


@router.get("/jobs/{ref}")
async def get_job(ref: str, caller: Reader, session: Session) -> Job:
    """A job by id, or the latest job with that name."""
    return await jobs.get(session, caller, ref)


@router.post("/jobs/{ref}/cancel")
async def cancel_job(ref: str, caller: Writer, session: Session) -> Job:
    """Stop its workers; the job ends as `cancelled`."""
    return await jobs.cancel(session, caller, ref)


@router.get("/jobs/{ref}/events")
async def job_events(
    ref: str, caller: Reader, session: Session, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[JobEvent]:
    return await jobs.events(session, caller, ref, limit=limit)


@router.get("/jobs/{ref}/outputs")
async def job_outputs_list(ref: str, caller: Reader, session: Session, ctx: Context) -> list[StorageObject]:
    """The files its workers left in `NUBIS_OUTPUT_DIR`, copied to storage when each attempt ended
    (fetch them with `GET /api/v1/storage/{path}`)."""
    return await job_outputs.list_outputs(session, ctx, caller, ref)


@router.get("/jobs/{ref}/logs")
async def job_logs(
    ref: str, caller: Reader, session: Session, ctx: Context,
    worker: Annotated[int, Query(ge=0, le=1000)] = 0,
    tail: Annotated[int, Query(ge=1, le=10000)] = 100,
    attempt: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None,
) -> list[str]:
    """The last lines of one worker's output (current attempt unless `attempt` is given)."""
    return await jobs.logs(session, ctx, caller, ref, worker=worker, tail=tail, attempt=attempt)


@router.get("/jobs/{ref}/logs/follow", response_class=StreamingResponse,
            responses={200: {"content": {"text/plain": {}}, "description": "lines as they are written"}})
async def follow_job_logs(
    ref: str, caller: Reader, session: Session, ctx: Context,
    worker: Annotated[int, Query(ge=0, le=1000)] = 0,
    tail: Annotated[int, Query(ge=0, le=10000)] = 100,
) -> StreamingResponse:
    """One worker's output as it is written (text, one line each), through retries, until the job ends."""
    row = await jobs.get_row_or_raise(session, caller, ref)
    jobs.check_worker(row, worker)
    lines = jobs.follow_logs(ctx, row.id, worker=worker, tail=tail)
    return StreamingResponse((f"{line}\n" async for line in lines), media_type="text/plain; charset=utf-8")


@router.post("/jobs/{ref}/metrics", status_code=204)
async def report_metrics(ref: str, report: MetricsReport, caller: Writer, session: Session) -> None:
    """Workers report metrics here (the trainer: once per epoch, with the job's own token)."""
    await jobs.report_metrics(session, caller, ref, report)


@router.post("/train", status_code=202, tags=["train"])
async def train(request: TrainRequest, caller: Writer, session: Session, ctx: Context) -> Job:
    """Queue a training job; returns at once. Its result becomes a model version (`model`)."""
    return await models.train(session, ctx, caller, request)

"""/jobs: the queue (paged, by status and name, with why each waits), a job's page with its workers,
per-epoch chart and per-rank logs that follow (Server-Sent Events), events, outputs, cancel."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from nubis.errors import NotFoundError, ValidationError
from nubis.models.jobs import TERMINAL_JOB_STATUSES, Job, JobStatus
from nubis.server.console.auth import ConsolePage, Page, Writer, live_caller
from nubis.server.console.job_logs import follow_ranks
from nubis.server.console.live import sse, stream
from nubis.server.console.paging import Paged, clamp_page
from nubis.server.console.responses import ConsoleRoute
from nubis.server.console.streams import while_logged_in
from nubis.server.console.templating import render, render_text
from nubis.server.context import ServerContext
from nubis.server.deps import Context, Session
from nubis.server.services import job_outputs, jobs

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
STATUSES = [s.value for s in JobStatus if s is not JobStatus.unknown]
LOG_TAIL = 500
LIVE_RANKS = 8
"""Ranks whose logs a job's page follows live (every rank has its plain-text log)."""
TEXT_TAIL = 5000
POLL_S = 1.0
MAX_PAGE = 100_000
NOT_CHARTED = ("epoch", "epochs", "elapsed_s")
"""The x axis, and the trainer's time since the start (a straight line, not a metric)."""
Rank = Annotated[int, Path(ge=0, le=1000)]


def check_status(status: str) -> str | None:
    if status and status not in STATUSES:
        raise ValidationError(f"unknown job status {status!r}: choose one of {', '.join(STATUSES)}")
    return status or None


@router.get("/jobs")
async def job_list(
    request: Request, page: Page, session: Session,
    status: Annotated[str, Query(max_length=32)] = "",
    name: Annotated[str, Query(max_length=63)] = "",
    n: Annotated[int, Query(alias="page", ge=1, le=MAX_PAGE)] = 1,
) -> HTMLResponse:
    wanted, part = check_status(status), name.strip() or None
    total = await jobs.count_jobs(session, page.caller, status=wanted, name=part)
    pager = Paged(page=clamp_page(n, total), total=total, filters={"status": status, "name": name.strip()})
    shown = await jobs.list_jobs(session, page.caller, status=wanted, name=part, limit=pager.size,
                                 offset=pager.offset)
    return render(request, "jobs.html", {"page": page, "jobs": shown, "pager": pager, "statuses": STATUSES,
                                         "status": status, "name": name.strip()})


@router.get("/jobs/{ref}")
async def job_detail(request: Request, ref: str, page: Page, session: Session, ctx: Context) -> HTMLResponse:
    job = await jobs.get(session, page.caller, ref)
    return render(request, "job.html", {
        "page": page, "job": job, "ended": job.status in TERMINAL_JOB_STATUSES,
        "events": await jobs.events(session, page.caller, job.id, limit=100),
        "outputs": await job_outputs.list_outputs(session, ctx, page.caller, job.id),
        "series": chart_series(job), "live": live_ranks(job), "ranks": list(range(job.workers)),
    })


def chart_series(job: Job) -> list[str]:
    """The numeric metrics the trainer reported, in the order first seen (the chart's lines)."""
    seen: dict[str, None] = {}
    for record in job.history:
        for key, value in record.items():
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if numeric and key not in NOT_CHARTED:
                seen.setdefault(key, None)
    return list(seen)


@router.post("/jobs/{ref}/cancel")
async def cancel_job(ref: str, page: Writer, session: Session) -> Response:
    job = await jobs.cancel(session, page.caller, ref)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.get("/jobs/{ref}/updates")
async def job_updates(
    request: Request, ref: str, page: Page, session: Session, ctx: Context,
    have: Annotated[int, Query(ge=0, le=jobs.MAX_HISTORY)] = 0,
) -> Response:
    """Events: ``state`` (the status, reason and workers, as HTML), ``metrics`` (each new epoch's
    record, as JSON, after the first ``have``), and ``end`` once the job has ended."""
    job = await jobs.get(session, page.caller, ref)
    await session.close()
    return stream(while_logged_in(ctx, request, _updates(ctx, request, page, job.id, have)), ctx=ctx)


async def _updates(ctx: ServerContext, request: Request, page: ConsolePage, job_id: str,
                   have: int) -> AsyncIterator[str]:
    shown = ""
    while True:
        caller = await live_caller(ctx, request)
        async with ctx.db.sessions() as session:
            try:
                job = await jobs.get(session, caller, job_id)
            except NotFoundError:  # deleted with its workspace meanwhile
                return
        for record in job.history[have:]:
            yield sse("metrics", json.dumps(record))
        have = len(job.history)
        state = render_text("partials/job_state.html", job=job, page=page,
                            ended=job.status in TERMINAL_JOB_STATUSES)
        if state != shown:
            shown = state
            yield sse("state", state)
        if job.status in TERMINAL_JOB_STATUSES:
            return
        await asyncio.sleep(POLL_S)


@router.get("/jobs/{ref}/logs/follow")
async def follow_logs(request: Request, ref: str, page: Page, session: Session, ctx: Context) -> Response:
    """The first ``LIVE_RANKS`` ranks' output as ``rank-N`` events, through retries, until the job ends."""
    job = await jobs.get(session, page.caller, ref)
    await session.close()
    lines = follow_ranks(ctx, job.id, live_ranks(job), tail=LOG_TAIL)
    return stream(while_logged_in(ctx, request, lines), ctx=ctx)


def live_ranks(job: Job) -> list[int]:
    return list(range(min(job.workers, LIVE_RANKS)))


@router.get("/jobs/{ref}/logs/{rank}.txt")
async def logs_text(ref: str, rank: Rank, page: Page, session: Session, ctx: Context) -> PlainTextResponse:
    """The last lines of one rank's output as plain text (the logs without JavaScript)."""
    lines = await jobs.logs(session, ctx, page.caller, ref, worker=rank, tail=TEXT_TAIL)
    return PlainTextResponse("\n".join(lines) + ("\n" if lines else ""))


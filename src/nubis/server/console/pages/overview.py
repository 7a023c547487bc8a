"""/ : the overview: deployments and jobs by status, nodes with their capacity, quota use per
workspace (the platform admin sees every workspace's), recent jobs and events."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from nubis.models.jobs import JobStatus
from nubis.server.console.auth import Page
from nubis.server.console.responses import ConsoleRoute
from nubis.server.console.templating import render
from nubis.server.deps import Context, Session
from nubis.server.services import audit, deployments, jobs, nodes, usage

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
JOB_STATUSES = [s.value for s in JobStatus if s is not JobStatus.unknown]
RECENT = 10


@router.get("/")
async def overview(request: Request, page: Page, session: Session, ctx: Context) -> HTMLResponse:
    caller = page.caller
    deps = await deployments.list_deployments(session, ctx, caller)
    by_status = Counter(str(d.status) for d in deps)
    job_counts = {s: await jobs.count_jobs(session, caller, status=s) for s in JOB_STATUSES}
    recent_jobs = await jobs.list_jobs(session, caller, limit=RECENT)
    quotas = await usage.quota_use(session, None if caller.superuser else caller.workspace_id)
    events = await audit.list_events(session, caller, limit=RECENT) if page.can_manage else []
    deployment_events = await deployments.recent_events(session, caller, limit=RECENT)
    return render(request, "overview.html", {
        "page": page, "deployments": deps, "deployment_counts": sorted(by_status.items()),
        "job_counts": job_counts, "recent_jobs": recent_jobs,
        "nodes": await nodes.list_nodes(session, ctx, caller),
        "quotas": quotas, "events": events, "deployment_events": deployment_events,
    })

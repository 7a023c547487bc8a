"""/metrics: the control plane's Prometheus metrics (an admin token of any workspace)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response

from nubis.metrics_registry import TEXT_FORMAT
from nubis.server.deps import Admin, Context, Session
from nubis.server.services import metrics

router = APIRouter(tags=["system"])


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {TEXT_FORMAT: {}}, "description": "Prometheus text format"}})
async def get_metrics(caller: Admin, session: Session, ctx: Context) -> Response:
    """API requests by route and status, reconciler rounds, the job queue by workspace and reason,
    replicas and job workers by status. See docs/observability.md."""
    counts = await metrics.counts(session, now=time.time())
    return Response(ctx.metrics.render(counts), media_type=TEXT_FORMAT)

"""/api/v1/prometheus — what a Prometheus scrapes (HTTP service discovery)."""

from __future__ import annotations

from fastapi import APIRouter

from nubis.models.prometheus import TargetGroup
from nubis.server.deps import Admin, Context, Session
from nubis.server.services import prometheus

router = APIRouter(prefix="/api/v1/prometheus", tags=["system"])


@router.get("/targets")
async def get_targets(caller: Admin, session: Session, ctx: Context) -> list[TargetGroup]:
    """Prometheus HTTP service discovery (``http_sd_configs``): the control plane, every ready
    replica of the caller's workspace (scraped through the gateway), and for the platform admin the
    gateway and every workspace's replicas. See docs/observability.md."""
    return await prometheus.targets(session, ctx, caller)

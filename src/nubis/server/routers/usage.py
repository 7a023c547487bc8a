"""/api/v1/usage — resource-seconds per workspace, deployment or job, a cost, quotas beside them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from nubis.models.usage import Prices, Usage, UsageBy, given_prices, parse_since
from nubis.server.deps import Reader, Session
from nubis.server.orm import utcnow
from nubis.server.services import usage

router = APIRouter(prefix="/api/v1/usage", tags=["usage"])

Price = Annotated[float | None, Query(ge=0, allow_inf_nan=False)]


@router.get("")
async def get_usage(
    caller: Reader,
    session: Session,
    since: Annotated[str, Query(max_length=64, description="'1h', '30d', '2w', or an ISO-8601 time")] = "30d",
    by: UsageBy = UsageBy.workspace,
    daily: Annotated[bool, Query(description="one row per UTC day as well")] = False,
    all_workspaces: Annotated[bool, Query(description="every workspace (platform admin only)")] = False,
    cpu_hour: Price = None,
    memory_gib_hour: Price = None,
    gpu_hour: Price = None,
) -> Usage:
    """CPU-, GiB- and GPU-seconds held by replicas and job workers since ``since`` (a running one up
    to now); with any price, a cost per row. See docs/operations.md, "Usage"."""
    now = utcnow()
    given = given_prices(cpu_hour=cpu_hour, memory_gib_hour=memory_gib_hour, gpu_hour=gpu_hour)
    return await usage.get_usage(session, caller, since=parse_since(since, now=now), by=by, daily=daily,
                                 all_workspaces=all_workspaces, prices=Prices(**given) if given else None,
                                 now=now)

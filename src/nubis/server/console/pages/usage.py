"""/usage: CPU-, memory- and GPU-hours per workspace, deployment or job (and day) over a window, a
cost when prices are given, and each workspace's quota use beside it — the same service as
``GET /api/v1/usage`` and ``nubis usage``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from nubis.models.usage import Prices, UsageBy, given_prices, parse_since
from nubis.server.console.auth import Page
from nubis.server.console.responses import ConsoleRoute
from nubis.server.console.templating import render
from nubis.server.deps import Session
from nubis.server.orm import utcnow
from nubis.server.services import usage

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
Price = Annotated[float | None, Query(ge=0, le=1e9, allow_inf_nan=False)]
MAX_ROWS = 500
"""Rows shown (the total counts them all; the CLI and the API give every row)."""


@router.get("/usage")
async def usage_page(
    request: Request, page: Page, session: Session,
    since: Annotated[str, Query(max_length=64)] = "30d",
    by: UsageBy = UsageBy.workspace,
    daily: bool = False,
    all_workspaces: Annotated[bool, Query(alias="all")] = False,
    cpu_hour: Price = None,
    memory_gib_hour: Price = None,
    gpu_hour: Price = None,
) -> HTMLResponse:
    now = utcnow()
    given = given_prices(cpu_hour=cpu_hour, memory_gib_hour=memory_gib_hour, gpu_hour=gpu_hour)
    every = all_workspaces and page.caller.superuser  # "all" is the platform admin's only
    found = await usage.get_usage(session, page.caller, since=parse_since(since, now=now), by=by,
                                  daily=daily, all_workspaces=every,
                                  prices=Prices(**given) if given else None, now=now)
    return render(request, "usage.html", {
        "page": page, "usage": found, "since": since, "by": by.value, "daily": daily,
        "all_workspaces": every, "prices": given,
        "bys": [b.value for b in UsageBy], "max_rows": MAX_ROWS,
    })

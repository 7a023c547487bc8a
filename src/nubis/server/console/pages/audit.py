"""/audit: who changed what in the workspace, newest first, paged (admins, as in the API)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from nubis.errors import ForbiddenError
from nubis.server.console.auth import Page
from nubis.server.console.paging import Paged, clamp_page
from nubis.server.console.responses import ConsoleRoute
from nubis.server.console.templating import render
from nubis.server.deps import Session
from nubis.server.services import audit

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


@router.get("/audit")
async def audit_log(
    request: Request, page: Page, session: Session,
    action: Annotated[str, Query(max_length=64)] = "",
    n: Annotated[int, Query(alias="page", ge=1, le=1_000_000)] = 1,
) -> HTMLResponse:
    if not page.can_manage:
        raise ForbiddenError(f"a {page.caller.role.value} token cannot read the audit log; ask an admin")
    wanted = action.strip() or None
    total = await audit.count_events(session, page.caller, action=wanted)
    pager = Paged(page=clamp_page(n, total), total=total, filters={"action": action.strip()})
    events = await audit.list_events(session, page.caller, action=wanted, limit=pager.size,
                                     offset=pager.offset)
    return render(request, "audit.html", {"page": page, "events": events, "pager": pager,
                                          "action": action.strip()})

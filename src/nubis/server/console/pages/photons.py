"""/photons: the photon registry — names with their latest version, then each name's versions."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from nubis.server.console.auth import Page
from nubis.server.console.responses import ConsoleRoute
from nubis.server.console.templating import render
from nubis.server.deps import Session
from nubis.server.services import photons

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


@router.get("/photons")
async def photon_list(request: Request, page: Page, session: Session) -> HTMLResponse:
    return render(request, "photons.html", {"page": page,
                                            "photons": await photons.list_photons(session, page.caller)})


@router.get("/photons/{name}")
async def photon_versions(request: Request, name: str, page: Page, session: Session) -> HTMLResponse:
    versions = await photons.list_versions(session, page.caller, name)
    return render(request, "photon.html", {"page": page, "name": name, "versions": versions})

"""/nodes: every node with its capacity bars, alive or lost (and why), labels, and the caller's
workloads on it (the platform admin sees every workspace's)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from nubis.server.console.auth import Page
from nubis.server.console.responses import ConsoleRoute
from nubis.server.console.templating import render
from nubis.server.deps import Context, Session
from nubis.server.services import nodes

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


@router.get("/nodes")
async def node_list(request: Request, page: Page, session: Session, ctx: Context) -> HTMLResponse:
    found = await nodes.list_nodes(session, ctx, page.caller)
    return render(request, "nodes.html", {"page": page, "nodes": found})


@router.get("/nodes/{ref}")
async def node_page(request: Request, ref: str, page: Page, session: Session, ctx: Context) -> HTMLResponse:
    node = await nodes.get_node(session, ctx, page.caller, ref)
    return render(request, "node.html", {"page": page, "node": node})

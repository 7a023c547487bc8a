"""/workspaces: every workspace with its quotas (the platform admin only, as in the API): create,
set quotas, delete after a confirmation."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from nubis.errors import ForbiddenError, ValidationError
from nubis.models.resources import parse_bytes
from nubis.models.workspaces import QuotaRequest, WorkspaceCreateRequest
from nubis.server.console.auth import ConsolePage, Page
from nubis.server.console.auth import Form as CheckedForm
from nubis.server.console.forms import parse_form
from nubis.server.console.responses import ConsoleRoute
from nubis.server.console.templating import render
from nubis.server.deps import Context, Session
from nubis.server.services import workspaces

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
Field = Annotated[str, Form(max_length=32)]


def platform_admin(page: ConsolePage) -> ConsolePage:
    if not page.caller.superuser:
        raise ForbiddenError("only the platform admin token can manage workspaces")
    return page


@router.get("/workspaces")
async def workspace_list(request: Request, page: Page, session: Session) -> HTMLResponse:
    platform_admin(page)
    found = await workspaces.list_visible(session, page.caller)
    return render(request, "workspaces.html", {"page": page, "workspaces": found})


@router.post("/workspaces")
async def create_workspace(page: CheckedForm, session: Session, ctx: Context,
                           name: Annotated[str, Form(max_length=63)], storage_quota: Field = "") -> Response:
    platform_admin(page)
    quota = size_or_none(storage_quota, "storage")
    wanted = parse_form(WorkspaceCreateRequest, {"name": name.strip(), "storage_quota_bytes": quota})
    await workspaces.create(session, page.caller, wanted, contained=ctx.members_contained)
    return RedirectResponse("/workspaces", status_code=303)


def size_or_none(text: str, what: str) -> int | None:
    """'' → no quota; '10Gi', '500M', bytes → bytes."""
    if not text.strip():
        return None
    try:
        return parse_bytes(text.strip())
    except ValueError as exc:
        raise ValidationError(f"{what} quota: {exc}") from None


@router.post("/workspaces/{name}/quota")
async def set_quota(name: str, page: CheckedForm, session: Session, cpu: Field = "", memory: Field = "",
                    gpu: Field = "", storage: Field = "") -> Response:
    """Every field is sent: an empty one removes that quota."""
    platform_admin(page)
    values: dict[str, Any] = {"cpu_quota": cpu.strip() or None, "gpu_quota": gpu.strip() or None,
                              "memory_quota": size_or_none(memory, "memory"),
                              "storage_quota_bytes": size_or_none(storage, "storage")}
    await workspaces.set_quota(session, page.caller, name, parse_form(QuotaRequest, values))
    return RedirectResponse("/workspaces", status_code=303)


@router.get("/workspaces/{name}/delete")
async def confirm_delete(request: Request, name: str, page: Page, session: Session) -> HTMLResponse:
    platform_admin(page)
    found = await workspaces.get_visible_or_raise(session, page.caller, name)
    if found.name == workspaces.DEFAULT_WORKSPACE or found.id == page.caller.workspace_id:
        raise ForbiddenError("the default workspace, and the one you are acting in, cannot be deleted")
    return render(request, "confirm.html", {
        "page": page, "title": f"Delete workspace {found.name}?",
        "action": f"/workspaces/{found.name}/delete",
        "message": "Its deployments, jobs, models, secrets, tokens and files are deleted for good.",
        "fields": {}, "back": "/workspaces"})


@router.post("/workspaces/{name}/delete")
async def delete_workspace(name: str, page: CheckedForm, session: Session, ctx: Context) -> Response:
    platform_admin(page)
    await workspaces.delete(session, page.caller, ctx.store, name)
    return RedirectResponse("/workspaces", status_code=303)

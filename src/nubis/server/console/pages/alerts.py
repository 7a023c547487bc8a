"""/alerts: current alerts with their state, the rules with this workspace's thresholds, silences
(writers create and delete them) and the latest webhook deliveries. Thresholds and the webhook are
changed from the CLI or the API (admins)."""

from __future__ import annotations

from typing import Annotated

import pydantic
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from nubis.errors import ValidationError
from nubis.models.alerts import MAX_COMMENT, SilenceRequest
from nubis.server.console.auth import Page, Writer
from nubis.server.console.responses import ConsoleRoute
from nubis.server.console.templating import render
from nubis.server.deps import Session
from nubis.server.services import alerts

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
DELIVERIES_SHOWN = 20


@router.get("/alerts")
async def alert_page(request: Request, page: Page, session: Session) -> HTMLResponse:
    caller = page.caller
    webhook = None
    if await alerts.has_webhook(session, caller):
        webhook = await alerts.get_webhook_or_raise(session, caller)
    return render(request, "alerts.html", {
        "page": page, "webhook": webhook,
        "alerts": await alerts.list_alerts(session, caller),
        "rules": await alerts.list_rules(session, caller),
        "silences": await alerts.list_silences(session, caller),
        "deliveries": await alerts.list_deliveries(session, caller, limit=DELIVERIES_SHOWN),
    })


@router.post("/alerts/silences")
async def create_silence(page: Writer, session: Session,
                         duration: Annotated[str, Form(max_length=32)],
                         rule: Annotated[str, Form(max_length=64)] = "",
                         object: Annotated[str, Form(max_length=200)] = "",
                         comment: Annotated[str, Form(max_length=MAX_COMMENT)] = "") -> Response:
    try:
        request = SilenceRequest(rule=rule.strip() or None, object=object.strip() or None,
                                 duration=duration.strip(), comment=comment.strip())
    except pydantic.ValidationError as exc:
        fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValidationError(f"invalid silence: {fields}") from None
    await alerts.create_silence(session, page.caller, request)
    return RedirectResponse("/alerts", status_code=303)


@router.post("/alerts/silences/{silence_id}/delete")
async def delete_silence(silence_id: str, page: Writer, session: Session) -> Response:
    await alerts.delete_silence(session, page.caller, silence_id)
    return RedirectResponse("/alerts", status_code=303)

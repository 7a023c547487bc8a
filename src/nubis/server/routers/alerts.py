"""/api/v1/alerts — current alerts, rules (admins change thresholds), silences (writers), the webhook
(admins), a test notification (admins) and the delivery log. See docs/alerts.md."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from nubis.models.alerts import (
    Alert,
    AlertDelivery,
    AlertRule,
    AlertRuleUpdate,
    AlertState,
    AlertTestResult,
    Silence,
    SilenceRequest,
    Webhook,
    WebhookCreated,
    WebhookSetRequest,
)
from nubis.server.deps import Admin, Context, Reader, Session, Writer
from nubis.server.services import alerts

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])
RuleName = Annotated[str, Path(max_length=64)]


@router.get("")
async def list_alerts(caller: Reader, session: Session, state: AlertState | None = None) -> list[Alert]:
    """Firing, pending and (for a day) resolved alerts of the workspace."""
    return await alerts.list_alerts(session, caller, state=state.value if state else None)


@router.get("/rules")
async def list_rules(caller: Reader, session: Session) -> list[AlertRule]:
    """Every rule with its effective settings (nubis's defaults and this workspace's overrides)."""
    return await alerts.list_rules(session, caller)


@router.patch("/rules/{rule}")
async def update_rule(rule: RuleName, update: AlertRuleUpdate, caller: Admin, session: Session) -> AlertRule:
    """Override settings of a rule for this workspace (``set``), or go back to defaults (``reset``)."""
    return await alerts.update_rule(session, caller, rule, update)


@router.get("/silences")
async def list_silences(caller: Reader, session: Session) -> list[Silence]:
    return await alerts.list_silences(session, caller)


@router.post("/silences", status_code=201)
async def create_silence(request: SilenceRequest, caller: Writer, session: Session) -> Silence:
    """No notifications for a rule and/or object until the silence ends (alerts are still listed)."""
    return await alerts.create_silence(session, caller, request)


@router.delete("/silences/{silence_id}", status_code=204)
async def delete_silence(silence_id: Annotated[str, Path(max_length=64)], caller: Writer,
                         session: Session) -> None:
    await alerts.delete_silence(session, caller, silence_id)


@router.put("/webhook")
async def set_webhook(request: WebhookSetRequest, caller: Admin, session: Session,
                      ctx: Context) -> WebhookCreated:
    """Set the workspace's webhook; the answer carries the signing secret, this once."""
    return await alerts.set_webhook(session, ctx, caller, request)


@router.get("/webhook")
async def get_webhook(caller: Reader, session: Session) -> Webhook:
    """The webhook's format and host (its URL and secret are never shown)."""
    return await alerts.get_webhook_or_raise(session, caller)


@router.delete("/webhook", status_code=204)
async def delete_webhook(caller: Admin, session: Session) -> None:
    await alerts.delete_webhook(session, caller)


@router.post("/test")
async def test_webhook(caller: Admin, session: Session, ctx: Context) -> AlertTestResult:
    """Send a signed test notification to the webhook now and say how it went."""
    return await alerts.test_webhook(session, ctx, caller)


@router.get("/deliveries")
async def list_deliveries(
    caller: Reader, session: Session, limit: Annotated[int, Query(ge=1, le=alerts.DELIVERIES_SHOWN)] = 50,
) -> list[AlertDelivery]:
    """The latest delivery attempts, newest first."""
    return await alerts.list_deliveries(session, caller, limit=limit)

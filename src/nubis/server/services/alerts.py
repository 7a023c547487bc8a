"""Alerts for the API and the console: current alerts, rules with a workspace's overrides, silences,
the webhook (admins only; URL and signing secret encrypted, the secret shown once) and its delivery
log, and a test notification. Everything is scoped to the caller's workspace."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.errors import NotFoundError, ValidationError
from nubis.models.alerts import (
    Alert,
    AlertDelivery,
    AlertRule,
    AlertRuleUpdate,
    AlertTestResult,
    Silence,
    SilenceRequest,
    Webhook,
    WebhookCreated,
    WebhookFormat,
    WebhookSetRequest,
)
from nubis.models.durations import parse_duration
from nubis.server.context import ServerContext
from nubis.server.deps import Caller
from nubis.server.orm import (
    AlertDeliveryRow,
    AlertRuleSettingsRow,
    AlertSilenceRow,
    AlertStateRow,
    AlertWebhookRow,
    utcnow,
)
from nubis.server.scheduler.alerts import (
    RULES,
    effective,
    get_rule_or_raise,
    parse_setting,
)
from nubis.server.services import audit
from nubis.server.services.alert_delivery import (
    Message,
    associated,
    check_url,
    http_client,
    logged,
    open_target,
    send,
)

SECRET_PREFIX = "whsec_"
MAX_SILENCE = timedelta(days=365)
DELIVERIES_SHOWN = 200


def _silenced(alert: AlertStateRow, silences: list[AlertSilenceRow]) -> bool:
    return any(s.rule in (None, alert.rule) and s.object in (None, alert.object) for s in silences)


async def active_silences(session: AsyncSession, caller: Caller) -> list[AlertSilenceRow]:
    return list((await session.scalars(select(AlertSilenceRow).where(
        AlertSilenceRow.workspace_id == caller.workspace_id, AlertSilenceRow.until > utcnow())
        .order_by(AlertSilenceRow.until))).all())


async def list_alerts(session: AsyncSession, caller: Caller, *, state: str | None = None) -> list[Alert]:
    """Firing first, then pending, then resolved (kept a day); newest first within each."""
    query = select(AlertStateRow).where(AlertStateRow.workspace_id == caller.workspace_id)
    if state:
        query = query.where(AlertStateRow.state == state)
    rows = (await session.scalars(query)).all()
    silences = await active_silences(session, caller)
    order = {"firing": 0, "pending": 1, "resolved": 2}
    rows = sorted(rows, key=lambda r: (order.get(r.state, 3), -r.since.timestamp(), r.key))
    return [Alert(rule=r.rule, object=r.object, key=r.key, state=r.state, since=r.since,
                  started_at=r.started_at, resolved_at=r.resolved_at, last_notified_at=r.last_notified_at,
                  summary=r.summary,
                  details=r.details or {}, silenced=_silenced(r, silences)) for r in rows]


async def _overrides(session: AsyncSession, caller: Caller) -> dict[str, AlertRuleSettingsRow]:
    rows = await session.scalars(select(AlertRuleSettingsRow)
                                 .where(AlertRuleSettingsRow.workspace_id == caller.workspace_id))
    return {r.rule: r for r in rows.all()}


async def list_rules(session: AsyncSession, caller: Caller) -> list[AlertRule]:
    rows = await _overrides(session, caller)
    own = {name: row.settings or {} for name, row in rows.items()}
    settings = effective(own)
    return [AlertRule(name=name, description=d.description, settings=settings[name],
                      overridden=sorted(k for k in own.get(name, {}) if k in d.defaults))
            for name, d in RULES.items()]


async def update_rule(session: AsyncSession, caller: Caller, rule: str, update: AlertRuleUpdate) -> AlertRule:
    """Admins set keys (checked one by one) or put them back to their defaults."""
    definition = get_rule_or_raise(rule)
    if not update.set and not update.reset:
        raise ValidationError("nothing to change: give key=value pairs to set, or keys to reset")
    parsed = {key: parse_setting(rule, key, value) for key, value in update.set.items()}
    for key in update.reset:
        if key not in definition.defaults:
            raise ValidationError(f"rule {rule} has no setting {key!r}; "
                                  f"it has: {', '.join(definition.defaults)}")
    row = (await _overrides(session, caller)).get(rule)
    if row is None:
        row = AlertRuleSettingsRow(workspace_id=caller.workspace_id, rule=rule, settings={})
        session.add(row)
    merged = {k: v for k, v in {**(row.settings or {}), **parsed}.items() if k not in update.reset}
    row.settings, row.updated_at = merged, utcnow()
    audit.record(session, caller, "alert.rule", rule, {"set": parsed, "reset": update.reset})
    await session.commit()
    return next(r for r in await list_rules(session, caller) if r.name == rule)


def _silence(row: AlertSilenceRow, now: datetime) -> Silence:
    return Silence(id=row.id, rule=row.rule, object=row.object, until=row.until, created_by=row.created_by,
                   comment=row.comment, created_at=row.created_at, active=row.until > now)


async def create_silence(session: AsyncSession, caller: Caller, request: SilenceRequest) -> Silence:
    if request.rule is not None:
        get_rule_or_raise(request.rule)
    if request.rule is None and request.object is None:
        raise ValidationError("a silence needs a rule, an object or both (silencing everything would hide "
                              "every alert: disable the rules instead)")
    seconds = parse_duration(request.duration, name="duration", high=MAX_SILENCE.total_seconds())
    if not 0 < seconds <= MAX_SILENCE.total_seconds():
        raise ValidationError("a silence lasts more than 0s and at most 365d, e.g. 2h")
    now = utcnow()
    row = AlertSilenceRow(workspace_id=caller.workspace_id, rule=request.rule, object=request.object,
                          until=now + timedelta(seconds=seconds), created_by=caller.actor,
                          comment=request.comment, created_at=now)
    session.add(row)
    audit.record(session, caller, "alert.silence", f"{request.rule or '*'}/{request.object or '*'}",
                 {"until": row.until.isoformat(), "comment": request.comment})
    await session.commit()
    return _silence(row, now)


async def list_silences(session: AsyncSession, caller: Caller) -> list[Silence]:
    """Active ones, and those that ended in the last day."""
    now = utcnow()
    rows = (await session.scalars(select(AlertSilenceRow).where(
        AlertSilenceRow.workspace_id == caller.workspace_id, AlertSilenceRow.until > now - timedelta(days=1))
        .order_by(AlertSilenceRow.until.desc()))).all()
    return [_silence(r, now) for r in rows]


async def delete_silence(session: AsyncSession, caller: Caller, silence_id: str) -> None:
    row = await session.get(AlertSilenceRow, silence_id) if silence_id.isalnum() else None
    if row is None or row.workspace_id != caller.workspace_id:
        raise NotFoundError(f"silence {silence_id[:40]!r} not found in workspace {caller.workspace!r}")
    await session.delete(row)
    audit.record(session, caller, "alert.unsilence", f"{row.rule or '*'}/{row.object or '*'}")
    await session.commit()


def _webhook(row: AlertWebhookRow) -> Webhook:
    return Webhook(format=row.format, target=row.target, created_by=row.created_by, created_at=row.created_at)


async def _webhook_row(session: AsyncSession, caller: Caller) -> AlertWebhookRow | None:
    return await session.get(AlertWebhookRow, caller.workspace_id)


async def set_webhook(session: AsyncSession, ctx: ServerContext, caller: Caller,
                      request: WebhookSetRequest) -> WebhookCreated:
    """Replace the workspace's webhook; a new signing secret each time (returned this once)."""
    if request.format not in (WebhookFormat.json, WebhookFormat.slack):
        raise ValidationError("format must be json or slack")
    url = request.url.strip()
    target = check_url(url)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    url_nonce, url_box = ctx.box.encrypt(url.encode(), associated(caller.workspace_id, "url"))
    secret_nonce, secret_box = ctx.box.encrypt(secret.encode(), associated(caller.workspace_id, "secret"))
    row = await _webhook_row(session, caller)
    if row is None:
        row = AlertWebhookRow(workspace_id=caller.workspace_id)
        session.add(row)
    row.format, row.target, row.created_by = request.format.value, target, caller.actor
    row.created_at = utcnow()
    row.url_nonce, row.url_box = url_nonce, url_box
    row.secret_nonce, row.secret_box = secret_nonce, secret_box
    audit.record(session, caller, "alert.webhook.set", target, {"format": request.format.value})
    await session.commit()
    return WebhookCreated(**_webhook(row).model_dump(), signing_secret=secret)


async def has_webhook(session: AsyncSession, caller: Caller) -> bool:
    return await _webhook_row(session, caller) is not None


async def _webhook_row_or_raise(session: AsyncSession, caller: Caller) -> AlertWebhookRow:
    row = await _webhook_row(session, caller)
    if row is None:
        raise NotFoundError(f"workspace {caller.workspace!r} has no alert webhook: "
                            "set one with `nubis alert webhook set URL`")
    return row


async def get_webhook_or_raise(session: AsyncSession, caller: Caller) -> Webhook:
    return _webhook(await _webhook_row_or_raise(session, caller))


async def delete_webhook(session: AsyncSession, caller: Caller) -> None:
    await session.delete(await _webhook_row_or_raise(session, caller))
    audit.record(session, caller, "alert.webhook.delete", caller.workspace)
    await session.commit()


async def test_webhook(session: AsyncSession, ctx: ServerContext, caller: Caller) -> AlertTestResult:
    """One signed test notification now (no retries), logged like any delivery."""
    target = open_target(ctx.box, await _webhook_row_or_raise(session, caller))
    await session.close()  # no connection held while the receiver answers
    message = Message(workspace_id=caller.workspace_id, workspace=caller.workspace, status="test",
                      rule="test", object="webhook", key="test/webhook",
                      summary=f"a test notification from nubis, sent by {caller.actor}",
                      started_at=datetime.now(UTC))
    async with http_client() as http:
        result = await send(http, target, message)
    session.add(logged(message, 1, result))
    await session.commit()
    return AlertTestResult(delivery=message.delivery, ok=result.ok, status_code=result.status_code,
                           error=result.error, elapsed_ms=round(result.elapsed_ms, 1))


async def list_deliveries(session: AsyncSession, caller: Caller, *, limit: int = 50) -> list[AlertDelivery]:
    rows = (await session.scalars(select(AlertDeliveryRow).where(
        AlertDeliveryRow.workspace_id == caller.workspace_id)
        .order_by(AlertDeliveryRow.id.desc()).limit(min(limit, DELIVERIES_SHOWN)))).all()
    return [AlertDelivery(id=r.id, delivery=r.delivery, status=r.status, rule=r.rule, object=r.object,
                          attempt=r.attempt, status_code=r.status_code, error=r.error, ok=r.ok, at=r.at)
            for r in rows]

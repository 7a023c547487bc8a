"""Webhook delivery of alert notifications: the body (nubis's JSON envelope or Slack's ``{"text"}``),
the HMAC-SHA256 signature, and a background dispatcher that retries with exponential backoff and logs
every attempt in ``alert_deliveries``. The evaluator only hands messages over: it never waits on a
receiver."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.exceptions import InvalidTag
from sqlalchemy import select

from nubis.errors import NubisError, ValidationError
from nubis.http_clients import async_client
from nubis.models.alerts import WebhookFormat
from nubis.server.context import ServerContext
from nubis.server.orm import AlertDeliveryRow, AlertWebhookRow, new_id
from nubis.server.security import SecretBox

log = logging.getLogger("nubis.alerts")
SIGNATURE_HEADER = "X-Nubis-Signature"
ATTEMPTS = 5
TIMEOUT_S = 10.0
MAX_PENDING = 1000
CONCURRENCY = 8
USER_AGENT = "nubis-alerts/1"


@dataclass(frozen=True)
class Message:
    """One notification to one workspace's webhook."""

    workspace_id: str
    workspace: str
    status: str  # firing, resolved or test
    rule: str
    object: str
    key: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    started_at: datetime | None = None
    resolved_at: datetime | None = None
    delivery: str = field(default_factory=new_id)


@dataclass(frozen=True)
class Target:
    format: str
    url: str
    secret: str


@dataclass(frozen=True)
class Attempt:
    status_code: int | None
    error: str | None
    elapsed_ms: float
    refused: bool = False
    """Not sent: the host is an address no webhook may reach (never retried)."""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        if self.refused:
            return False
        return self.status_code is None or self.status_code in (408, 425, 429) or self.status_code >= 500


METADATA_V6 = ipaddress.ip_network("fd00:ec2::254/128")  # AWS's instance metadata over IPv6


def unreachable_address(address: str) -> bool:
    """An address no webhook may reach: link-local (cloud instance metadata at 169.254.169.254, where
    a workspace admin's URL could read the host's credentials through the control plane),
    unspecified, multicast or reserved. Loopback and private networks stay allowed: receivers on
    the same host or LAN are what self-hosted teams run (Mattermost, an internal relay)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:  # ::1 lies in IPv6's reserved ::/8
        return False
    return ip.is_link_local or ip.is_unspecified or ip.is_multicast or ip.is_reserved or ip in METADATA_V6


async def refused_host(host: str, port: int | None) -> str | None:
    """Why ``host`` is refused (it is, or resolves to, an unreachable address), or None. Resolved
    again before every delivery: a name can point elsewhere after the URL was checked."""
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None  # the POST reports the resolution error itself
    for *_, sockaddr in found:
        if unreachable_address(str(sockaddr[0])):
            return f"refused: the webhook's host resolves to {sockaddr[0]} (link-local or reserved)"
    return None


def check_url(url: str) -> str:
    """Only absolute http(s) URLs with a host; returns what may be shown (scheme and host)."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        port = parts.port
    except ValueError:
        raise ValidationError("the webhook URL cannot be read: give an http(s) URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValidationError("the webhook URL must be http:// or https:// with a host, "
                              "e.g. https://hooks.slack.com/services/…")
    if any(c.isspace() or ord(c) < 32 for c in url.strip()):
        raise ValidationError("the webhook URL must not contain spaces or control characters")
    try:
        refused = unreachable_address(host)
    except ValueError:  # a name: checked when it is resolved, before each delivery
        refused = False
    if refused:
        raise ValidationError(f"the webhook URL's address {host} is link-local or reserved (cloud "
                              "instance metadata lives there): give the receiver's own address")
    shown = f"{parts.scheme}://{host}" + (f":{port}" if port else "")
    return shown + ("/…" if parts.path.strip("/") or parts.query else "")


def associated(workspace_id: str, what: str) -> bytes:
    return f"nubis-alert-webhook\0{workspace_id}\0{what}".encode()


def open_target(box: SecretBox, row: AlertWebhookRow) -> Target:
    try:
        url = box.decrypt(row.url_nonce, row.url_box, associated(row.workspace_id, "url")).decode()
        secret = box.decrypt(row.secret_nonce, row.secret_box,
                             associated(row.workspace_id, "secret")).decode()
    except InvalidTag:
        raise NubisError("the webhook cannot be decrypted (the master key changed?): set it again "
                         "with `nubis alert webhook set URL`") from None
    return Target(row.format, url, secret)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def envelope(message: Message, *, now: datetime) -> dict[str, Any]:
    """Version 1 of the JSON envelope (docs/alerts.md lists its fields)."""
    return {"version": 1, "status": message.status, "rule": message.rule, "workspace": message.workspace,
            "object": message.object, "key": message.key, "summary": message.summary,
            "details": message.details, "started_at": _iso(message.started_at),
            "resolved_at": _iso(message.resolved_at), "sent_at": now.isoformat(),
            "delivery": message.delivery}


def body_of(message: Message, fmt: str, *, now: datetime) -> bytes:
    if fmt == WebhookFormat.slack.value:
        mark = {"firing": "[FIRING]", "resolved": "[RESOLVED]"}.get(message.status, "[TEST]")
        text = f"{mark} {message.rule} · {message.object} (workspace {message.workspace}): {message.summary}"
        return json.dumps({"text": text}).encode()
    return json.dumps(envelope(message, now=now), separators=(",", ":")).encode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``t=<unix>,v1=<hex of HMAC-SHA256(secret, "<unix>." + body)>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


async def send(http: httpx.AsyncClient, target: Target, message: Message) -> Attempt:
    """One POST; a connection error or timeout is an attempt too (no status code)."""
    body = body_of(message, target.format, now=datetime.now(UTC))
    headers = {"content-type": "application/json", "user-agent": USER_AGENT,
               SIGNATURE_HEADER: signature(target.secret, int(time.time()), body),
               "X-Nubis-Delivery": message.delivery, "X-Nubis-Event": message.status}
    started = time.perf_counter()
    parts = urlsplit(target.url)
    why = await refused_host(parts.hostname or "", parts.port)
    if why is not None:
        return Attempt(None, why, (time.perf_counter() - started) * 1000, refused=True)
    try:
        response = await http.post(target.url, content=body, headers=headers, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        text = f"{type(exc).__name__}: {exc}".replace(target.url, "<webhook>")
        return Attempt(None, text[:500], (time.perf_counter() - started) * 1000)
    return Attempt(response.status_code, None if response.is_success else f"HTTP {response.status_code}",
                   (time.perf_counter() - started) * 1000)


def logged(message: Message, attempt_no: int, result: Attempt) -> AlertDeliveryRow:
    return AlertDeliveryRow(workspace_id=message.workspace_id, delivery=message.delivery,
                            status=message.status, rule=message.rule, object=message.object[:200],
                            attempt=attempt_no,
                            status_code=result.status_code, error=result.error, ok=result.ok,
                            at=datetime.now(UTC))


def http_client() -> httpx.AsyncClient:
    """No redirects followed (a receiver cannot bounce a signed body elsewhere), no env proxies."""
    return async_client(follow_redirects=False, trust_env=False, timeout=TIMEOUT_S)


class AlertDispatcher:
    """Delivers messages in background tasks: each is tried up to ``ATTEMPTS`` times, waiting
    ``retry_s``, then twice that, … between attempts; each attempt is logged."""

    def __init__(self, ctx: ServerContext, *, retry_s: float | None = None) -> None:
        self.ctx = ctx
        self.retry_s = ctx.settings.alert_retry_s if retry_s is None else retry_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._limit = asyncio.Semaphore(CONCURRENCY)
        self._http: httpx.AsyncClient | None = None

    def submit(self, message: Message) -> None:
        if len(self._tasks) >= MAX_PENDING:
            log.warning("%d alert deliveries pending: dropping %s %s for %s", len(self._tasks),
                        message.status, message.rule, message.object)
            return
        task = asyncio.create_task(self._deliver(message), name=f"alert-delivery-{message.delivery}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, message: Message) -> None:
        try:
            async with self.ctx.db.sessions() as session:
                row = await session.scalar(select(AlertWebhookRow)
                                           .where(AlertWebhookRow.workspace_id == message.workspace_id))
                if row is None:
                    return
                target = open_target(self.ctx.box, row)
            if self._http is None:
                self._http = http_client()
            for attempt_no in range(1, ATTEMPTS + 1):
                async with self._limit:
                    result = await send(self._http, target, message)
                async with self.ctx.db.sessions() as session:
                    session.add(logged(message, attempt_no, result))
                    await session.commit()
                if result.ok or not result.retryable:
                    return
                if attempt_no < ATTEMPTS:
                    await asyncio.sleep(self.retry_s * 2 ** (attempt_no - 1))
            log.warning("alert %s %s for %s: gave up after %d attempts", message.status, message.rule,
                        message.object, ATTEMPTS)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("alert delivery %s failed", message.delivery)

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()

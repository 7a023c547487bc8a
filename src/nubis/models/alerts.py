"""Alerts on the wire: the rules and their thresholds, the alerts they raise, silences, the workspace's
webhook and its delivery log. A webhook's URL and signing secret never come back (the secret is
shown once, when the webhook is set)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nubis.models.deployments import tolerant_enum

MAX_COMMENT = 500
MAX_URL = 2048


class AlertState(enum.StrEnum):
    """pending (the condition holds, not yet for the rule's ``for``) → firing → resolved."""

    pending = "pending"
    firing = "firing"
    resolved = "resolved"
    unknown = "unknown"  # a state this version does not know


class WebhookFormat(enum.StrEnum):
    json = "json"  # nubis's envelope, version 1
    slack = "slack"  # {"text": ...}: Slack's incoming webhooks and the many tools that read it
    unknown = "unknown"  # a format this version does not know


OutputAlertState = Annotated[AlertState, tolerant_enum(AlertState)]
OutputWebhookFormat = Annotated[WebhookFormat, tolerant_enum(WebhookFormat)]


class Alert(BaseModel):
    rule: str
    object: str
    """What the alert is about: a deployment, job or node name, a quota's resource, a folder."""
    key: str
    """The dedupe key: one alert per rule and object."""
    state: OutputAlertState
    since: datetime
    """When it entered its current state."""
    started_at: datetime | None
    """When it started firing (None while pending)."""
    resolved_at: datetime | None
    last_notified_at: datetime | None
    summary: str
    details: dict[str, Any] = Field(default_factory=dict)
    silenced: bool = False


class AlertRule(BaseModel):
    """A rule's effective settings in a workspace: the defaults with the workspace's overrides."""

    name: str
    description: str
    settings: dict[str, Any]
    """Every key with its effective value (durations in seconds)."""
    overridden: list[str] = Field(default_factory=list)
    """The keys this workspace set (the others are nubis's defaults)."""


class AlertRuleUpdate(BaseModel):
    """Body of ``PATCH /api/v1/alerts/rules/{rule}``: keys to set (a duration as ``90s``, ``10m``, ``2h``
    or seconds), and keys to put back to their defaults."""

    model_config = ConfigDict(extra="forbid")

    set: dict[str, str | float | int | bool] = Field(default_factory=dict, max_length=20)
    reset: list[str] = Field(default_factory=list, max_length=20)


class SilenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule: str | None = Field(default=None, max_length=64, description="None: every rule")
    object: str | None = Field(default=None, min_length=1, max_length=200, description="None: every object")
    duration: str = Field(max_length=32, description="how long, e.g. 30m, 2h, 7d")
    comment: str = Field(default="", max_length=MAX_COMMENT)

    @field_validator("rule", "object", "comment")
    @classmethod
    def printable(cls, value: str | None) -> str | None:
        if value is not None and any(ord(c) < 32 and c != "\t" for c in value):
            raise ValueError("must not contain control characters (NUL, newlines …)")
        return value


class Silence(BaseModel):
    id: str
    rule: str | None
    object: str | None
    until: datetime
    created_by: str
    comment: str
    created_at: datetime
    active: bool


class WebhookSetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=8, max_length=MAX_URL, description="http(s) only; stored encrypted")
    format: WebhookFormat = WebhookFormat.json


class Webhook(BaseModel):
    """The workspace's webhook, as shown: its format and the URL's scheme and host only."""

    format: OutputWebhookFormat
    target: str
    """``https://hooks.example.com/…``: the URL's path and query may hold a credential, so never shown."""
    created_by: str
    created_at: datetime


class WebhookCreated(Webhook):
    signing_secret: str
    """Shown once: verify ``X-Nubis-Signature`` with it (see docs/alerts.md)."""


class AlertDelivery(BaseModel):
    """One attempt to deliver one notification."""

    id: int
    delivery: str
    """The notification's id (``X-Nubis-Delivery``): its attempts share it."""
    status: str
    """firing, resolved or test."""
    rule: str
    object: str
    attempt: int
    status_code: int | None
    error: str | None
    ok: bool
    at: datetime


class AlertTestResult(BaseModel):
    delivery: str
    ok: bool
    status_code: int | None
    error: str | None
    elapsed_ms: float

"""``client.alerts``: current alerts, rules and their thresholds, silences, the webhook, a test
notification and the delivery log."""

from __future__ import annotations

from nubis.client.base import ResourceAPI
from nubis.models.alerts import (
    Alert,
    AlertDelivery,
    AlertRule,
    AlertTestResult,
    Silence,
    Webhook,
    WebhookCreated,
    WebhookFormat,
)


class AlertsAPI(ResourceAPI):
    def list(self, state: str | None = None) -> list[Alert]:
        """Firing, pending and recently resolved alerts (``state`` to keep one kind)."""
        params = {"state": state} if state else {}
        return [Alert.model_validate(a) for a in self._t.json("GET", "/alerts", params=params)]

    def rules(self) -> list[AlertRule]:
        return [AlertRule.model_validate(r) for r in self._t.json("GET", "/alerts/rules")]

    def set_rule(self, rule: str, *, settings: dict[str, str | float | bool] | None = None,
                 reset: list[str] | None = None) -> AlertRule:
        """Override settings of ``rule`` for this workspace (admins), e.g. ``{"rate": 0.1, "for": "2m"}``;
        ``reset`` puts keys back to nubis's defaults."""
        body = {"set": settings or {}, "reset": reset or []}
        return AlertRule.model_validate(self._t.json("PATCH", f"/alerts/rules/{rule}", json=body))

    def silence(self, rule: str | None = None, *, object: str | None = None, duration: str = "2h",
                comment: str = "") -> Silence:
        body = {"rule": rule, "object": object, "duration": duration, "comment": comment}
        return Silence.model_validate(self._t.json("POST", "/alerts/silences", json=body))

    def silences(self) -> list[Silence]:
        return [Silence.model_validate(s) for s in self._t.json("GET", "/alerts/silences")]

    def delete_silence(self, silence_id: str) -> None:
        self._t.json("DELETE", f"/alerts/silences/{silence_id}")

    def set_webhook(self, url: str, *, format: WebhookFormat | str = WebhookFormat.json) -> WebhookCreated:
        """Set the workspace's webhook (admins); the answer's ``signing_secret`` is shown this once."""
        body = {"url": url, "format": WebhookFormat(format).value}
        return WebhookCreated.model_validate(self._t.json("PUT", "/alerts/webhook", json=body))

    def webhook(self) -> Webhook:
        return Webhook.model_validate(self._t.json("GET", "/alerts/webhook"))

    def delete_webhook(self) -> None:
        self._t.json("DELETE", "/alerts/webhook")

    def test(self) -> AlertTestResult:
        """Send a signed test notification to the webhook now."""
        return AlertTestResult.model_validate(self._t.json("POST", "/alerts/test"))

    def deliveries(self, limit: int = 50) -> list[AlertDelivery]:
        return [AlertDelivery.model_validate(d)
                for d in self._t.json("GET", "/alerts/deliveries", params={"limit": limit})]

"""Webhook bodies, signatures and URL checks, without a network."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from nubis.errors import ValidationError
from nubis.server.services.alert_delivery import Attempt, Message, body_of, check_url, signature

NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
MESSAGE = Message(workspace_id="w", workspace="team", status="firing", rule="crash_loop", object="web",
                  key="crash_loop/web", summary="deployment web: 3 replica restarts", details={"restarts": 3},
                  started_at=NOW, delivery="d1")


def test_the_json_envelope_has_every_documented_field() -> None:
    body = json.loads(body_of(MESSAGE, "json", now=NOW))
    assert body == {"version": 1, "status": "firing", "rule": "crash_loop", "workspace": "team",
                    "object": "web", "key": "crash_loop/web", "summary": "deployment web: 3 replica restarts",
                    "details": {"restarts": 3}, "started_at": NOW.isoformat(), "resolved_at": None,
                    "sent_at": NOW.isoformat(), "delivery": "d1"}


def test_the_slack_body_is_one_text() -> None:
    assert json.loads(body_of(MESSAGE, "slack", now=NOW)) == {
        "text": "[FIRING] crash_loop · web (workspace team): deployment web: 3 replica restarts"}


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(b"whsec_x", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("whsec_x", 1_700_000_000, body) == f"t=1700000000,v1={expected}"
    assert signature("whsec_y", 1_700_000_000, body) != signature("whsec_x", 1_700_000_000, body)


@pytest.mark.parametrize(("url", "shown"), [
    ("https://hooks.slack.com/services/T0/B0/XXXX", "https://hooks.slack.com/…"),
    ("http://user:secret@10.0.0.5:9000", "http://10.0.0.5:9000"),
    ("https://example.com/?token=abc", "https://example.com/…"),
])
def test_only_scheme_and_host_are_shown(url: str, shown: str) -> None:
    assert check_url(url) == shown


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "javascript:alert(1)", "http://",
                                 "example.com/hook", "http://exa mple.com/", "http://[::1/"])
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError):
        check_url(url)


def test_which_answers_are_retried() -> None:
    assert Attempt(None, "ConnectError", 1).retryable and Attempt(503, "HTTP 503", 1).retryable
    assert Attempt(429, "HTTP 429", 1).retryable and not Attempt(404, "HTTP 404", 1).retryable
    assert Attempt(204, None, 1).ok and not Attempt(500, "HTTP 500", 1).ok

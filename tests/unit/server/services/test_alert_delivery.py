"""Webhook bodies, signatures and URL checks, without a network."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
from datetime import UTC, datetime

import httpx
import pytest

from nubis.errors import ValidationError
from nubis.server.services.alert_delivery import (
    Attempt,
    Message,
    Target,
    body_of,
    check_url,
    send,
    signature,
    unreachable_address,
)

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
                                 "example.com/hook", "http://exa mple.com/", "http://[::1/",
                                 "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/",
                                 "http://[::ffff:169.254.169.254]/", "http://[fd00:ec2::254]/",
                                 "http://0.0.0.0:8400/", "http://224.0.0.1/"])
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError):
        check_url(url)


def test_which_answers_are_retried() -> None:
    assert Attempt(None, "ConnectError", 1).retryable and Attempt(503, "HTTP 503", 1).retryable
    assert Attempt(429, "HTTP 429", 1).retryable and not Attempt(404, "HTTP 404", 1).retryable
    assert Attempt(204, None, 1).ok and not Attempt(500, "HTTP 500", 1).ok


@pytest.mark.parametrize(("address", "refused"), [
    ("169.254.169.254", True), ("fe80::1%eth0", True), ("::ffff:169.254.169.254", True), ("0.0.0.0", True),
    ("240.0.0.1", True), ("127.0.0.1", False), ("10.0.0.5", False), ("192.168.1.20", False), ("::1", False),
    ("203.0.113.7", False),
])
def test_unreachable_addresses(address: str, refused: bool) -> None:
    assert unreachable_address(address) is refused


async def test_a_name_resolving_to_metadata_is_not_sent_nor_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    async def resolve(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        address = "169.254.169.254" if host == "metadata.example" else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolve)
    sent: list[httpx.Request] = []
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(204)))
    async with http:
        refused = await send(http, Target("json", "http://metadata.example/latest", "whsec_x"), MESSAGE)
        assert refused.refused and not refused.retryable and "169.254.169.254" in (refused.error or "")
        assert sent == []
        fine = await send(http, Target("json", "http://receiver.example/hook", "whsec_x"), MESSAGE)
        assert fine.ok and len(sent) == 1

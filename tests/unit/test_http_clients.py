"""The platform's own httpx clients share one SSL context (httpx loads the CA bundle into a new one
for every client otherwise)."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from nubis import http_clients
from nubis.backends.local import readyz


async def test_clients_share_one_ssl_context_made_once(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[ssl.SSLContext] = []
    real = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(ssl, "create_default_context", counting)
    http_clients.tls_context.cache_clear()
    try:
        for _ in range(5):
            async with http_clients.async_client(timeout=1) as client:
                assert client.timeout.read == 1
        assert await readyz("http://127.0.0.1:9") is False  # a probe: nothing listens on the discard port
        assert len(made) == 1
    finally:
        http_clients.tls_context.cache_clear()

"""A webhook receiver for alert tests: an aiohttp server on 127.0.0.1 in a thread of its own (so that
both async in-process tests and blocking end-to-end tests can use it), keeping every request."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def verify(secret: str, header: str, body: bytes, *, tolerance_s: float = 300) -> bool:
    """What docs/alerts.md tells receivers to do: recompute the HMAC over ``t + "." + body``."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    t, mac = parts.get("t", ""), parts.get("v1", "")
    if not t.isdigit() or abs(time.time() - int(t)) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, mac)


@dataclass
class WebhookReceiver:
    url: str = ""
    status: int = 200
    received: list[Received] = field(default_factory=list)

    def events(self, status: str | None = None) -> list[dict[str, Any]]:
        bodies = [r.json for r in list(self.received)]
        return [b for b in bodies if status is None or b.get("status") == status]

    def wait_for(self, predicate: Any, *, timeout: float = 60.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(list(self.received)):
                return list(self.received)
            time.sleep(0.1)
        raise AssertionError(f"the receiver did not get what was expected; it got {self.received}")


@contextmanager
def webhook_receiver(status: int = 200) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(status=status)
    loop = asyncio.new_event_loop()
    runner: web.AppRunner | None = None

    async def handle(request: web.Request) -> web.Response:
        receiver.received.append(Received(dict(request.headers), await request.read()))
        return web.Response(status=receiver.status, text="ok")

    async def start() -> None:
        nonlocal runner
        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        receiver.url = f"http://127.0.0.1:{port}/hooks/nubis?key=k"

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    try:
        yield receiver
    finally:
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()

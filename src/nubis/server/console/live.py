"""Server-Sent Events for the console: a fragment re-sent whenever it changes, lines as they come.
Each update first checks the session again: a logged-out session or a revoked token ends the stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse

from nubis.errors import NubisError
from nubis.server.console.auth import live_caller
from nubis.server.context import ServerContext
from nubis.server.deps import Caller

POLL_S = 1.0


def sse(event: str, html: str) -> str:
    """One SSE message; every line of the fragment gets its own ``data:`` field."""
    return f"event: {event}\n" + "".join(f"data: {line}\n" for line in html.split("\n")) + "\n"


def stream(messages: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(messages, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def fragments(ctx: ServerContext, request: Request, event: str,
                    build: Callable[[Caller], Awaitable[str]], *,
                    poll_s: float = POLL_S) -> AsyncIterator[str]:
    """``build(caller)`` each ``poll_s``, sent when it changed (and once at the start: something may
    have changed between the page's rendering and the stream's start)."""
    last: str | None = None
    while not await request.is_disconnected():
        try:
            caller = await live_caller(ctx, request)
            html = await build(caller)
        except NubisError:
            return
        if html != last:
            yield sse(event, html)
        last = html
        await asyncio.sleep(poll_s)

"""Server-Sent Events for the console's live parts: the wire format, the response, and a guard that
ends a stream once its session is gone (logout, a revoked or expired token)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator

from fastapi import Request
from fastapi.responses import StreamingResponse

from nubis.errors import UnauthorizedError
from nubis.server.console.auth import live_caller
from nubis.server.context import ServerContext

RECHECK_S = 5.0
END = "end"
"""The last event of a stream that is over: pages close their EventSource on it (``sse-close``),
which would otherwise reconnect and replay the stream."""


def sse(event: str, data: str = "") -> str:
    """One event; a multi-line ``data`` is sent as several ``data:`` lines (joined again by the browser)."""
    lines = data.replace("\r", "").split("\n")
    return f"event: {event}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


async def while_logged_in(
    ctx: ServerContext, request: Request, events: AsyncGenerator[str, None]
) -> AsyncIterator[str]:
    """``events`` while the session lives (checked again every ``RECHECK_S``), then :data:`END`."""
    checked = time.monotonic()
    try:
        async with contextlib.aclosing(events):
            async for item in events:
                if time.monotonic() - checked >= RECHECK_S:
                    await live_caller(ctx, request)
                    checked = time.monotonic()
                yield item
    except UnauthorizedError:
        pass
    yield sse(END)


def event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

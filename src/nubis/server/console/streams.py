"""A guard for the console's event streams that follow something (log lines): the stream ends once its
session is gone (logout, a revoked or expired token), with an event that closes the EventSource."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator

from fastapi import Request

from nubis.errors import UnauthorizedError
from nubis.server.console.auth import live_caller
from nubis.server.console.live import sse
from nubis.server.context import ServerContext

RECHECK_S = 5.0
END = "end"
"""The last event of a stream that is over: pages close their EventSource on it (``sse-close``),
which would otherwise reconnect and replay the stream."""


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
    yield sse(END, "")


"""Server-Sent Events for the console: a fragment re-sent whenever it changes, lines as they come.
Each update first checks the session again: a logged-out session or a revoked token ends the stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse

from nubis.errors import NubisError
from nubis.server.console.auth import live_caller
from nubis.server.context import ServerContext
from nubis.server.deps import Caller

POLL_S = 1.0
STOP_CHECK_S = 0.5


def sse(event: str, html: str) -> str:
    """One SSE message; every line of the fragment gets its own ``data:`` field."""
    return f"event: {event}\n" + "".join(f"data: {line}\n" for line in html.split("\n")) + "\n"


def stream(messages: AsyncIterator[str], *, ctx: ServerContext | None = None) -> StreamingResponse:
    """An event stream; with ``ctx``, it ends once the server is stopping (else the server's drain
    would wait for every open console tab)."""
    body = messages if ctx is None else until_stopping(ctx, messages)
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def until_stopping(ctx: ServerContext, messages: AsyncIterator[str]) -> AsyncIterator[str]:
    """``messages`` until they end or the server stops (checked each ``STOP_CHECK_S`` while waiting)."""
    pending: asyncio.Future[str] | None = None
    try:
        while not ctx.stopping:
            if pending is None:
                pending = asyncio.ensure_future(anext(messages))
            done, _ = await asyncio.wait({pending}, timeout=STOP_CHECK_S)
            if not done:
                continue
            finished, pending = pending, None
            try:
                item = finished.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        if isinstance(messages, AsyncGenerator):
            await messages.aclose()


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
        if ctx.stopping:
            return
        await asyncio.sleep(poll_s)

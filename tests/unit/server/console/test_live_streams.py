"""The console's event streams end when the server stops (the drain would otherwise wait for every
open tab), and `nubis up`'s server tells the app it is stopping."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from types import SimpleNamespace

import uvicorn

from nubis.server.console.live import sse, until_stopping
from nubis.server.main import _Server


async def test_a_waiting_stream_ends_once_the_server_is_stopping() -> None:
    ctx = SimpleNamespace(stopping=False)
    closed = asyncio.Event()

    async def quiet() -> AsyncIterator[str]:
        try:
            yield "first"
            await asyncio.Event().wait()  # a log that never says anything again
            yield "never"
        finally:
            closed.set()

    got: list[str] = []

    async def read() -> None:
        async for item in until_stopping(ctx, quiet()):  # type: ignore[arg-type]
            got.append(item)

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.1)
    assert got == ["first"] and not reader.done()
    ctx.stopping = True
    await asyncio.wait_for(reader, 5)
    assert closed.is_set()


async def test_a_stream_that_ends_by_itself_ends_the_same() -> None:
    async def two() -> AsyncIterator[str]:
        yield "a"
        yield "b"

    ctx = SimpleNamespace(stopping=False)
    assert [i async for i in until_stopping(ctx, two())] == ["a", "b"]  # type: ignore[arg-type]


def test_the_signal_handler_marks_the_context_stopping() -> None:
    ctx = SimpleNamespace(stopping=False)
    server = _Server(uvicorn.Config(app=lambda *a: None), ctx)  # type: ignore[arg-type]
    server.handle_exit(signal.SIGTERM, None)
    assert ctx.stopping and server.should_exit


def test_an_event_sends_every_line_of_its_fragment() -> None:
    assert sse("table", "<tr>\n<td>x</td>") == "event: table\ndata: <tr>\ndata: <td>x</td>\n\n"

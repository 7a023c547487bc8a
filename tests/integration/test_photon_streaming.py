"""Streaming handlers: generators become Server-Sent Events ending in `end` or `error`."""

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import pydantic

import nubis
from nubis.client.photon import SSEDecoder
from nubis.errors import HandlerError
from nubis.photon.loader import load_photon
from nubis.photon.runtime import ServeSettings
from nubis.photon.testing import photon_http

Echo = load_photon("examples/echo").cls
END = "event: end\ndata: null\n\n"


class Token(pydantic.BaseModel):
    text: str
    index: int


class Streams(nubis.Photon):
    closed: list[str] = []

    @nubis.handler
    def words(self, text: str) -> Iterator[Token]:
        for i, word in enumerate(text.split()):
            yield Token(text=word, index=i)

    @nubis.handler
    async def aticks(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    @nubis.handler
    def untyped(self):
        yield {"a": 1}
        yield [1, 2]
        yield "three"

    @nubis.handler
    def breaks(self, after: int) -> Iterator[int]:
        try:
            yield from range(after)
            raise RuntimeError(f"broke after {after}")
        finally:
            self.closed.append("breaks")

    @nubis.handler
    async def abreaks(self) -> AsyncIterator[int]:
        yield 1
        raise ValueError("async broke")

    @nubis.handler
    def fails_at_once(self, n: int) -> Iterator[int]:
        if n < 0:
            raise ValueError("n must not be negative")
        yield n

    @nubis.handler
    def unencodable(self):
        yield 1
        yield object()

    @nubis.handler(concurrency=1)
    def single(self, n: int) -> Iterator[int]:
        yield from range(n)

    @nubis.handler(method="GET")
    def feed(self, n: int = 2) -> Iterator[str]:
        for i in range(n):
            yield f"item {i}"


def events(text: str) -> list[object]:
    """Decode a whole SSE body with the client's decoder."""
    decoder = SSEDecoder()
    items: list[object] = []
    for line in text.split("\n"):
        items.extend(decoder.feed(line))
    assert decoder.finished
    return items


async def test_a_sync_generator_streams_sse_items_then_end() -> None:
    async with photon_http(Echo) as http:
        r = await http.post("/count", json={"n": 3})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache"
    assert r.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n" + END


async def test_an_empty_stream_is_just_the_end_event() -> None:
    async with photon_http(Echo) as http:
        r = await http.post("/count", json={"n": 0})
    assert r.text == END


async def test_items_are_encoded_with_the_item_type() -> None:
    async with photon_http(Streams) as http:
        r = await http.post("/words", json={"text": "hello big world"})
    assert r.text == (
        'data: {"text":"hello","index":0}\n\n'
        'data: {"text":"big","index":1}\n\n'
        'data: {"text":"world","index":2}\n\n' + END
    )


async def test_an_async_generator_streams() -> None:
    async with photon_http(Streams) as http:
        r = await http.post("/aticks", json={"n": 4})
    assert r.headers["content-type"].startswith("text/event-stream")
    assert events(r.text) == [0, 1, 2, 3]


async def test_untyped_generators_stream_any_json() -> None:
    async with photon_http(Streams) as http:
        r = await http.post("/untyped", json={})
    assert events(r.text) == [{"a": 1}, [1, 2], "three"]


async def test_get_streams_read_query_parameters() -> None:
    async with photon_http(Streams) as http:
        r = await http.get("/feed", params={"n": "3"})
    assert events(r.text) == ["item 0", "item 1", "item 2"]


async def test_an_error_mid_stream_is_an_error_event() -> None:
    Streams.closed = []
    async with photon_http(Streams) as http:
        r = await http.post("/breaks", json={"after": 2})
    assert r.status_code == 200  # the status line was sent before the error happened
    body = {"error": {"code": "handler_error", "message": "RuntimeError: broke after 2", "details": None}}
    assert r.text == f"data: 0\n\ndata: 1\n\nevent: error\ndata: {json.dumps(body)}\n\n"
    assert Streams.closed == ["breaks"]


async def test_an_error_in_an_async_stream_is_an_error_event() -> None:
    async with photon_http(Streams) as http:
        r = await http.post("/abreaks", json={})
    lines = r.text.split("\n\n")
    assert lines[0] == "data: 1"
    assert lines[1].startswith("event: error\ndata: ")
    assert json.loads(lines[1].removeprefix("event: error\ndata: ")) == {
        "error": {"code": "handler_error", "message": "ValueError: async broke", "details": None}
    }


async def test_the_client_decoder_raises_the_streamed_error() -> None:
    async with photon_http(Streams) as http:
        r = await http.post("/breaks", json={"after": 1})
    decoder = SSEDecoder()
    seen: list[object] = []
    try:
        for line in r.text.split("\n"):
            seen.extend(decoder.feed(line))
    except HandlerError as exc:
        assert exc.message == "RuntimeError: broke after 1"
    else:
        raise AssertionError("the error event was not raised")
    assert seen == [0]


async def test_debug_mode_streams_the_traceback() -> None:
    async with photon_http(Streams, ServeSettings(debug=True)) as http:
        r = await http.post("/breaks", json={"after": 0})
    data = r.text.removeprefix("event: error\ndata: ").strip()
    details = json.loads(data)["error"]["details"]
    assert 'raise RuntimeError(f"broke after {after}")' in details["traceback"]


async def test_an_unencodable_item_ends_the_stream_with_an_error() -> None:
    async with photon_http(Streams) as http:
        r = await http.post("/unencodable", json={})
    assert r.text.startswith("data: 1\n\nevent: error\ndata: ")
    error = json.loads(r.text.split("data: ")[2])["error"]
    assert error["code"] == "handler_error"
    assert "cannot encode object as JSON" in error["message"]


async def test_a_generator_failing_before_its_first_item() -> None:
    async with photon_http(Streams) as http:
        r = await http.post("/fails_at_once", json={"n": -1})
    assert r.text == (
        'event: error\ndata: {"error": {"code": "handler_error", '
        '"message": "ValueError: n must not be negative", "details": null}}\n\n'
    )


async def test_stream_requests_are_validated_first() -> None:
    async with photon_http(Echo) as http:
        r = await http.post("/count", json={"n": "many"})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == "validation_error"


async def test_a_stream_with_concurrency_one_releases_its_slot() -> None:
    async with photon_http(Streams) as http:
        for _ in range(3):  # a leaked slot would hang the second call
            r = await asyncio.wait_for(http.post("/single", json={"n": 2}), 5)
            assert events(r.text) == [0, 1]
        rs = await asyncio.wait_for(
            asyncio.gather(*(http.post("/single", json={"n": 1}) for _ in range(3))), 5
        )
    assert [events(r.text) for r in rs] == [[0], [0], [0]]

"""Handlers that speak HTTP themselves (what the OpenAI-compatible LLM photon needs): a parameter
annotated ``Request`` gets the request with its body unread, a returned ``Response`` is sent as it
is; and a photon's own Prometheus collectors appear on its /metrics."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

import nubis
from nubis.errors import PhotonDefinitionError
from nubis.photon.runtime import ServeSettings
from nubis.photon.testing import photon_http


class Raw(nubis.Photon):
    def init(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter("raw_calls", "Calls of /v1/raw", registry=self.registry)

    def collectors(self) -> Iterable[Collector]:
        return (self.registry,)

    @nubis.handler(path="/v1/raw")
    async def raw(self, request: Request) -> Response:
        self.calls.inc()
        body = json.loads(await request.body())  # any fields: nubis does not validate them
        return JSONResponse({"got": body, "query": dict(request.query_params)}, status_code=201,
                            headers={"x-raw": "yes"})

    @nubis.handler(path="/v1/list", method="GET")
    async def listing(self, request: Request) -> Response:
        return Response(f"limit={request.query_params.get('limit')}", media_type="text/plain")

    @nubis.handler(path="/v1/events")
    async def events(self, request: Request) -> StreamingResponse:
        async def lines() -> Any:
            yield b"data: 1\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(lines(), media_type="text/event-stream")


async def test_a_request_handler_reads_the_body_and_answers_itself(metric: Any) -> None:
    async with photon_http(Raw) as http:
        r = await http.post("/v1/raw?x=1", json={"model": "m", "anything": [1, 2]})
        assert (r.status_code, r.headers["x-raw"]) == (201, "yes")
        assert r.json() == {"got": {"model": "m", "anything": [1, 2]}, "query": {"x": "1"}}
        listed = await http.get("/v1/list", params={"limit": "5", "other": "x"})
        assert listed.text == "limit=5"
        events = await http.post("/v1/events", json={})
        assert events.text == "data: 1\n\ndata: [DONE]\n\n"
        text = (await http.get("/metrics")).text
        assert (await http.get("/openapi.json")).status_code == 200
    assert metric(text, "raw_calls_total") == 1
    assert metric(text, 'nubis_photon_requests_total{handler="raw",status="201"}') == 1
    assert metric(text, 'nubis_photon_in_flight_requests{handler="events"}') == 0
    assert "raw_calls_created" not in text


async def chunks(*parts: bytes) -> Any:  # no content-length: the limit counts what arrives
    for part in parts:
        yield part


async def test_a_request_handler_body_keeps_the_size_limit() -> None:
    async with photon_http(Raw, ServeSettings(max_body_size=100)) as http:
        r = await http.post("/v1/raw", json={"text": "x" * 200})
        chunked = await http.post("/v1/raw", content=chunks(b'{"a": "', b"x" * 200, b'"}'))
    assert r.status_code == chunked.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


def test_a_request_handler_takes_nothing_else() -> None:
    with pytest.raises(PhotonDefinitionError, match="reads the body itself"):
        class Both(nubis.Photon):
            @nubis.handler
            async def both(self, request: Request, text: str) -> Response:
                return Response()

"""/metrics: requests by handler and status, latency, in-flight, errors by code."""

import asyncio
import threading
from collections.abc import Callable

import nubis
from nubis.photon.loader import load_photon
from nubis.photon.testing import photon_http

Echo = load_photon("examples/echo").cls
Metric = Callable[[str, str], float | None]


class Held(nubis.Photon):
    started = threading.Event()
    release = threading.Event()

    @nubis.handler
    def hold(self) -> bool:
        self.started.set()
        return self.release.wait(timeout=5)


async def test_requests_latency_and_errors_are_counted(metric: Metric) -> None:
    async with photon_http(Echo) as http:
        for _ in range(3):
            await http.post("/echo", json={"text": "hi"})
        await http.post("/echo", json={})
        await http.post("/echo", content=b"{")
        await http.post("/count", json={"n": 2})
        r = await http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert metric(text, 'nubis_photon_requests_total{handler="echo",status="200"}') == 3
    assert metric(text, 'nubis_photon_requests_total{handler="echo",status="422"}') == 1
    assert metric(text, 'nubis_photon_requests_total{handler="echo",status="400"}') == 1
    assert metric(text, 'nubis_photon_requests_total{handler="count",status="200"}') == 1
    assert metric(text, 'nubis_photon_requests_total{handler="add",status="200"}') is None
    assert metric(text, 'nubis_photon_request_duration_seconds_count{handler="echo"}') == 5
    assert metric(text, 'nubis_photon_request_duration_seconds_bucket{handler="echo",le="+Inf"}') == 5
    assert metric(text, 'nubis_photon_errors_total{handler="echo",code="validation_error"}') == 1
    assert metric(text, 'nubis_photon_errors_total{handler="echo",code="bad_request"}') == 1
    assert metric(text, 'nubis_photon_in_flight_requests{handler="echo"}') == 0
    assert metric(text, 'nubis_photon_in_flight_requests{handler="count"}') == 0  # stream ended


async def test_handler_errors_and_stream_errors_are_counted(metric: Metric) -> None:
    class Failing(nubis.Photon):
        @nubis.handler
        def boom(self) -> int:
            raise ValueError("no")

        @nubis.handler
        def stream(self):
            yield 1
            raise ValueError("mid-stream")

    async with photon_http(Failing) as http:
        await http.post("/boom", json={})
        await http.post("/boom", json={})
        await http.post("/stream", json={})
        text = (await http.get("/metrics")).text
    assert metric(text, 'nubis_photon_requests_total{handler="boom",status="500"}') == 2
    assert metric(text, 'nubis_photon_errors_total{handler="boom",code="handler_error"}') == 2
    assert metric(text, 'nubis_photon_errors_total{handler="stream",code="handler_error"}') == 1
    assert metric(text, 'nubis_photon_in_flight_requests{handler="stream"}') == 0


async def test_in_flight_counts_requests_being_handled(metric: Metric) -> None:
    Held.started.clear()
    Held.release.clear()
    try:
        async with photon_http(Held) as http:
            call = asyncio.create_task(http.post("/hold", json={}))
            assert await asyncio.to_thread(Held.started.wait, 5)
            during = (await http.get("/metrics")).text
            Held.release.set()
            assert (await call).json() is True
            after = (await http.get("/metrics")).text
    finally:
        Held.release.set()
    assert metric(during, 'nubis_photon_in_flight_requests{handler="hold"}') == 1
    assert metric(after, 'nubis_photon_in_flight_requests{handler="hold"}') == 0


async def test_not_ready_requests_are_counted_as_503(metric: Metric) -> None:
    class Gated(nubis.Photon):
        gate = threading.Event()

        def init(self) -> None:
            self.gate.wait(timeout=10)

        @nubis.handler
        def hi(self) -> str:
            return "hi"

    try:
        async with photon_http(Gated, wait_ready=False) as http:
            await http.post("/hi", json={})
            text = (await http.get("/metrics")).text
    finally:
        Gated.gate.set()
    assert metric(text, 'nubis_photon_requests_total{handler="hi",status="503"}') == 1
    assert metric(text, 'nubis_photon_errors_total{handler="hi",code="not_ready"}') == 1


async def test_each_app_has_its_own_registry(metric: Metric) -> None:
    async with photon_http(Echo) as http:
        await http.post("/echo", json={"text": "a"})
    async with photon_http(Echo) as http:
        text = (await http.get("/metrics")).text
    assert metric(text, 'nubis_photon_requests_total{handler="echo",status="200"}') is None

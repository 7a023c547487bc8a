"""Routing-table sources keep the last good table; load reports count what the router saw."""

import json
import logging
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from nubis.gateway.metrics import GatewayMetrics
from nubis.gateway.routing import Router
from nubis.gateway.sources import FileSource, URLSource, _Trouble, apply_if_new, load_report
from nubis.models.routes import REPORT_LATENCY_BOUNDS_S, LoadReport, RoutingTable

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def write(path: Path, body: object, stamp: int) -> None:
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    os.utime(path, ns=(stamp, stamp))  # distinct mtimes however fast the test runs


def doc(version: int, *names: str) -> dict:
    return {"version": version, "deployments": [
        {"workspace": "ws", "name": n, "access": "public",
         "replicas": [{"replica_id": "r1", "endpoint": "http://127.0.0.1:9", "ready": True}]}
        for n in names]}


def test_file_source_follows_edits_and_keeps_last_good_table(tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    router = Router(GatewayMetrics())
    source = FileSource(path)
    source.poll(router)  # missing file: nothing to serve yet, no crash
    assert router.version is None
    write(path, doc(1, "a"), 1_000)
    source.poll(router)
    assert router.version == 1 and router.get("ws", "a") is not None
    write(path, "{not json", 2_000)
    source.poll(router)
    write(path, {"version": "x"}, 3_000)
    source.poll(router)
    path.unlink()
    source.poll(router)
    assert router.version == 1 and router.get("ws", "a") is not None
    write(path, doc(2, "a", "b"), 4_000)
    source.poll(router)
    assert router.version == 2 and router.get("ws", "b") is not None


def test_same_version_is_not_applied_again() -> None:
    router = Router(GatewayMetrics())
    assert apply_if_new(router, RoutingTable.model_validate(doc(5, "a")))
    assert not apply_if_new(router, RoutingTable.model_validate(doc(5, "a", "b")))
    assert router.get("ws", "b") is None
    assert apply_if_new(router, RoutingTable.model_validate(doc(4, "b")))  # older: a restore
    assert router.get("ws", "b") is not None


def test_load_report_counts_and_resets_finished() -> None:
    router = Router(GatewayMetrics())
    router.apply(RoutingTable.model_validate(doc(1, "a")))
    dep = router.get("ws", "a")
    assert dep is not None
    dep.in_flight, dep.queued, dep.finished = 2, 3, 7
    report = load_report(router, gateway_id="g1", now=NOW)
    assert report.routes_version == 1
    assert [(d.name, d.in_flight, d.queued, d.requests) for d in report.deployments] == [("a", 2, 3, 7)]
    assert load_report(router, gateway_id="g1", now=NOW).deployments[0].requests == 0
    router.apply(RoutingTable.model_validate(doc(2)))  # a gone while requests still run
    assert [d.name for d in load_report(router, gateway_id="g1", now=NOW).deployments] == ["a"]
    dep.in_flight = dep.queued = 0
    assert load_report(router, gateway_id="g1", now=NOW).deployments == []


def test_load_report_carries_5xx_and_latency_buckets_since_the_previous_report() -> None:
    router = Router(GatewayMetrics())
    router.apply(RoutingTable.model_validate(doc(1, "a")))
    dep = router.get("ws", "a")
    assert dep is not None
    for status, seconds in ((200, 0.003), (200, 0.2), (503, 0.2), (500, 45.0)):
        dep.count(status, seconds)
    (load,) = load_report(router, gateway_id="g1", now=NOW).deployments
    assert (load.requests, load.errors) == (4, 2)
    assert load.latency_counts[0] == 1  # <= 5 ms
    assert load.latency_counts[REPORT_LATENCY_BOUNDS_S.index(0.25)] == 2  # (0.1, 0.25]
    assert load.latency_counts[-1] == 1  # slower than the last bound
    assert sum(load.latency_counts) == 4
    dep.in_flight = 1
    (again,) = load_report(router, gateway_id="g1", now=NOW).deployments
    assert (again.requests, again.errors, sum(again.latency_counts)) == (0, 0, 0)


def test_a_load_report_from_an_older_gateway_is_still_valid() -> None:
    old = {"gateway_id": "g", "at": "2026-01-01T00:00:00Z", "routes_version": 1,
           "deployments": [{"workspace": "ws", "name": "a", "in_flight": 0, "queued": 0, "requests": 3}]}
    (load,) = LoadReport.model_validate(old).deployments
    assert (load.errors, load.latency_counts) == (0, [])


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_routes_url_down_at_start_is_no_warning_until_the_grace_passes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The gateway starts before the control plane answers: that first failure is not trouble."""
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/routes"
    router = Router(GatewayMetrics())
    caplog.set_level(logging.DEBUG, logger="nubis.gateway")
    async with aiohttp.ClientSession() as session:
        await URLSource(url).poll(session, router)
        assert warnings(caplog) == []
        assert any("unreachable" in r.getMessage() for r in caplog.records)  # still there, as debug
        await URLSource(url, startup_grace=0).poll(session, router)
    assert warnings(caplog) == [f"routes URL {url}: unreachable (ClientConnectorError) "
                                "(serving from the last good routing table)"]


def test_after_the_first_success_or_the_grace_a_failure_warns(caplog: pytest.LogCaptureFixture) -> None:
    starting = _Trouble("routes URL u", grace=10, started=0.0)
    starting.failed("unreachable", now=5.0)
    assert warnings(caplog) == []
    starting.failed("unreachable", now=11.0)
    assert len(warnings(caplog)) == 1
    caplog.clear()
    worked = _Trouble("routes URL u", grace=10, started=0.0)
    worked.ok()
    worked.failed("HTTP 500", now=1.0)
    assert warnings(caplog) == ["routes URL u: HTTP 500 (serving from the last good routing table)"]

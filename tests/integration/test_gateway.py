"""The gateway as a real process in front of real photon processes, fed by a routes file."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from servers import EXAMPLES, ROOT, PhotonProcess, free_port, photon_process, stop

ECHO = EXAMPLES / "echo"
TOKEN = "nbs_gateway-test-token"
GATEWAY_TOKEN = "nbs_the-gateway-own-token"  # what /metrics asks for
NAPPER = '''
import time
import nubis

class Napper(nubis.Photon):
    @nubis.handler
    def nap(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds
'''
_versions = itertools.count(1)


class Gateway:
    """A gateway process and the routes file it watches."""

    def __init__(self, url: str, routes: Path, proc: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.routes = routes
        self.proc = proc

    def set_routes(self, *deployments: dict[str, Any]) -> int:
        """Write a new table (atomically, as the control plane must) and wait until it serves."""
        version = next(_versions)
        tmp = self.routes.with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": version, "deployments": list(deployments)}))
        os.replace(tmp, self.routes)
        self.wait_version(version)
        return version

    def wait_version(self, version: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if httpx.get(f"{self.url}/healthz").json()["routes_version"] == version:
                return
            time.sleep(0.05)
        raise TimeoutError(f"the gateway did not take routes version {version}")

    def metrics(self) -> str:
        resp = httpx.get(f"{self.url}/metrics", headers={"Authorization": f"Bearer {GATEWAY_TOKEN}"})
        assert resp.status_code == 200, resp.text
        return resp.text


@contextlib.contextmanager
def gateway_process(routes: Path, log: Path, *, log_level: str = "warning") -> Iterator[Gateway]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    token_file = log.with_name("gateway.token")
    token_file.write_text(GATEWAY_TOKEN + "\n")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nubis.gateway", "--port", str(port), "--routes-file",
             str(routes), "--token-file", str(token_file), "--log-level", log_level],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log.read_text()
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                assert time.monotonic() < deadline, "gateway not up"
                time.sleep(0.05)
            yield Gateway(url, routes, proc)
        finally:
            stop(proc)  # type: ignore[arg-type]


def deployment(name: str, *replicas: PhotonProcess, access: str = "public",
               ready: bool = True, keys: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
    """A table entry; ``keys`` gives replicas (by URL) the key they demand."""
    keys = keys or {}
    return {
        "workspace": "ws", "name": name, "access": access,
        "replicas": [{"replica_id": f"r{i}", "endpoint": r.url, "ready": ready, "key": keys.get(r.url)}
                     for i, r in enumerate(replicas)],
        **kw,
    }


def echo_count(replica: PhotonProcess, metric: Callable[[str, str], float | None]) -> float:
    text = httpx.get(f"{replica.url}/metrics").text
    return metric(text, 'nubis_photon_requests_total{handler="echo",status="200"}') or 0.0


@pytest.fixture(scope="module")
def replica_a() -> Iterator[PhotonProcess]:
    with photon_process(ECHO, "--log-level", "warning") as proc:
        yield proc


@pytest.fixture(scope="module")
def replica_b() -> Iterator[PhotonProcess]:
    with photon_process(ECHO, "--log-level", "warning") as proc:
        yield proc


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("gateway")
    routes = folder / "routes.json"
    routes.write_text(json.dumps({"version": 0, "deployments": []}))
    with gateway_process(routes, folder / "gateway.log") as gw:
        yield gw


def test_calls_through_the_gateway_match_direct_calls(
    gateway: Gateway, replica_a: PhotonProcess
) -> None:
    gateway.set_routes(deployment("echo", replica_a))
    for path, body in (("/echo", {"text": "héllo"}), ("/add", {"a": 1, "b": 2}),
                       ("/add", {"a": "x"}), ("/nope", {})):
        direct = httpx.post(replica_a.url + path, json=body)
        via = httpx.post(f"{gateway.url}/ws/echo{path}", json=body)
        assert (via.status_code, via.json()) == (direct.status_code, direct.json())
        assert via.headers["content-type"] == direct.headers["content-type"]
    big = "x" * 3_000_000  # above the gateway's buffer: the request body streams
    assert httpx.post(f"{gateway.url}/ws/echo/echo", json={"text": big}).json() == {"text": big}


def test_metrics_count_requests_by_deployment_and_status(
    gateway: Gateway, replica_a: PhotonProcess, metric: Any
) -> None:
    gateway.set_routes(deployment("metered", replica_a))
    for body in ({"text": "x"}, {"text": "y"}, {"nope": 1}):
        httpx.post(f"{gateway.url}/ws/metered/echo", json=body)
    httpx.get(f"{gateway.url}/ws/missing/echo")
    text = gateway.metrics()
    labels = 'workspace="ws",deployment="metered"'
    assert metric(text, f'nubis_gateway_requests_total{{{labels},status="200"}}') == 2
    assert metric(text, f'nubis_gateway_requests_total{{{labels},status="422"}}') == 1
    assert metric(text, f"nubis_gateway_request_seconds_count{{{labels}}}") == 3
    assert metric(text, f"nubis_gateway_in_flight{{{labels}}}") == 0
    assert (metric(text, 'nubis_gateway_unrouted_requests_total{status="401"}') or 0) >= 1


def refused(workspace: str, name: str) -> dict[str, Any]:
    """The one answer for an unknown deployment and for a private one without a valid token."""
    return {"error": {
        "code": "unauthorized",
        "message": f"no deployment {workspace}/{name} that this caller may use: check the name "
                   "and, for a private deployment, send 'Authorization: Bearer <token>' with a "
                   "token of its workspace",
        "details": {"workspace": workspace, "deployment": name},
    }}


def test_unknown_deployment_is_401_and_a_path_without_one_is_404(
    gateway: Gateway, replica_a: PhotonProcess
) -> None:
    gateway.set_routes(deployment("echo", replica_a))
    for workspace, name, path in (("ws", "missing", "/echo"), ("other", "echo", "/echo")):
        resp = httpx.post(f"{gateway.url}/{workspace}/{name}{path}", json={"text": "x"})
        assert (resp.status_code, resp.json()) == (401, refused(workspace, name))
    resp = httpx.post(f"{gateway.url}/ws", json={"text": "x"})
    assert resp.status_code == 404
    assert resp.json() == {"error": {
        "code": "not_found",
        "message": "no deployment at /ws: use /<workspace>/<deployment>/<path>",
        "details": {"path": "/ws"},
    }}


def test_private_needs_a_token_and_it_is_not_forwarded(
    gateway: Gateway, tmp_path: Path
) -> None:
    # the replica itself demands the same token: it answers 200 only if the gateway passes the
    # Authorization header on, which it must do for public deployments and never for private
    with photon_process(ECHO, "--token", TOKEN, "--log-level", "warning") as guarded:
        digest = hashlib.sha256(TOKEN.encode()).hexdigest()
        gateway.set_routes(
            deployment("private", guarded, access="private", token_hashes=[digest]),
            deployment("public", guarded),
        )
        url = f"{gateway.url}/ws/private/echo"
        for headers in ({}, {"Authorization": "Bearer nbs_wrong"}, {"Authorization": TOKEN}):
            resp = httpx.post(url, json={"text": "x"}, headers=headers)
            assert (resp.status_code, resp.json()) == (401, refused("ws", "private"))
        resp = httpx.post(url, json={"text": "x"}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert resp.status_code == 401  # from the replica: the gateway stripped the token
        assert "missing or wrong token" in resp.json()["error"]["message"]
        public = httpx.post(f"{gateway.url}/ws/public/echo", json={"text": "x"},
                            headers={"Authorization": f"Bearer {TOKEN}"})
        assert (public.status_code, public.json()) == (200, {"text": "x"})
        assert httpx.post(f"{gateway.url}/ws/public/echo", json={"text": "x"}).status_code == 401


def test_server_sent_events_arrive_one_by_one(gateway: Gateway,
                                              replica_a: PhotonProcess) -> None:
    gateway.set_routes(deployment("echo", replica_a))
    arrived: list[tuple[float, str]] = []
    start = time.monotonic()
    with httpx.stream("POST", f"{gateway.url}/ws/echo/count", json={"n": 4, "delay": 0.5}) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data:"):
                arrived.append((time.monotonic() - start, line))
    assert [line for _, line in arrived] == ["data: 0", "data: 1", "data: 2", "data: 3", "data: null"]
    assert arrived[0][0] < 1.2 < arrived[-1][0]  # the first event long before the last


def test_client_leaving_a_stream_stops_the_replica(
    gateway: Gateway, replica_a: PhotonProcess, metric: Any
) -> None:
    gateway.set_routes(deployment("echo", replica_a))
    in_flight = 'nubis_photon_in_flight_requests{handler="count"}'
    with httpx.stream("POST", f"{gateway.url}/ws/echo/count", json={"n": 40, "delay": 0.25}) as resp:
        assert next(resp.iter_lines()) == "data: 0"
        assert metric(httpx.get(f"{replica_a.url}/metrics").text, in_flight) == 1
    deadline = time.monotonic() + 3  # the stream would run 10 s
    while metric(httpx.get(f"{replica_a.url}/metrics").text, in_flight) != 0:
        assert time.monotonic() < deadline, "the replica kept streaming to nobody"
        time.sleep(0.1)


def test_least_outstanding_picks_the_idle_replica(
    gateway: Gateway, replica_a: PhotonProcess, replica_b: PhotonProcess, metric: Any
) -> None:
    gateway.set_routes(deployment("echo", replica_a, replica_b))
    before = {r.url: echo_count(r, metric) for r in (replica_a, replica_b)}
    with httpx.stream("POST", f"{gateway.url}/ws/echo/count", json={"n": 2, "delay": 1.0}) as slow:
        assert slow.status_code == 200  # one replica is now busy until the stream ends
        for _ in range(6):
            assert httpx.post(f"{gateway.url}/ws/echo/echo", json={"text": "x"}).status_code == 200
        slow.read()
    gained = sorted(echo_count(r, metric) - before[r.url] for r in (replica_a, replica_b))
    assert gained == [0, 6]


def test_killed_replica_is_skipped(gateway: Gateway, replica_a: PhotonProcess, metric: Any) -> None:
    with photon_process(ECHO, "--log-level", "warning") as victim:
        gateway.set_routes(deployment("echo", victim, replica_a))
        for _ in range(4):  # both replicas have pooled connections now
            assert httpx.post(f"{gateway.url}/ws/echo/echo", json={"text": "x"}).status_code == 200
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        for _ in range(10):
            resp = httpx.post(f"{gateway.url}/ws/echo/echo", json={"text": "x"})
            assert (resp.status_code, resp.json()) == (200, {"text": "x"})
    retries = metric(gateway.metrics(),
                     'nubis_gateway_upstream_retries_total{workspace="ws",deployment="echo"}')
    assert retries and retries >= 1


def test_all_replicas_down_is_503(gateway: Gateway) -> None:
    with photon_process(ECHO, "--log-level", "warning") as victim:
        gateway.set_routes(deployment("echo", victim))
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        # The gateway waits up to REPLACEMENT_WAIT_S (5 s) for a table with a replacement before
        # its 503: httpx's default 5 s read timeout would race that wait.
        resp = httpx.post(f"{gateway.url}/ws/echo/echo", json={"text": "x"}, timeout=30)
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "no_replica"


def test_new_replica_in_the_file_is_used_without_restart(
    gateway: Gateway, replica_a: PhotonProcess, replica_b: PhotonProcess, metric: Any
) -> None:
    gateway.set_routes(deployment("echo", replica_a))
    before = echo_count(replica_b, metric)
    for _ in range(3):
        httpx.post(f"{gateway.url}/ws/echo/echo", json={"text": "x"})
    assert echo_count(replica_b, metric) == before
    gateway.set_routes(deployment("echo", replica_a, replica_b))
    for _ in range(4):
        assert httpx.post(f"{gateway.url}/ws/echo/echo", json={"text": "x"}).status_code == 200
    assert echo_count(replica_b, metric) - before == 2  # ties go in turn


def test_keeps_serving_when_the_routes_file_breaks(gateway: Gateway,
                                                   replica_a: PhotonProcess) -> None:
    version = gateway.set_routes(deployment("echo", replica_a))
    gateway.routes.write_text("{ this is not a routing table")
    time.sleep(0.6)
    assert httpx.post(f"{gateway.url}/ws/echo/echo", json={"text": "x"}).status_code == 200
    gateway.routes.unlink()
    time.sleep(0.6)
    assert httpx.post(f"{gateway.url}/ws/echo/echo", json={"text": "x"}).status_code == 200
    assert httpx.get(f"{gateway.url}/healthz").json()["routes_version"] == version
    assert gateway.proc.poll() is None


def test_held_request_goes_through_when_a_replica_gets_ready(
    gateway: Gateway, replica_a: PhotonProcess, metric: Any
) -> None:
    gateway.set_routes(deployment("echo", replica_a, ready=False, hold_s=30))
    queued = 'nubis_gateway_queued{workspace="ws",deployment="echo"}'
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        start = time.monotonic()
        held = pool.submit(httpx.post, f"{gateway.url}/ws/echo/echo", json={"text": "held"},
                           timeout=60)
        while metric(gateway.metrics(), queued) != 1:
            assert not held.done() and time.monotonic() - start < 10
            time.sleep(0.05)
        gateway.set_routes(deployment("echo", replica_a, hold_s=30))
        resp = held.result(timeout=30)
    assert (resp.status_code, resp.json()) == (200, {"text": "held"})
    assert metric(gateway.metrics(), queued) == 0


def test_hold_ends_in_503_after_hold_s(gateway: Gateway) -> None:
    gateway.set_routes(deployment("cold", hold_s=1))
    start = time.monotonic()
    resp = httpx.post(f"{gateway.url}/ws/cold/echo", json={"text": "x"})
    assert 1.0 <= time.monotonic() - start < 5
    assert resp.status_code == 503
    assert resp.json() == {"error": {
        "code": "no_replica",
        "message": "ws/cold has no ready replica (waited 1 s): it may be starting, scaling from "
                   "zero or failing; try again shortly",
        "details": {"deployment": "ws/cold", "waited_s": 1.0},
    }}


def test_body_limit_is_413_and_timeout_is_504(
    gateway: Gateway, replica_a: PhotonProcess, tmp_path: Path
) -> None:
    (tmp_path / "napper.py").write_text(NAPPER)
    with photon_process(tmp_path / "napper.py", "--log-level", "warning") as napper:
        gateway.set_routes(deployment("echo", replica_a, max_body_bytes=100),
                           deployment("napper", napper, timeout_s=0.5))
        resp = httpx.post(f"{gateway.url}/ws/echo/echo", json={"text": "x" * 200})
        assert resp.status_code == 413
        assert resp.json()["error"]["code"] == "payload_too_large"
        chunks = (b"x" * 60 for _ in range(3))  # no content-length: counted while it streams
        resp = httpx.post(f"{gateway.url}/ws/echo/echo", content=chunks)
        assert resp.status_code == 413
        assert httpx.post(f"{gateway.url}/ws/echo/echo", json={"text": "ok"}).status_code == 200
        assert httpx.post(f"{gateway.url}/ws/napper/nap", json={"seconds": 0.1}).json() == 0.1
        resp = httpx.post(f"{gateway.url}/ws/napper/nap", json={"seconds": 2})
        assert resp.status_code == 504
        assert resp.json()["error"]["code"] == "timeout"

"""What the gateway and the replicas refuse (issue 9): replicas answer only the gateway's key,
oversized request heads, /metrics without the gateway's token, an existence oracle for private
deployments, expired tokens while the control plane is away; and a client that leaves is not an
error in the gateway's log. Real gateway and photon processes, fed by a routes file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_gateway import GATEWAY_TOKEN, Gateway, gateway_process, refused

import nubis
from nubis.backends import LocalBackend, ReplicaHandle, ReplicaSpec
from nubis.models.resources import Resources
from nubis.photon.build import build_bundle

from platform_process import nubis_up
from servers import EXAMPLES, PhotonProcess, free_port, photon_process

KEY_HEADER = "X-Nubis-Replica-Key"
CALLER = "nbs_caller-token"
CALLER_HASH = hashlib.sha256(CALLER.encode()).hexdigest()


def unauthorized_replica() -> dict[str, Any]:
    return {"error": {
        "code": "unauthorized",
        "message": "this replica answers only its gateway: call the deployment through the gateway",
        "details": {"header": "x-nubis-replica-key"},
    }}


def route(name: str, endpoint: str, *, access: str = "public", key: str | None = None,
          **kw: Any) -> dict[str, Any]:
    return {"workspace": "ws", "name": name, "access": access,
            "replicas": [{"replica_id": "r0", "endpoint": endpoint, "ready": True, "key": key}], **kw}


@contextlib.contextmanager
def started_gateway(folder: Path, *, log_level: str = "warning") -> Iterator[Gateway]:
    routes = folder / "routes.json"
    routes.write_text(json.dumps({"version": 0, "deployments": []}))
    with gateway_process(routes, folder / "gateway.log", log_level=log_level) as gw:
        yield gw


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with started_gateway(tmp_path_factory.mktemp("gateway")) as gw:
        yield gw


@pytest.fixture(scope="module")
def echo() -> Iterator[PhotonProcess]:
    with photon_process(EXAMPLES / "echo", "--log-level", "warning") as proc:
        yield proc


@pytest.fixture
async def local_replica(tmp_path: Path) -> AsyncIterator[ReplicaHandle]:
    bundle, _ = build_bundle(str(EXAMPLES / "echo"), tmp_path / "echo.photon")
    backend = LocalBackend(tmp_path / "state", cpus=2, memory=2**31, gpus=[])
    spec = ReplicaSpec(replica_id="echo-1", deployment="echo", workspace="ws", bundle=bundle,
                       content_hash="", env={}, resources=Resources(cpu=0.5, memory="256Mi"))
    handle = await backend.start_replica(spec)
    try:
        deadline = time.monotonic() + 60
        while not (await backend.probe(handle)).ready:  # the probe's /readyz needs no key
            assert time.monotonic() < deadline, backend.read_logs(handle)
            time.sleep(0.1)
        yield handle
    finally:
        await backend.stop_replica(handle, grace_s=5)


async def test_a_local_backend_replica_answers_only_its_gateway(
    gateway: Gateway, local_replica: ReplicaHandle
) -> None:
    url, key = local_replica.endpoint, local_replica.ref["replica_key"]
    assert url is not None and key
    for headers in ({}, {KEY_HEADER: "wrong"}, {KEY_HEADER: ""}, {"Authorization": f"Bearer {key}"}):
        for method, path in (("POST", "/echo"), ("GET", "/metrics"), ("GET", "/_nubis/manifest")):
            resp = httpx.request(method, url + path, json={"text": "x"}, headers=headers)
            assert (resp.status_code, resp.json()) == (401, unauthorized_replica()), (headers, path)
    for path in ("/healthz", "/readyz"):  # the control plane's probes need no key
        assert httpx.get(url + path).status_code == 200
    direct = httpx.post(f"{url}/echo", json={"text": "x"}, headers={KEY_HEADER: key})
    assert (direct.status_code, direct.json()) == (200, {"text": "x"})

    gateway.set_routes(route("echo", url, key=key))
    for headers in ({}, {KEY_HEADER: "forged-by-the-client"}):  # the gateway sets its own
        via = httpx.post(f"{gateway.url}/ws/echo/echo", json={"text": "via"}, headers=headers)
        assert (via.status_code, via.json()) == (200, {"text": "via"})
    gateway.set_routes(route("echo", url))  # a table without the key: the replica refuses
    resp = httpx.post(f"{gateway.url}/ws/echo/echo", json={"text": "x"})
    assert (resp.status_code, resp.json()) == (401, unauthorized_replica())


def test_a_replica_without_a_key_is_open_as_before(echo: PhotonProcess) -> None:
    resp = httpx.post(f"{echo.url}/echo", json={"text": "x"})  # `nubis photon run` on a laptop
    assert (resp.status_code, resp.json()) == (200, {"text": "x"})


def send_huge_header(url: str, size: int) -> tuple[bytes, float]:
    """Send a request whose one header has ``size`` bytes; the answer and the seconds it took."""
    host, port = url.removeprefix("http://").split(":")
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"GET /ws/echo/echo HTTP/1.1\r\nHost: x\r\nX-Big: ")
        chunk, sent = b"a" * 2**20, 0
        with contextlib.suppress(OSError):  # the server may stop reading: the answer counts
            while sent < size:
                sock.sendall(chunk)
                sent += len(chunk)
            sock.sendall(b"\r\n\r\n")
        answer = b""
        with contextlib.suppress(OSError):
            while data := sock.recv(65536):
                answer += data
    return answer, time.monotonic() - start


def send_many_headers(url: str, count: int) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        headers = b"".join(b"X-H%d: 1\r\n" % i for i in range(count))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        answer = b""
        while data := sock.recv(65536):
            answer += data
    return answer


def assert_431(answer: bytes, why: str) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), answer[:200]
    error = json.loads(body)["error"]
    assert error["code"] == "headers_too_large"
    assert error["message"].startswith(why)
    assert error["details"] == {"max_head_bytes": 65536, "max_headers": 256}


def test_huge_or_too_many_headers_are_431_and_the_gateway_goes_on(
    gateway: Gateway, echo: PhotonProcess
) -> None:
    gateway.set_routes(route("echo", echo.url))
    answer, seconds = send_huge_header(gateway.url, 64 * 2**20)
    assert_431(answer, "request headers over 65536 bytes")
    assert seconds < 10  # answered and closed, not parsed to the end (that took 24 s before)
    assert_431(send_many_headers(gateway.url, 300), "more than 256 request headers")
    assert send_many_headers(gateway.url, 100).startswith(b"HTTP/1.1 200 ")  # under the limits
    resp = httpx.post(f"{gateway.url}/ws/echo/echo", json={"text": "x"})
    assert (resp.status_code, resp.json()) == (200, {"text": "x"})


def test_a_replica_refuses_a_huge_header_too(echo: PhotonProcess) -> None:
    answer, _ = send_huge_header(echo.url, 8 * 2**20)
    assert_431(answer, "request headers over 65536 bytes")
    assert httpx.get(f"{echo.url}/healthz").status_code == 200


def test_metrics_need_the_gateways_token(gateway: Gateway) -> None:
    for headers in ({}, {"Authorization": "Bearer nbs_wrong"}, {"Authorization": GATEWAY_TOKEN}):
        resp = httpx.get(f"{gateway.url}/metrics", headers=headers)
        assert resp.status_code == 401
        assert resp.json() == {"error": {
            "code": "unauthorized",
            "message": "the gateway's /metrics needs 'Authorization: Bearer <the gateway's token>' "
                       "(the token it was started with, --token-file)",
            "details": None,
        }}
    assert "nubis_gateway_requests_total" in gateway.metrics()
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200  # health stays open


def timed_post(url: str, headers: dict[str, str] | None = None) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    resp = httpx.post(url, json={"text": "x"}, headers=headers or {}, timeout=30)
    return resp, time.monotonic() - start


def test_unknown_and_private_deployments_look_the_same(gateway: Gateway, echo: PhotonProcess) -> None:
    # the same name on both sides: only existence differs between the two workspaces
    gateway.set_routes(route("secret", echo.url, access="private", token_hashes=[CALLER_HASH]),
                       {**route("open", echo.url), "workspace": "other"})
    cases = {
        "unknown": (f"{gateway.url}/nobody/secret/echo", None, ("nobody", "secret")),
        "no token": (f"{gateway.url}/ws/secret/echo", None, ("ws", "secret")),
        "wrong token": (f"{gateway.url}/ws/secret/echo", {"Authorization": "Bearer nbs_x"},
                        ("ws", "secret")),
    }
    seconds = {}
    for case, (url, headers, (workspace, name)) in cases.items():
        resp, seconds[case] = timed_post(url, headers)
        assert (resp.status_code, resp.json()) == (401, refused(workspace, name)), case
        assert resp.headers["content-length"] == str(len(resp.content))
    assert max(seconds.values()) - min(seconds.values()) < 0.5, seconds  # all wait one table
    ok, _ = timed_post(f"{gateway.url}/ws/secret/echo", {"Authorization": f"Bearer {CALLER}"})
    assert (ok.status_code, ok.json()) == (200, {"text": "x"})


def test_an_expired_token_stops_working_with_no_new_table(gateway: Gateway, echo: PhotonProcess) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=2)
    gateway.set_routes(route("timed", echo.url, access="private", token_hashes=[CALLER_HASH],
                             token_expires_at={CALLER_HASH: expires.isoformat()}))
    caller = {"Authorization": f"Bearer {CALLER}"}
    resp, _ = timed_post(f"{gateway.url}/ws/timed/echo", caller)
    assert resp.status_code == 200
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.1)
    # the routes file has not changed since: as if the control plane were down
    resp, _ = timed_post(f"{gateway.url}/ws/timed/echo", caller)
    assert (resp.status_code, resp.json()) == (401, refused("ws", "timed"))


def echo_requests(replica: PhotonProcess) -> float:
    """Requests the replica served, by any status but 499 (its client left: nothing served)."""
    text = httpx.get(f"{replica.url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('nubis_photon_requests_total{handler="echo"')
               and 'status="499"' not in line)


def test_a_client_that_leaves_is_not_an_error_in_the_log(tmp_path: Path, echo: PhotonProcess) -> None:
    with started_gateway(tmp_path, log_level="info") as gateway:
        gateway.set_routes(route("echo", echo.url))
        host, port = gateway.url.removeprefix("http://").split(":")
        before = echo_requests(echo)
        for body in (b"", b'{"text": ', b"x" * (3 * 2**20)):  # none, buffered, streamed
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(b"POST /ws/echo/echo HTTP/1.1\r\nHost: x\r\nContent-Type: "
                             b"application/json\r\nContent-Length: 9000000\r\n\r\n" + body)
                time.sleep(0.3)
        with httpx.stream("POST", f"{gateway.url}/ws/echo/count", json={"n": 20, "delay": 0.1}) as r:
            assert next(r.iter_lines()) == "data: 0"  # then leave in the middle of the answer
        time.sleep(1.0)
        assert echo_requests(echo) == before  # no cut-off body went on as if it were whole
        resp = httpx.post(f"{gateway.url}/ws/echo/echo", json={"text": "x"})
        assert (resp.status_code, resp.json()) == (200, {"text": "x"})
        log = (tmp_path / "gateway.log").read_text()
    assert "ERROR" not in log and "Traceback" not in log, log
    assert "Exception" not in log, log


def test_nubis_up_keeps_the_gateways_token_and_replica_keys_to_themselves(tmp_path: Path) -> None:
    with nubis_up(tmp_path / "home") as platform, nubis.Client(platform.url, platform.admin_token) as client:
        token_file = platform.home / "gateway.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert token_file.read_text().strip() == platform.admin_token
        pid = int((platform.home / "gateway.pid").read_text())
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        for shown in (environ, cmdline):
            assert platform.admin_token.encode() not in shown
        assert b"NUBIS_GATEWAY_TOKEN" not in environ
        admin = {"Authorization": f"Bearer {platform.admin_token}"}
        assert httpx.get(f"{platform.gateway_url}/metrics").status_code == 401
        assert httpx.get(f"{platform.gateway_url}/metrics", headers=admin).status_code == 200

        answer, _ = send_huge_header(platform.url, 64 * 2**20)  # the API's own uvicorn
        assert_431(answer, "request headers over 65536 bytes")
        assert httpx.get(f"{platform.url}/healthz").status_code == 200

        client.photons.push(EXAMPLES / "echo")
        client.deployments.create("echo", "echo")
        client.deployments.wait_ready("echo", timeout=120)
        routes = httpx.get(f"{platform.url}/api/v1/gateway/routes", headers=admin).json()
        [replica] = next(d for d in routes["deployments"] if d["name"] == "echo")["replicas"]
        key = replica["key"]
        assert key and len(key) >= 32
        shown = httpx.get(f"{platform.url}/api/v1/deployments/echo", headers=admin).text
        listed = httpx.get(f"{platform.url}/api/v1/deployments", headers=admin).text
        cli = subprocess.run([sys.executable, "-m", "nubis.cli.main", "deployment", "get", "echo",
                              "--output", "json"], capture_output=True, text=True, env=platform.env,
                             timeout=60)
        for text in (shown, listed, cli.stdout, cli.stderr):
            assert key not in text
        assert cli.returncode == 0, cli.stderr

        endpoint = replica["endpoint"]
        direct = httpx.post(f"{endpoint}/echo", json={"text": "x"}, headers=admin)
        assert (direct.status_code, direct.json()) == (401, unauthorized_replica())
        assert httpx.get(f"{endpoint}/readyz").status_code == 200
        via = httpx.post(f"{platform.gateway_url}/default/echo/echo", json={"text": "x"}, headers=admin)
        assert (via.status_code, via.json()) == (200, {"text": "x"})
        client.deployments.delete("echo")


async def test_a_replica_s_metrics_through_the_gateway(gateway: Gateway,
                                                       local_replica: ReplicaHandle) -> None:
    """/-/replicas/<id>/metrics: the replica's own /metrics read with its key, for the gateway's
    token or a token that may call its deployment; what Prometheus scrapes (docs/observability.md)."""
    url, key = local_replica.endpoint, local_replica.ref["replica_key"]
    assert url is not None and key
    gateway.set_routes(route("echo", url, key=key, access="private", token_hashes=[CALLER_HASH]))
    caller, own = {"Authorization": f"Bearer {CALLER}"}, {"Authorization": f"Bearer {GATEWAY_TOKEN}"}
    metrics = f"{gateway.url}/-/replicas/r0/metrics"
    assert httpx.post(f"{gateway.url}/ws/echo/echo", json={"text": "x"}, headers=caller).status_code == 200
    for headers in (own, caller):
        scraped = httpx.get(metrics, headers=headers)
        assert scraped.status_code == 200, scraped.text
        assert scraped.headers["content-type"].startswith("text/plain")
        assert 'nubis_photon_requests_total{handler="echo",status="200"} 1.0' in scraped.text
    refused = {"code": "unauthorized",
               "message": "a replica's metrics need 'Authorization: Bearer <token>': the gateway's token, "
                          "or a token of the replica's workspace (a replica that is not routed looks the "
                          "same)"}
    for headers, replica in (({}, "r0"), ({"Authorization": "Bearer nbs_other"}, "r0"), (caller, "r9")):
        resp = httpx.get(f"{gateway.url}/-/replicas/{replica}/metrics", headers=headers)
        assert resp.status_code == 401
        assert resp.json()["error"] == {**refused, "details": {"replica": replica}}
    gone = httpx.get(f"{gateway.url}/-/replicas/r9/metrics", headers=own)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"

    gateway.set_routes(route("echo", url, key=key))  # public: calls need no token, metrics still do
    assert httpx.get(metrics).status_code == 401
    gateway.set_routes(route("echo", f"http://127.0.0.1:{free_port()}", key=key))  # nobody listens
    down = httpx.get(metrics, headers=own)
    assert down.status_code == 502 and down.json()["error"]["code"] == "upstream_error"

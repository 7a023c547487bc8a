"""The gateway fed over HTTP: routes polled from a URL (token, ETag), load reported back.

The control plane's routes endpoint is written by another part of the issue; this stand-in
serves the documented contract (docs/gateway.md) so that the gateway's side is tested now.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from servers import EXAMPLES, ROOT, PhotonProcess, free_port, photon_process, stop

TOKEN = "nbs_gateway-own-token"


class ControlPlane:
    """Serves one routing table at /routes (bearer token, ETag) and records /load reports."""

    def __init__(self) -> None:
        self.table: dict[str, Any] = {"version": 0, "deployments": []}
        self.reports: list[dict[str, Any]] = []
        self.answers: list[int] = []
        plane = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._answer(401, b"{}")
                    return
                etag = f'"{plane.table["version"]}"'
                if self.headers.get("If-None-Match") == etag:
                    self._answer(304, b"")
                    return
                self._answer(200, json.dumps(plane.table).encode(), etag)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Authorization") == f"Bearer {TOKEN}":
                    plane.reports.append(json.loads(body))
                self._answer(204, b"")

            def _answer(self, status: int, body: bytes, etag: str | None = None) -> None:
                plane.answers.append(status)
                self.send_response(status)
                if etag:
                    self.send_header("ETag", etag)
                if status not in (204, 304):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ControlPlane:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shut_down()

    def shut_down(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join()
        self.server.server_close()


@contextlib.contextmanager
def gateway_on_url(plane: ControlPlane, log: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nubis.gateway", "--port", str(port), "--routes-url",
             f"{plane.url}/routes", "--report-url", f"{plane.url}/load", "--token", TOKEN,
             "--poll-interval", "0.2", "--gateway-id", "gw-test", "--log-level", "warning"],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        try:
            wait_for(lambda: _healthy(url), f"gateway not up:\n{log.read_text()}", 60)
            yield url
        finally:
            stop(proc)  # type: ignore[arg-type]


def _healthy(url: str) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    return False


def wait_for(check: Any, message: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def version(gateway: str) -> int | None:
    return httpx.get(f"{gateway}/healthz").json()["routes_version"]


def table(version: int, replica: PhotonProcess, *, ready: bool = True) -> dict[str, Any]:
    return {"version": version, "deployments": [{
        "workspace": "ws", "name": "echo", "access": "private", "hold_s": 30,
        "token_hashes": [hashlib.sha256(b"nbs_caller").hexdigest()],
        "replicas": [{"replica_id": "r0", "endpoint": replica.url, "ready": ready}],
    }]}


@pytest.fixture(scope="module")
def replica() -> Iterator[PhotonProcess]:
    with photon_process(EXAMPLES / "echo", "--log-level", "warning") as proc:
        yield proc


def test_routes_polled_with_token_and_etag_and_load_reported(
    replica: PhotonProcess, tmp_path: Path
) -> None:
    caller = {"Authorization": "Bearer nbs_caller"}
    with ControlPlane() as plane, gateway_on_url(plane, tmp_path / "gw.log") as gateway:
        plane.table = table(1, replica, ready=False)
        wait_for(lambda: version(gateway) == 1, "table 1 not taken")
        with contextlib.ExitStack() as stack:  # a request held: the report shows it as demand
            held = stack.enter_context(httpx.Client(timeout=60))
            thread_result: list[httpx.Response] = []
            worker = threading.Thread(target=lambda: thread_result.append(
                held.post(f"{gateway}/ws/echo/echo", json={"text": "held"}, headers=caller)))
            worker.start()
            wait_for(lambda: any(d["queued"] == 1 for r in plane.reports for d in r["deployments"]),
                     "no load report with the held request")
            plane.table = table(2, replica)
            worker.join(30)
        assert thread_result[0].status_code == 200
        assert thread_result[0].json() == {"text": "held"}
        wait_for(lambda: plane.reports[-1]["routes_version"] == 2, "no report after table 2")
        assert plane.reports[-1]["gateway_id"] == "gw-test"
        wait_for(lambda: 304 in plane.answers, "the gateway never sent If-None-Match")
        assert 401 not in plane.answers

        plane.shut_down()  # the control plane is gone: the gateway serves from its last table
        time.sleep(0.5)
        resp = httpx.post(f"{gateway}/ws/echo/echo", json={"text": "x"}, headers=caller)
        assert (resp.status_code, resp.json()) == (200, {"text": "x"})
        assert version(gateway) == 2

"""Scale from zero (the request is held, not failed) and scale up under load, end to end.

Scaling back to zero after the idle period is checked by the policy's unit tests (its default
wait is minutes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import nubis

from platform_process import PlatformProcess, nubis_up

pytestmark = pytest.mark.e2e


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[PlatformProcess]:
    with nubis_up(tmp_path / "home") as p:
        yield p


def until(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_scale_from_zero_then_up_under_load(platform: PlatformProcess) -> None:
    client = nubis.Client(platform.url, platform.admin_token)
    client.photons.push("examples/echo")
    client.deployments.create("echo", "echo", min_replicas=0, max_replicas=3, target_in_flight=2)
    dep = client.deployments.get("echo")
    assert (dep.target_replicas, dep.replicas) == (0, [])
    url = f"{platform.gateway_url}/default/echo"
    headers = {"authorization": f"Bearer {platform.admin_token}"}

    r = httpx.post(f"{url}/echo", json={"text": "cold"}, headers=headers, timeout=60)
    assert r.status_code == 200, r.text  # held while a replica started, not failed
    assert client.deployments.get("echo").ready_replicas == 1

    stop = threading.Event()
    failures: list[int] = []

    def load() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                resp = http.post(f"{url}/count", json={"n": 1, "delay": 0.05}, headers=headers)
                if resp.status_code != 200:
                    failures.append(resp.status_code)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        until(lambda: client.deployments.get("echo").ready_replicas >= 2, 30, "a scale-up")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    kinds = [e.message for e in client.deployments.events("echo") if e.kind == "scale"]
    assert any("scaling from zero" in m for m in kinds)
    assert any("scaling up" in m for m in kinds)

"""Deployment timings through a real `nubis up`: cold start, first response from zero, load step.

    python bench/deployments.py              # 3 rounds
    python bench/deployments.py --rounds 1

- cold start: `POST /api/v1/deployments` (echo photon, 1 replica) → first 200 through the gateway;
- from zero: a deployment scaled to zero (min 0) → first 200 of a request sent to the gateway
  (held while a replica starts);
- load step: 1 → 16 concurrent clients on a 50 ms handler (echo's `count` with delay 0.05, target
  2 in flight per replica, max 4) → seconds until the replicas the load asks for are ready.
Targets (the deployments issue): ≤ 2 s, ≤ 3 s, ≤ 5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, format_table, free_port, machine_line, median, stop_process

TARGETS = {"cold start": 2.0, "first response from zero": 3.0, "load step 1→16: replicas ready": 5.0}


@contextlib.contextmanager
def platform() -> Iterator[tuple[str, str, dict[str, str]]]:
    """A `nubis up` with the echo photon pushed: (API URL, gateway URL, auth headers)."""
    with tempfile.TemporaryDirectory() as home:
        port, gateway = free_port(), free_port()
        env = {**os.environ, "NUBIS_HOME": home}
        proc = subprocess.Popen(
            [sys.executable, "-m", "nubis.cli.main", "up", "--home", home, "--port", str(port),
             "--gateway-port", str(gateway)],
            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            until(lambda: _ok(f"http://127.0.0.1:{port}/healthz"), 60)
            subprocess.run([sys.executable, "-m", "nubis.cli.main", "photon", "push", "examples/echo"],
                           env=env, cwd=REPO, check=True, capture_output=True)
            token = (Path(home) / "admin.token").read_text().strip()
            yield (f"http://127.0.0.1:{port}/api/v1", f"http://127.0.0.1:{gateway}/default",
                   {"authorization": f"Bearer {token}"})
        finally:
            stop_process(proc, grace=60)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def until(check: Callable[[], object], timeout: float) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if check():
            return time.perf_counter() - start
        time.sleep(0.02)
    raise TimeoutError(f"not done within {timeout} s")


def first_200(url: str, headers: dict[str, str]) -> bool:
    try:
        return httpx.post(url, json={"text": "x"}, headers=headers, timeout=60).status_code == 200
    except httpx.HTTPError:
        return False


def cold_start(api: str, gateway: str, headers: dict[str, str], name: str) -> float:
    start = time.perf_counter()
    spec = {"name": name, "photon": "echo", "autoscaling": {"min_replicas": 1, "max_replicas": 1}}
    httpx.post(f"{api}/deployments", json=spec, headers=headers).raise_for_status()
    until(lambda: first_200(f"{gateway}/{name}/echo", headers), 60)
    return time.perf_counter() - start


def from_zero(api: str, gateway: str, headers: dict[str, str], name: str) -> float:
    spec = {"name": name, "photon": "echo", "autoscaling": {"min_replicas": 0, "max_replicas": 1}}
    httpx.post(f"{api}/deployments", json=spec, headers=headers).raise_for_status()
    time.sleep(2)  # the gateway lists it, with no replica
    start = time.perf_counter()
    assert first_200(f"{gateway}/{name}/echo", headers)
    return time.perf_counter() - start


def load_step(api: str, gateway: str, headers: dict[str, str], name: str) -> float:
    scaling = {"min_replicas": 1, "max_replicas": 4, "target_in_flight": 4, "scale_up_delay_s": 0}
    httpx.post(f"{api}/deployments", json={"name": name, "photon": "echo", "autoscaling": scaling},
               headers=headers).raise_for_status()
    until(lambda: first_200(f"{gateway}/{name}/echo", headers), 60)
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                http.post(f"{gateway}/{name}/count", json={"n": 1, "delay": 0.05}, headers=headers)

    threads = [threading.Thread(target=client) for _ in range(16)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    try:
        def scaled() -> bool:
            dep = httpx.get(f"{api}/deployments/{name}", headers=headers).json()
            return dep["target_replicas"] > 1 and dep["ready_replicas"] >= dep["target_replicas"]
        until(scaled, 60)
        return time.perf_counter() - start
    finally:
        stop.set()
        for t in threads:
            t.join()


def remove(api: str, headers: dict[str, str], name: str) -> None:
    """Delete and wait until its replicas are gone (2 cores hold 4 echo replicas of 0.5 CPU)."""
    httpx.delete(f"{api}/deployments/{name}", headers=headers)

    def gone() -> bool:
        names = [d["name"] for d in httpx.get(f"{api}/deployments", headers=headers).json()]
        creating = httpx.post(f"{api}/deployments", headers=headers,
                              json={"name": name, "photon": "nope"}).status_code
        return name not in names and creating != 409
    until(gone, 60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {k: [] for k in TARGETS}
    with platform() as (api, gateway, headers):
        for i in range(args.rounds):
            results["cold start"].append(cold_start(api, gateway, headers, f"cold-{i}"))
            remove(api, headers, f"cold-{i}")
            results["first response from zero"].append(from_zero(api, gateway, headers, f"zero-{i}"))
            remove(api, headers, f"zero-{i}")
            results["load step 1→16: replicas ready"].append(load_step(api, gateway, headers, f"step-{i}"))
            remove(api, headers, f"step-{i}")
    rows = [[k, f"{median(v):.2f}", f"{min(v):.2f}–{max(v):.2f}", f"≤ {TARGETS[k]:g}",
             "met" if median(v) <= TARGETS[k] else "missed"] for k, v in results.items()]
    print(f"# deployment timings, echo photon, local backend; medians of {args.rounds} — {machine_line()}")
    print(format_table(["measure", "median s", "range s", "target s", ""], rows))


if __name__ == "__main__":
    main()

"""Usage as a user reads it, under a real `nubis up`: two replicas held for a measured interval give
CPU-seconds within 2% of the interval × their CPUs, a stopped replica stops counting, and
`nubis usage` prints the same numbers as a table, JSON and CSV with a price table's cost."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime

import pytest

import nubis

from platform_process import PlatformProcess
from servers import EXAMPLES

pytestmark = pytest.mark.e2e

CPU = 0.25


def ok(platform: PlatformProcess, *args: str) -> str:
    done = platform.cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def until(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)
    return found


def cpu_seconds(platform: PlatformProcess, since: datetime) -> tuple[float, datetime]:
    body = json.loads(ok(platform, "usage", "--since", since.isoformat(), "--by", "deployment", "-o", "json"))
    [row] = body["rows"]
    assert row["name"] == "echo" and row["kind"] == "replica"
    return row["cpu_seconds"], datetime.fromisoformat(body["until"])


def test_two_replicas_for_a_measured_interval(platform: PlatformProcess, client: nubis.Client) -> None:
    ok(platform, "deploy", str(EXAMPLES / "echo"), "--name", "echo", "--min", "2", "--max", "2",
       "--cpu", str(CPU), "--memory", "256Mi")
    until(lambda: client.deployments.get("echo").ready_replicas == 2, 120, "two ready replicas")
    both_ready = datetime.now(UTC)  # both run from here on: the measured interval starts

    time.sleep(3)
    running, answered_at = cpu_seconds(platform, both_ready)
    assert running == pytest.approx(2 * CPU * (answered_at - both_ready).total_seconds(), rel=0.02)

    asked = datetime.now(UTC)
    client.deployments.update("echo", min_replicas=1, max_replicas=1)
    until(lambda: len(client.deployments.get("echo").replicas) == 1, 60, "one replica left")
    seen = datetime.now(UTC)
    [stopped] = [e.at for e in client.deployments.events("echo") if "→ stopped" in e.message]
    assert asked <= stopped <= seen  # the platform's record of the stop lies where we saw it happen

    held, answered_at = cpu_seconds(platform, both_ready)
    expected = CPU * ((stopped - both_ready).total_seconds() + (answered_at - both_ready).total_seconds())
    assert held == pytest.approx(expected, rel=0.02)

    client.deployments.delete("echo")
    until(lambda: not [d for d in client.deployments.list() if d.name == "echo"], 60, "echo deleted")

    def stopped_counting() -> float | None:
        first, _ = cpu_seconds(platform, both_ready)
        time.sleep(1)
        return first if cpu_seconds(platform, both_ready)[0] == first else None

    # the last replica drains and stops after its deployment has left the list (docs/operations.md):
    # its interval closes then, and from then on nothing more counts
    after = until(stopped_counting, 60, "usage stops counting once the last replica has stopped")
    time.sleep(1)
    assert cpu_seconds(platform, both_ready)[0] == after
    assert after > held


def test_nubis_usage_table_csv_and_prices(platform: PlatformProcess, tmp_path) -> None:  # type: ignore[no-untyped-def]
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"cpu_hour": 3600, "memory_gib_hour": 0, "gpu_hour": 0}))
    body = json.loads(ok(platform, "usage", "--since", "1h", "--prices", str(prices), "-o", "json"))
    [row] = body["rows"]
    assert row["workspace"] == "default" and row["cost"] == pytest.approx(row["cpu_seconds"])

    rows = list(csv.DictReader(io.StringIO(ok(platform, "usage", "--since", "1h", "--by", "deployment",
                                              "--daily", "-o", "csv"))))
    assert {(r["workspace"], r["deployment"]) for r in rows} == {("default", "echo")}  # one a UTC day
    assert sum(float(r["cpu_hours"]) for r in rows) == pytest.approx(row["cpu_seconds"] / 3600)
    assert rows[-1]["day"] == datetime.now(UTC).date().isoformat()

    table = ok(platform, "usage", "--since", "1h", "--prices", str(prices))
    assert "cpu_hours" in table and "cost" in table and "held now" in table and "no quota" in table

    prices.write_text('{"cpu_hour": -1}')
    bad = platform.cli("usage", "--prices", str(prices))
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1, bad.stderr
    assert bad.stderr.startswith("error (validation_error): the price table") and "cpu_hour" in bad.stderr
    bad = platform.cli("usage", "--since", "soon")
    assert bad.returncode == 1 and "neither a duration" in bad.stderr

"""The metric history: 10 s steps for 24 h, rates, 5xx rate and latency percentiles from the
gateways' load reports (pure: a report and ``now`` in, points out)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pydantic
import pytest

from nubis.errors import ValidationError
from nubis.models.routes import REPORT_LATENCY_BOUNDS_S, DeploymentLoad, LoadReport
from nubis.server.services.metric_history import (
    SLOTS,
    STEP_S,
    MetricStore,
    default_step,
    parse_window,
    percentile_ms,
)

T0 = 1_800_000_000.0  # a multiple of 10 s
BUCKETS = len(REPORT_LATENCY_BOUNDS_S) + 1


def report(requests: int, errors: int = 0, *, bucket: int = 4, name: str = "echo",
           ws: str = "default") -> LoadReport:
    counts = [0] * BUCKETS
    counts[bucket] = requests
    return LoadReport(gateway_id="g", at=datetime.now(UTC), routes_version=1, deployments=[
        DeploymentLoad(workspace=ws, name=name, in_flight=0, queued=0, requests=requests, errors=errors,
                       latency_counts=counts)])


def test_reports_of_one_step_add_up_into_rates_and_error_rate() -> None:
    store = MetricStore()
    store.record(report(30, 3), now=T0 + 1)
    store.record(report(20, 2), now=T0 + 5)  # the same 10 s step (e.g. a second gateway)
    history = store.history("default", "echo", since_s=30, step_s=10, now=T0 + 9)
    assert [p.at.timestamp() for p in history.points] == [T0 - 20, T0 - 10, T0]
    last = history.points[-1]
    assert (last.requests_per_s, last.errors_per_s, last.error_rate) == (5.0, 0.5, 0.1)
    assert history.points[0].requests_per_s == 0 and history.points[0].p50_ms is None


def test_wider_steps_sum_their_10_s_steps() -> None:
    store = MetricStore()
    for i in range(6):
        store.record(report(10), now=T0 + i * STEP_S)
    history = store.history("default", "echo", since_s=120, step_s=60, now=T0 + 59)
    assert history.step_s == 60
    assert [p.requests_per_s for p in history.points] == [0.0, 1.0]


def test_series_are_per_workspace_and_deployment() -> None:
    store = MetricStore()
    store.record(report(10, ws="a"), now=T0)
    assert store.history("b", "echo", since_s=10, step_s=10, now=T0).points[0].requests_per_s == 0
    assert store.history("a", "other", since_s=10, step_s=10, now=T0).points[0].requests_per_s == 0
    assert store.history("a", "echo", since_s=10, step_s=10, now=T0).points[0].requests_per_s == 1


def test_a_step_a_day_old_is_overwritten_not_added_to() -> None:
    store = MetricStore()
    store.record(report(10), now=T0)
    day_later = T0 + SLOTS * STEP_S  # the same slot of the ring
    store.record(report(1), now=day_later)
    (now,) = store.history("default", "echo", since_s=10, step_s=10, now=day_later).points
    assert now.requests_per_s == 0.1
    before = store.history("default", "echo", since_s=20, step_s=10, now=day_later - STEP_S).points
    assert before[-1].requests_per_s == 0


def test_a_deployment_silent_for_a_day_is_forgotten() -> None:
    store = MetricStore()
    store.record(report(10, name="old"), now=T0)
    store.record(report(10, name="new"), now=T0 + (SLOTS + 1) * STEP_S)
    assert set(store._series) == {("default", "new")}


def test_percentiles_interpolate_within_the_bucket() -> None:
    counts = [0] * BUCKETS
    counts[1] = 100  # (5 ms, 10 ms]
    assert percentile_ms(counts, 0.5) == pytest.approx(7.5)
    assert percentile_ms(counts, 0.95) == pytest.approx(9.75)
    counts = [0] * BUCKETS
    counts[0], counts[-1] = 50, 50
    assert percentile_ms(counts, 0.5) == pytest.approx(5.0)
    assert percentile_ms(counts, 0.95) == REPORT_LATENCY_BOUNDS_S[-1] * 1000  # "at least" the last bound
    assert percentile_ms([0] * BUCKETS, 0.5) is None


@pytest.mark.parametrize(("text", "seconds"),
                         [("1h", 3600), ("15m", 900), ("90s", 90), ("90", 90), ("1d", 86400)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_window(text) == seconds


@pytest.mark.parametrize("text", ["", "1w", "2d", "5s", "-1h", "h"])
def test_bad_durations_are_refused_with_the_forms_that_work(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_window(text)


def test_default_step_keeps_about_120_points() -> None:
    assert default_step(3600) == 30
    assert default_step(600) == 10
    assert 86400 / default_step(86400) <= 121


def test_totals_sum_a_window_across_gaps_and_the_rings_end() -> None:
    store = MetricStore()
    start = (SLOTS - 3) * STEP_S  # steps that wrap past the end of the ring
    for k, requests in enumerate([5, 0, 7, 9, 0, 11]):
        if requests:
            store.record(report(requests, errors=1, bucket=k % BUCKETS), now=start + k * STEP_S)
    now = start + 5 * STEP_S + 1
    totals = store.totals("default", "echo", since_s=60, now=now)
    assert totals is not None and totals[:2] == [5 + 7 + 9 + 11, 4]
    assert totals[2:] == [5, 0, 7, 9, 0, 11] + [0] * (BUCKETS - 6)
    assert store.totals("default", "echo", since_s=30, now=now)[:2] == [9 + 11, 2]
    assert store.totals("default", "echo", since_s=60, now=now + SLOTS * STEP_S) is None  # a lap later
    assert store.totals("default", "other", since_s=60, now=now) is None


def test_reports_are_bounded_and_counts_saturate_instead_of_overflowing() -> None:
    for bad in ({"requests": -1}, {"in_flight": -1}, {"requests": 10**9 + 1}, {"latency_counts": [-1]}):
        with pytest.raises(pydantic.ValidationError):
            DeploymentLoad.model_validate({"workspace": "w", "name": "n", "in_flight": 0, "queued": 0,
                                           "requests": 1} | bad)
    store = MetricStore()
    for _ in range(5):  # five gateways' reports in one step: more than 32 bits hold
        store.record(report(10**9), now=T0 + 1)
    [point] = store.history("default", "echo", since_s=10, step_s=10, now=T0 + 9).points
    assert point.requests_per_s == (2**32 - 1) / STEP_S


def test_a_saved_history_reads_back_the_same_and_only_once(tmp_path: Path) -> None:
    store = MetricStore(now=T0 - 3600)
    store.record(report(10, 2, bucket=3), now=T0 - 600)
    store.record(report(7, name="other"), now=T0 - 20)
    store.record(report(5, bucket=9), now=T0)
    path = tmp_path / "metric-history.bin"
    assert store.save(path, now=T0) > 0 and path.stat().st_mode & 0o777 == 0o600
    back = MetricStore.load(path, now=T0 + 30)
    assert back.covered_since == T0 - 3600  # the saved store's coverage, not the restart's
    for name in ("echo", "other"):
        before = store.totals("default", name, since_s=3600, now=T0)
        assert before is not None and back.totals("default", name, since_s=3600, now=T0) == before
    assert back.history("default", "echo", since_s=900, step_s=60, now=T0) == store.history(
        "default", "echo", since_s=900, step_s=60, now=T0)
    assert not path.exists()  # read once: a crash later does not bring back old steps
    assert MetricStore.load(path, now=T0 + 60).totals("default", "echo", since_s=3600, now=T0) is None


def test_steps_older_than_a_day_are_not_read_back(tmp_path: Path) -> None:
    store = MetricStore(now=T0)
    store.record(report(10), now=T0)
    path = tmp_path / "h.bin"
    store.save(path, now=T0)
    later = MetricStore.load(path, now=T0 + SLOTS * STEP_S + 60)
    assert later.totals("default", "echo", since_s=SLOTS * STEP_S, now=T0 + SLOTS * STEP_S + 60) is None


@pytest.mark.parametrize("damage", ["cut", "garbage", "version"])
def test_a_damaged_file_starts_an_empty_history(tmp_path: Path, damage: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    store = MetricStore(now=T0)
    store.record(report(10), now=T0)
    path = tmp_path / "h.bin"
    store.save(path, now=T0)
    data = path.read_bytes()
    if damage == "cut":
        path.write_bytes(data[:-100])
    elif damage == "garbage":
        path.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00nope!" + data[13:])
    else:
        path.write_bytes(data.replace(b'"version": 1', b'"version": 9'))
    back = MetricStore.load(path, now=T0 + 10)
    assert back.totals("default", "echo", since_s=60, now=T0 + 10) is None and back.covered_since == T0 + 10
    assert "not read back" in caplog.text and not path.exists()

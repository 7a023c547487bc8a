"""Usage's pure parts: ``since`` as a duration or an ISO time, and the resource-seconds of
intervals clipped to a window, grouped, split at UTC midnights and priced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nubis.errors import ValidationError
from nubis.models.usage import Prices, UsageBy, UsageKind, parse_since
from nubis.server.services.usage import Interval, summarize

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
H = 3600.0


@pytest.mark.parametrize(("value", "back"), [
    ("45s", timedelta(seconds=45)), ("90m", timedelta(minutes=90)), ("1h", timedelta(hours=1)),
    ("30d", timedelta(days=30)), ("2w", timedelta(weeks=2)), ("1.5h", timedelta(minutes=90)),
    (" 7D ", timedelta(7)),
])
def test_durations(value: str, back: timedelta) -> None:
    assert parse_since(value, now=NOW) == NOW - back


def test_iso_times_are_utc_unless_they_say_otherwise() -> None:
    assert parse_since("2026-11-01", now=NOW) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("2026-11-01T08:00:00+02:00", now=NOW) == datetime(2026, 11, 1, 6, tzinfo=UTC)


@pytest.mark.parametrize(("value", "says"), [
    ("yesterday", "neither a duration"), ("3y", "neither a duration"), ("-1d", "neither a duration"),
    ("2026-12-01", "in the future"), ("4000d", "too far back"), ("1999-01-01", "too far back"),
    ("99999999999999999999999d", "out of range"), ("0001-01-01T00:00:00+23:59", "out of range"),
])
def test_bad_since_says_why(value: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says) as raised:
        parse_since(value, now=NOW)
    assert raised.value.details == [{"field": "since", "value": value}]


def interval(name: str, kind: UsageKind, *, cpu: float, start_h: float, stop_h: float | None,
             workspace: str = "ws", gpu: int = 0) -> Interval:
    return Interval(workspace=workspace, kind=kind, name=name, cpu=cpu, memory_gib=2 * cpu, gpu=gpu,
                    started_at=NOW + timedelta(hours=start_h),
                    stopped_at=None if stop_h is None else NOW + timedelta(hours=stop_h))


def test_clipped_to_the_window_and_a_running_one_up_to_its_end() -> None:
    rows, total = summarize([interval("web", UsageKind.replica, cpu=2, start_h=-5, stop_h=-1),
                             interval("web", UsageKind.replica, cpu=1, start_h=-2, stop_h=None),
                             interval("old", UsageKind.replica, cpu=8, start_h=-9, stop_h=-4)],
                            since=NOW - timedelta(hours=3), until=NOW, by=UsageBy.deployment, daily=False,
                            prices=None)
    assert [(r.name, r.cpu_seconds, r.memory_gib_seconds) for r in rows] == [("web", 6 * H, 12 * H)]
    assert total.cpu_seconds == 6 * H and total.cost is None  # "old" stopped before the window


def test_daily_splits_at_utc_midnight_and_prices_cost() -> None:
    midnight = NOW.replace(hour=0)
    across = interval("train", UsageKind.job, cpu=1, gpu=1, start_h=-13, stop_h=-11)  # 23:00 → 01:00
    rows, total = summarize([across], since=midnight - timedelta(days=1), until=NOW, by=UsageBy.job,
                            daily=True, prices=Prices(cpu_hour=1, memory_gib_hour=0.5, gpu_hour=10))
    assert [(r.day, r.cpu_seconds, r.gpu_seconds, r.cost) for r in rows] == [
        ((midnight - timedelta(days=1)).date(), H, H, 1 + 1 + 10), (midnight.date(), H, H, 12)]
    assert total.cost == 24


def test_by_workspace_adds_replicas_and_jobs() -> None:
    rows, _ = summarize([interval("web", UsageKind.replica, cpu=1, start_h=-1, stop_h=None),
                         interval("train", UsageKind.job, cpu=3, start_h=-1, stop_h=None),
                         interval("api", UsageKind.replica, cpu=1, start_h=-1, stop_h=None, workspace="b")],
                        since=NOW - timedelta(days=1), until=NOW, by=UsageBy.workspace, daily=False,
                        prices=None)
    assert [(r.workspace, r.kind, r.name, r.cpu_seconds) for r in rows] == [("b", None, None, H),
                                                                            ("ws", None, None, 4 * H)]

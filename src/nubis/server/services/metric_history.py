"""Metric history: each deployment's requests, 5xx answers and latency histogram in 10 s steps for
the last 24 h, from the gateways' per-second load reports. In memory; saved to NUBIS_HOME when
`nubis up` stops and read back when it starts (a crash loses it: the charts start again).

Memory is bounded: a series is a ring of ``SLOTS`` steps of ``2 + buckets`` 32-bit counts (8,640 ×
15 × 4 B ≈ 0.5 MiB), made when a deployment first reports traffic and dropped 24 h after its last;
so at most 0.5 MiB per deployment that served a request in the last day. Several gateways (or
gateway workers) add up: each reports the requests it finished since its previous report.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from nubis.errors import ValidationError
from nubis.home import write_private
from nubis.models.durations import parse_duration
from nubis.models.metric_history import MetricHistory, MetricPoint
from nubis.models.routes import REPORT_LATENCY_BOUNDS_S, LoadReport

log = logging.getLogger("nubis.metrics")
STEP_S = 10
FILE_VERSION = 1
SLOTS = 24 * 3600 // STEP_S
BUCKETS = len(REPORT_LATENCY_BOUNDS_S) + 1
COLUMNS = 2 + BUCKETS  # requests, 5xx, then the latency buckets
REQUESTS, ERRORS = 0, 1
COUNT_MAX = 2**32 - 1
MAX_POINTS = 1000


@dataclass
class Series:
    counts: array = field(default_factory=lambda: array("I", [0]) * (SLOTS * COLUMNS))
    stamps: array = field(default_factory=lambda: array("q", [-1]) * SLOTS)
    """The step number each slot holds (a slot from another lap of the ring reads as empty)."""
    last_step: int = -1

    def add(self, step: int, column: int, amount: int) -> None:
        slot = step % SLOTS
        if self.stamps[slot] != step:
            self.stamps[slot] = step
            base = slot * COLUMNS
            self.counts[base:base + COLUMNS] = array("I", [0]) * COLUMNS
        at = slot * COLUMNS + column
        self.counts[at] = min(self.counts[at] + amount, COUNT_MAX)  # 32-bit: saturate, never overflow
        self.last_step = max(self.last_step, step)

    def row(self, step: int) -> list[int] | None:
        slot = step % SLOTS
        if self.stamps[slot] != step:
            return None
        return list(self.counts[slot * COLUMNS:(slot + 1) * COLUMNS])


class MetricStore:
    """Per (workspace, deployment): the ring of 10 s steps. ``covered_since``: the time from which
    every gateway report is in it (its creation, or for a store read back after a restart, the
    saved store's)."""

    def __init__(self, *, now: float | None = None) -> None:
        self._series: dict[tuple[str, str], Series] = {}
        self.covered_since = time.time() if now is None else now

    def save(self, path: Path, *, now: float) -> int:
        """Write the last 24 h's steps to ``path`` (0600, atomically) for the next start to read
        back; returns the bytes written. A stop saves it; a crash loses what was not saved."""
        current = int(now // STEP_S)
        meta, parts = [], []
        for (workspace, name), series in self._series.items():
            slots = [i for i, step in enumerate(series.stamps) if step > current - SLOTS]
            steps = array("q", (series.stamps[i] for i in slots))
            rows = array("I")
            for i in slots:
                rows.extend(series.counts[i * COLUMNS:(i + 1) * COLUMNS])
            meta.append({"workspace": workspace, "name": name, "steps": len(steps)})
            parts += [steps.tobytes(), rows.tobytes()]
        header = json.dumps({"version": FILE_VERSION, "byteorder": sys.byteorder, "step_s": STEP_S,
                             "columns": COLUMNS, "covered_since": self.covered_since,
                             "series": meta}).encode()
        data = b"".join([len(header).to_bytes(8, "little"), header, *parts])
        write_private(path, data)
        return len(data)

    @classmethod
    def load(cls, path: Path, *, now: float) -> MetricStore:
        """The store saved at ``path`` (then removed: read once), or an empty one when there is none
        or it cannot be read (logged: the charts start again, nothing else is lost)."""
        store = cls(now=now)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return store
        try:
            store._read(data, now=now)
        except (ValueError, KeyError, TypeError, OverflowError) as e:
            log.warning("metric history %s not read back (%s): the charts start empty", path, e)
            store = cls(now=now)
        path.unlink(missing_ok=True)
        return store

    def _read(self, data: bytes, *, now: float) -> None:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + size])
        if (header["version"], header["byteorder"], header["step_s"], header["columns"]) != (
                FILE_VERSION, sys.byteorder, STEP_S, COLUMNS):
            raise ValueError("written by another version or machine")
        at, oldest = 8 + size, int(now // STEP_S) - SLOTS
        for entry in header["series"]:
            n = int(entry["steps"])
            steps, rows = array("q"), array("I")
            steps.frombytes(data[at:at + 8 * n])
            at += 8 * n
            rows.frombytes(data[at:at + 4 * n * COLUMNS])
            at += 4 * n * COLUMNS
            if len(steps) != n or len(rows) != n * COLUMNS:
                raise ValueError("the file is cut short")
            series = Series()
            for k, step in enumerate(steps):
                if step > oldest:
                    slot = step % SLOTS
                    series.stamps[slot] = step
                    series.counts[slot * COLUMNS:(slot + 1) * COLUMNS] = rows[k * COLUMNS:(k + 1) * COLUMNS]
                    series.last_step = max(series.last_step, step)
            if series.last_step >= 0:
                self._series[(str(entry["workspace"]), str(entry["name"]))] = series
        self.covered_since = float(header["covered_since"])

    def record(self, report: LoadReport, *, now: float) -> None:
        step = int(now // STEP_S)
        for load in report.deployments:
            if not load.requests:
                continue
            series = self._series.setdefault((load.workspace, load.name), Series())
            series.add(step, REQUESTS, load.requests)
            series.add(step, ERRORS, min(load.errors, load.requests))
            for i, n in enumerate(load.latency_counts[:BUCKETS]):
                if n:
                    series.add(step, 2 + i, n)
        for key in [k for k, s in self._series.items() if s.last_step < step - SLOTS]:
            del self._series[key]

    def totals(self, workspace: str, name: str, *, since_s: float, now: float) -> list[int] | None:
        """Requests, 5xx and each latency bucket summed over the 10 s steps of the last ``since_s``
        (the current one included); None when the deployment has no traffic recorded then. Runs of
        consecutive steps are summed column by column (the alert rules read 1,000s of deployments a
        round: bench/alerts.py)."""
        series = self._series.get((workspace, name))
        last = int(now // STEP_S)
        first = last - max(1, round(since_s / STEP_S)) + 1
        if series is None or series.last_step < first:
            return None
        counts, stamps = series.counts, series.stamps
        fresh = [step for step in range(first, last + 1) if stamps[step % SLOTS] == step]
        total = [0] * COLUMNS
        i = 0
        while i < len(fresh):
            j = i  # the run of consecutive steps from fresh[i], within one lap of the ring
            while j + 1 < len(fresh) and fresh[j + 1] == fresh[j] + 1 and fresh[j + 1] % SLOTS:
                j += 1
            slot = fresh[i] % SLOTS
            block = counts[slot * COLUMNS:(slot + j - i + 1) * COLUMNS]
            total = [t + sum(block[c::COLUMNS]) for c, t in enumerate(total)]
            i = j + 1
        return total

    def history(self, workspace: str, name: str, *, since_s: float, step_s: float,
                now: float) -> MetricHistory:
        """Points from ``now - since_s`` to now, each ``step_s`` wide (a multiple of 10 s); the last
        one ends with the current 10 s step, which is still filling."""
        per = max(1, round(step_s / STEP_S))
        last = int(now // STEP_S)
        count = max(1, math.ceil(since_s / STEP_S / per))
        first = last + 1 - count * per
        series = self._series.get((workspace, name))
        points = []
        for start in range(first, last + 1, per):
            total = [0] * COLUMNS
            for step in range(start, start + per):
                row = series.row(step) if series is not None else None
                if row is not None:
                    total = [a + b for a, b in zip(total, row, strict=True)]
            points.append(point(start * STEP_S, total, seconds=per * STEP_S))
        return MetricHistory(deployment=name, since_s=since_s, step_s=per * STEP_S, points=points)


def point(start: float, total: list[int], *, seconds: float) -> MetricPoint:
    requests, errors, buckets = total[REQUESTS], total[ERRORS], total[2:]
    return MetricPoint(
        at=datetime.fromtimestamp(start, UTC), requests_per_s=requests / seconds,
        errors_per_s=errors / seconds,
        error_rate=errors / requests if requests else None,
        p50_ms=percentile_ms(buckets, 0.50), p95_ms=percentile_ms(buckets, 0.95),
    )


def percentile_ms(buckets: list[int], q: float) -> float | None:
    """The ``q`` quantile from bucket counts, linear within its bucket; in the last (open) bucket,
    its lower bound (the answer is "at least that")."""
    total = sum(buckets)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(buckets):
        if n and seen + n >= rank:
            if i == len(REPORT_LATENCY_BOUNDS_S):
                return REPORT_LATENCY_BOUNDS_S[-1] * 1000
            low = REPORT_LATENCY_BOUNDS_S[i - 1] if i else 0.0
            high = REPORT_LATENCY_BOUNDS_S[i]
            return 1000 * (low + (high - low) * (rank - seen) / n)
        seen += n
    return REPORT_LATENCY_BOUNDS_S[-1] * 1000


def parse_window(text: str, *, name: str = "since") -> float:
    """A window of the history as users write it (``90s``, ``15m``, ``1h``): 10 s to 24 h."""
    return parse_duration(text, name=name, low=STEP_S, high=SLOTS * STEP_S)


def default_step(since_s: float) -> float:
    """About 120 points at most, in whole 10 s steps."""
    return max(STEP_S, STEP_S * round(since_s / 120 / STEP_S)) if since_s / STEP_S > 120 else STEP_S


def check_step(step_s: float, since_s: float) -> float:
    if step_s < STEP_S or since_s / step_s > MAX_POINTS:
        raise ValidationError(f"step must be at least {STEP_S} s and give at most {MAX_POINTS} points "
                              f"over {since_s:.0f} s")
    return step_s


def query(store: MetricStore, workspace: str, name: str, *, since: str, step: str | None,
          now: float) -> MetricHistory:
    """``since`` and ``step`` as users write them (``1h``, ``60s``), checked."""
    since_s = parse_window(since)
    step_s = check_step(parse_window(step, name="step") if step else default_step(since_s), since_s)
    return store.history(workspace, name, since_s=since_s, step_s=step_s, now=now)

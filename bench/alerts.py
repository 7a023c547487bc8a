"""The alert evaluator's CPU per round with 100, 1,000 and 5,000 deployments' metric series.

    python bench/alerts.py                # 50 rounds per size
    python bench/alerts.py --rounds 10

A round is what the evaluator does between its two short database sessions: read each deployment's
5 min totals from the metric history (10 s steps, the error_rate and latency_slo windows), run every
rule (``scheduler.alerts.evaluate``) and the state machine (``advance``) over the alerts of the round
before. The rows are built once, outside the timing; the metric store holds 30 min of traffic for
every deployment (10 workspaces). 5% of the deployments crash-loop, 5% answer 5xx, 5% are slow, so
the state machine carries ~15% of them as firing alerts from round to round. CPU time is the
thread's (``time.thread_time``), so other processes on the machine do not count. Target (the
operations issue): < 50 ms per round at 1,000 deployments.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import format_table, machine_line, median, percentile

from nubis.models.routes import DeploymentLoad, LoadReport
from nubis.server.orm import DeploymentRow, WorkspaceRow
from nubis.server.reconcilers.alerts import Loaded, snapshot_of
from nubis.server.scheduler.alerts import AlertRecord, advance, evaluate
from nubis.server.services.metric_history import STEP_S, MetricStore

SIZES = (100, 1_000, 5_000)
WORKSPACES = 10
HISTORY_S = 1800
NOW = 1_800_000_000.0


def build(size: int, rng: random.Random) -> tuple[Loaded, MetricStore]:
    workspaces = {f"w{i}": WorkspaceRow(id=f"w{i}", name=f"team-{i}") for i in range(WORKSPACES)}
    deployments = []
    store = MetricStore()
    for n in range(size):
        ws = workspaces[f"w{n % WORKSPACES}"]
        name = f"dep-{n}"
        kind = n % 20  # 0: crash-looping, 1: 5xx, 2: slow, else healthy
        crashes = [NOW - 30 * k for k in range(5)] if kind == 0 else []
        deployments.append((DeploymentRow(id=f"d{n}", workspace_id=ws.id, name=name), crashes))
        for step in range(int(HISTORY_S / STEP_S)):
            requests = rng.randint(5, 50)
            latency = [0] * 13
            latency[9 if kind == 2 else rng.randint(0, 4)] = requests
            load = DeploymentLoad(workspace=ws.name, name=name, in_flight=0, queued=0, requests=requests,
                                  errors=requests if kind == 1 else 0, latency_counts=latency)
            store.record(LoadReport(gateway_id="g", at="2026-01-01T00:00:00Z", routes_version=None,
                                    deployments=[load]), now=NOW - HISTORY_S + step * STEP_S)
    loaded = Loaded(workspaces=workspaces, overrides={}, deployments=deployments, failed_jobs=[], nodes=[],
                    quotas=[], states=[], silences=[])
    return loaded, store


def one_round(loaded: Loaded, store: MetricStore, states: list[AlertRecord], now: float) -> list[AlertRecord]:
    snapshot = snapshot_of(loaded, store, disks=[], storage_quotas=[], now=now)
    step = advance(states, evaluate(snapshot, now=now), snapshot=snapshot, silenced=lambda a: False, now=now)
    kept = {(a.workspace_id, a.key): a for a in states}
    for a in step.removed:
        kept.pop((a.workspace_id, a.key), None)
    kept.update({(a.workspace_id, a.key): a for a in step.changed})
    return list(kept.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    rows = []
    for size in SIZES:
        loaded, store = build(size, random.Random(size))
        states = one_round(loaded, store, [], NOW)  # the alerts are firing from here on
        cpu, wall = [], []
        for _ in range(args.rounds):
            started_cpu, started = time.thread_time(), time.perf_counter()
            states = one_round(loaded, store, states, NOW + 1)
            cpu.append(time.thread_time() - started_cpu)
            wall.append(time.perf_counter() - started)
        firing = sum(1 for a in states if a.state == "firing")
        rows.append([f"{size:,}", f"{firing:,}", f"{median(cpu) * 1000:.1f}", f"{percentile(cpu, 95):.1f}",
                     f"{median(wall) * 1000:.1f}", f"{median(cpu) * 1000 / size * 1000:.1f}"])
    machine = machine_line().removesuffix(", loopback")
    print(f"# alert evaluator, one round (metric windows + rules + state machine); {args.rounds} rounds"
          f" — {machine}")
    print(format_table(["deployments", "firing", "CPU median ms", "CPU p95 ms", "wall median ms",
                        "CPU µs per deployment"], rows))


if __name__ == "__main__":
    main()

"""Job admission: the time of one `decide_admissions` round over a queue of 100, 1,000 and 10,000 jobs.

    python bench/admission.py               # median of 20 rounds per queue length
    python bench/admission.py --rounds 5

The snapshot is a busy backend (64 CPU, 512 GiB, 8 GPU) with 100 running jobs, 8 workspaces (half
of them with CPU, memory and GPU quotas), priorities 0–4 and gangs of 1–8 workers, a quarter of
them asking for GPUs; about a quarter of the backend is free. Jobs are built once per queue length,
outside the timing; a round is one call on the same snapshot (the policy keeps no state, so every
round does the whole work). Target (the admission issue): well under 100 ms at 10,000 queued jobs,
the reconciler runs every 0.5 s.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import format_table, machine_line, median

from nubis.server.scheduler.admission import (
    AdmissionDecision,
    AdmissionSnapshot,
    Demand,
    QueuedJob,
    Quota,
    RunningJob,
    decide_admissions,
)

GIB = 2**30
QUEUE_LENGTHS = (100, 1_000, 10_000)
RUNNING = 100
WORKSPACES = [f"team-{i}" for i in range(8)]
TOTAL = Demand(cpu=64, memory=512 * GIB, gpu=8)
NOW = 10_000.0
TARGET_MS = 100.0


def worker(rnd: random.Random) -> Demand:
    gpu = rnd.choice([0, 0, 0, 1])
    return Demand(cpu=rnd.choice([0.25, 0.5, 1, 2, 4]), memory=rnd.choice([1, 2, 4, 8]) * GIB, gpu=gpu)


def snapshot(queued: int, *, seed: int = 1) -> AdmissionSnapshot:
    """A busy backend: ``RUNNING`` jobs hold about three quarters of it; ``queued`` jobs wait."""
    rnd = random.Random(seed)
    running = [
        RunningJob(id=f"run-{i}", workspace=rnd.choice(WORKSPACES), priority=rnd.randrange(5), seq=i,
                   workers=1, per_worker=Demand(cpu=0.5, memory=4 * GIB, gpu=int(i < 6)),
                   started_at=NOW - rnd.uniform(0, 3_600), preemptible=rnd.random() < 0.9)
        for i in range(RUNNING)
    ]
    queue = [
        QueuedJob(id=f"job-{i}", workspace=rnd.choice(WORKSPACES), priority=rnd.randrange(5), seq=RUNNING + i,
                  workers=rnd.choice([1, 1, 2, 4, 8]), per_worker=worker(rnd))
        for i in range(queued)
    ]
    usage: dict[str, Demand] = {}
    for job in running:
        held, per = usage.get(job.workspace, Demand()), job.per_worker
        usage[job.workspace] = Demand(cpu=held.cpu + per.cpu, memory=held.memory + per.memory,
                                      gpu=held.gpu + per.gpu)
    quotas = {ws: Quota(cpu=16, memory=128 * GIB, gpu=2) for ws in WORKSPACES[::2]}
    return AdmissionSnapshot(free=Demand(cpu=14, memory=112 * GIB, gpu=2), total=TOTAL, queue=queue,
                             running=running, quotas=quotas, usage=usage)


def time_rounds(snap: AdmissionSnapshot, rounds: int) -> tuple[list[float], AdmissionDecision]:
    decision = decide_admissions(snap, now=NOW)  # warm-up
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        decision = decide_admissions(snap, now=NOW)
        seconds.append(time.perf_counter() - start)
    return seconds, decision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    rows = []
    for queued in QUEUE_LENGTHS:
        seconds, decision = time_rounds(snapshot(queued), args.rounds)
        ms = [s * 1000 for s in seconds]
        rows.append([
            f"{queued:,}", str(RUNNING), str(len(decision.admit)), str(len(decision.preempt)),
            f"{median(ms):.2f}", f"{min(ms):.2f}–{max(ms):.2f}", f"{1000 / median(ms):,.0f}",
            "met" if median(ms) < TARGET_MS else "missed",
        ])
    machine = machine_line().removesuffix(", loopback")
    print(f"# admission policy, one decision round; medians of {args.rounds} — {machine}")
    print(format_table(["queued", "running", "admitted", "preempted", "median ms", "range ms", "rounds/s",
                        f"< {TARGET_MS:g} ms"], rows))


if __name__ == "__main__":
    main()

"""Serving overhead: the echo photon under nubis vs the same echo as a bare FastAPI app.

    python bench/serving.py              # 3 rounds x 5 s per cell
    python bench/serving.py --quick      # smoke run: 1 round x 1 s

Both run on uvicorn with the same settings (uvloop + httptools, access log off), one server at
a time on a free loopback port. Rounds interleave the two servers (and alternate which goes
first) so that drift on a shared machine hits both equally; each cell reports medians over rounds.
Target (the issue): nubis >= 0.9x bare req/s at concurrency 16 and 64, sync and async.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from _common import (
    LoadResult,
    Quiet,
    ServerSpec,
    add_quiet_args,
    format_table,
    have_wrk,
    machine_line,
    measure_quietly,
    median,
    others_line,
    quiet_from_args,
    run_aiohttp,
    run_wrk,
    running_server,
)

NUBIS = ServerSpec(
    "nubis", ("-m", "nubis.photon.serve", "examples/echo", "--log-level", "warning"), "/readyz"
)
BARE = ServerSpec(
    "bare",
    ("-m", "uvicorn", "bench.baseline_fastapi:app", "--no-access-log", "--log-level", "warning"),
    "/openapi.json",
)
PATHS = {"sync": "/echo", "async": "/aecho"}
BODY = b'{"text": "hello from the serving benchmark"}'
TARGET = 0.9
TARGET_CONCURRENCY = (16, 64)


@dataclass(frozen=True)
class Cell:
    kind: str
    concurrency: int


@dataclass(frozen=True)
class Plan:
    cells: tuple[Cell, ...]
    rounds: int
    duration: float
    warmup: float
    tool: str
    quiet: Quiet


Results = dict[str, dict[Cell, list[LoadResult]]]


def load(url: str, concurrency: int, seconds: float, tool: str) -> LoadResult:
    if tool == "wrk":
        return run_wrk(url, BODY, concurrency=concurrency, duration=seconds)
    return run_aiohttp(url, [BODY], concurrency=concurrency, duration=seconds)


def measure_server(spec: ServerSpec, plan: Plan) -> dict[Cell, tuple[LoadResult, float]]:
    """Start ``spec`` once and measure every cell on it, each after its own warm-up; with each
    result, the cores other processes used meanwhile."""
    results = {}
    with running_server(spec) as server:
        for cell in plan.cells:
            url = server.base + PATHS[cell.kind]
            load(url, cell.concurrency, plan.warmup, plan.tool)  # warm-up
            result, others = measure_quietly(
                lambda url=url, cell=cell: load(url, cell.concurrency, plan.duration, plan.tool),
                server.pid,
                plan.quiet,
            )
            print(f"  {cell.kind} c={cell.concurrency}: {result.rps:,.0f} req/s, "
                  f"others {others:.2f} cores", file=sys.stderr, flush=True)
            if result.errors:
                print(f"  ! {result.errors} errors", file=sys.stderr)
            results[cell] = (result, others)
    return results


def run_rounds(plan: Plan) -> tuple[Results, list[float]]:
    """Results by server and cell, and the other processes' cores of every measured run."""
    results: Results = defaultdict(lambda: defaultdict(list))
    others: list[float] = []
    for number in range(plan.rounds):
        order = (NUBIS, BARE) if number % 2 == 0 else (BARE, NUBIS)
        for spec in order:
            print(f"round {number + 1}/{plan.rounds}: {spec.name}", file=sys.stderr, flush=True)
            for cell, (result, other) in measure_server(spec, plan).items():
                results[spec.name][cell].append(result)
                others.append(other)
    return results, others


def ratio(results: Results, cell: Cell) -> float:
    bare = median([r.rps for r in results["bare"][cell]])
    return median([r.rps for r in results["nubis"][cell]]) / bare if bare else 0.0


def render(results: Results, plan: Plan) -> str:
    headers = ["handler", "conc.", "nubis req/s", "bare req/s", "nubis/bare",
               "nubis p50/p99 ms", "bare p50/p99 ms"]
    rows = []
    for cell in plan.cells:
        nubis, bare = results["nubis"][cell], results["bare"][cell]
        rows.append([
            cell.kind,
            str(cell.concurrency),
            f"{median([r.rps for r in nubis]):,.0f}",
            f"{median([r.rps for r in bare]):,.0f}",
            f"{ratio(results, cell):.2f}x",
            _latency(nubis),
            _latency(bare),
        ])
    return format_table(headers, rows)


def _latency(runs: Sequence[LoadResult]) -> str:
    return f"{median([r.p50_ms for r in runs]):.2f} / {median([r.p99_ms for r in runs]):.2f}"


def verdict(results: Results, plan: Plan) -> list[str]:
    lines = []
    for cell in plan.cells:
        if cell.concurrency in TARGET_CONCURRENCY:
            got = ratio(results, cell)
            state = "met" if got >= TARGET else "MISSED"
            lines.append(f"{cell.kind} c={cell.concurrency}: {got:.2f}x vs >= {TARGET}x: {state}")
    return lines


def parse_args(argv: list[str] | None) -> Plan:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--load", choices=["wrk", "aiohttp"], default=None,
                        help="load generator (default: wrk if installed, else aiohttp)")
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s per cell")
    add_quiet_args(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 1.0, 1.0
    cells = tuple(Cell(k, c) for k in PATHS for c in args.concurrency)
    tool = args.load or ("wrk" if have_wrk() else "aiohttp")
    return Plan(cells, args.rounds, args.duration, args.warmup, tool, quiet_from_args(args))


def main(argv: list[str] | None = None) -> int:
    plan = parse_args(argv)
    results, others = run_rounds(plan)
    print(f"\nServing: echo, nubis vs bare FastAPI ({machine_line()})")
    print(f"load: {plan.tool}, {plan.rounds} rounds x {plan.duration:g} s per cell after "
          f"{plan.warmup:g} s warm-up; medians over rounds")
    print(f"{others_line(others)}\n")
    print(render(results, plan))
    print()
    print("\n".join(verdict(results, plan)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

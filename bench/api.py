"""Control-plane API throughput: authenticated GETs and a 1,000-item list, SQLite vs PostgreSQL.

    python bench/api.py                 # 3 rounds of 5 s per cell
    python bench/api.py --quick         # 1 round of 2 s

For each database a real `nubis up` runs in a subprocess with a fresh state folder (and, for
PostgreSQL, a fresh database on 127.0.0.1:5432); 1,000 secrets are created through the API, then
wrk drives each endpoint with the admin token at 16 connections. Rounds interleave the two
databases so machine noise hits both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    LoadResult,
    ServerSpec,
    format_table,
    have_wrk,
    machine_line,
    median,
    parse_wrk,
    running_server,
)

PG_ADMIN = os.environ.get("NUBIS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
OBJECTS = 1000
CONCURRENCY = 16
ENDPOINTS = [
    ("GET /api/v1/whoami", "/api/v1/whoami"),
    ("GET /api/v1/workspaces/default", "/api/v1/workspaces/default"),
    (f"GET /api/v1/secrets ({OBJECTS} items)", "/api/v1/secrets"),
]
WRK_GET = """\
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer {token}"
"""


async def _pg(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def fresh_postgres() -> Iterator[str]:
    name = f"nubis_bench_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
    finally:
        asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def platform(db: str) -> Iterator[tuple[str, str]]:
    """A seeded `nubis up`: yields (base URL, admin token)."""
    with tempfile.TemporaryDirectory() as home, contextlib.ExitStack() as stack:
        argv = ["-m", "nubis.cli.main", "up", "--home", home]
        if db == "postgresql":
            argv += ["--db", stack.enter_context(fresh_postgres())]
        spec = ServerSpec(db, tuple(argv), "/healthz", env=(("NUBIS_HOME", home),))
        base = stack.enter_context(running_server(spec)).base
        token = (Path(home) / "admin.token").read_text().strip()
        seed(base, token)
        yield base, token


def seed(base: str, token: str) -> None:
    headers = {"authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
        for i in range(OBJECTS):
            http.put(f"/api/v1/secrets/SECRET_{i:04d}", json={"value": f"v{i}"}).raise_for_status()
        assert len(http.get("/api/v1/secrets").json()) == OBJECTS


def run_get(url: str, token: str, duration: float) -> LoadResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_GET.format(token=token))
    try:
        argv = ["wrk", "--latency", "-s", script.name, "-t", "2", "-c", str(CONCURRENCY),
                "-d", f"{max(1, round(duration))}s", url]
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(script.name)
    return parse_wrk(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration = 1, 2.0
    if not have_wrk():
        sys.exit("wrk is needed: apt-get install -y wrk")
    results: dict[tuple[str, str], list[LoadResult]] = {}
    with platform("sqlite") as sqlite, platform("postgresql") as pg:
        servers = {"sqlite": sqlite, "postgresql": pg}
        for _ in range(args.rounds):
            for label, path in ENDPOINTS:
                for db, (base, token) in servers.items():
                    result = run_get(base + path, token, args.duration)
                    if result.errors:
                        sys.exit(f"{db} {label}: {result.errors} failed requests")
                    results.setdefault((label, db), []).append(result)
    rows = []
    for label, _ in ENDPOINTS:
        cells = {}
        for db in ("sqlite", "postgresql"):
            runs = results[(label, db)]
            cells[db] = (median([r.rps for r in runs]), median([r.p50_ms for r in runs]),
                         median([r.p99_ms for r in runs]))
        rows.append([
            label,
            f"{cells['sqlite'][0]:.0f}", f"{cells['sqlite'][1]:.1f} / {cells['sqlite'][2]:.1f}",
            f"{cells['postgresql'][0]:.0f}",
            f"{cells['postgresql'][1]:.1f} / {cells['postgresql'][2]:.1f}",
            f"{cells['postgresql'][0] / cells['sqlite'][0]:.2f}",
        ])
    print(f"# API throughput, {CONCURRENCY} connections, admin token, medians of {args.rounds} "
          f"rounds x {args.duration:.0f} s — {machine_line()}")
    print(format_table(
        ["endpoint", "SQLite req/s", "SQLite p50/p99 ms", "PostgreSQL req/s",
         "PostgreSQL p50/p99 ms", "PG/SQLite"],
        rows,
    ))


if __name__ == "__main__":
    main()

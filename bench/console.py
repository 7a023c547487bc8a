"""The web console's server time per page on a loaded platform, and the JS/CSS each page loads.

    python bench/console.py                 # 20 requests per page
    python bench/console.py --requests 50

Seeds a real platform's database through the services (the same functions the API calls): 1,000
jobs (most finished: succeeded, failed, cancelled; 40 left queued behind a CPU quota, with their
reason), 10,000 job events, per-epoch metrics on 100 of them, and 4,000 usage intervals (two
workers per job, 20 replica starts per deployment, as the reconcilers write them); then starts
`nubis up` on it and adds, through the SDK, 100 deployments of the echo photon (min 0 replicas:
none starts), 20 secrets, 20 tokens and 300 files in storage. It logs in to the console with the
admin token (a session cookie, as a browser does) and times every page over real HTTP on loopback:
the time to the last byte of the page, median and p95. Weight: the bytes of the scripts and style
sheets the page links.
Target (the console issue): p95 < 300 ms for every page.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urljoin

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, format_table, machine_line, median, percentile
from _platform import platform
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

import nubis
from nubis.models.jobs import JobSpec, JobStatus, MetricsReport
from nubis.models.resources import Resources
from nubis.models.workspaces import QuotaRequest
from nubis.server.app import build_context, prepare
from nubis.server.deps import Caller, caller_of
from nubis.server.orm import JobRow, TokenRow, UsageIntervalRow, WorkspaceRow
from nubis.server.services import jobs, workspaces
from nubis.server.settings import ServerSettings

JOBS, QUEUED, EVENTS_PER_JOB, WITH_METRICS, EPOCHS = 1000, 40, 10, 100, 20
DEPLOYMENTS, SECRETS, TOKENS, FILES = 100, 20, 20, 300
WORKERS, REPLICA_STARTS = 2, 20  # usage intervals: per job, and per deployment over the last 30 days
TARGET_P95_MS = 300.0
ENDINGS = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)
ASSET = re.compile(r'<(?:script[^>]*\ssrc|link[^>]*\srel="stylesheet"[^>]*\shref)="([^"]+)"')


async def admin_caller(session: AsyncSession) -> Caller:
    found = (await session.execute(
        select(TokenRow, WorkspaceRow).join(WorkspaceRow, WorkspaceRow.id == TokenRow.workspace_id)
        .where(TokenRow.superuser.is_(True)))).first()
    assert found is not None
    return await caller_of(session, found[0], found[1], None)


async def seed_jobs(home: Path) -> None:
    """The jobs, their events and metrics, written through the jobs service before `nubis up` starts."""
    ctx = build_context(ServerSettings(home=home))
    await prepare(ctx)
    try:
        async with ctx.db.sessions() as session:
            caller = await admin_caller(session)
            for i in range(JOBS):
                spec = JobSpec(name=f"train-{i:04d}", command=["python", "-c", f"print({i})"],
                               resources=Resources(cpu=1), priority=i % 3)
                job = await jobs.create(session, ctx, caller, spec)
                row = await jobs.get_row_or_raise(session, caller, job.id)
                await _finish(session, caller, row, i)
            await workspaces.set_quota(session, caller, workspaces.DEFAULT_WORKSPACE,
                                       QuotaRequest(cpu_quota=0.5))
            seed_usage(session, caller.workspace_id)
            await session.commit()
    finally:
        await ctx.db.dispose()


def seed_usage(session: AsyncSession, workspace_id: str) -> None:
    """Usage intervals as the reconcilers write them over the last 30 days: each job's workers, and
    each deployment's replicas started ``REPLICA_STARTS`` times; each held for up to 6 hours."""
    now = datetime.now(UTC)
    units = [("job", f"train-{i:04d}") for i in range(JOBS) for _ in range(WORKERS)]
    units += [("replica", f"echo-{d:03d}") for d in range(DEPLOYMENTS) for _ in range(REPLICA_STARTS)]
    for i, (kind, name) in enumerate(units):
        started = now - timedelta(days=30) + timedelta(seconds=i * 30 * 86400 / len(units))
        session.add(UsageIntervalRow(
            workspace_id=workspace_id, kind=kind, object_name=name, object_id=f"id-{name}",
            unit_id=f"{name}-{i}", node="local", cpu=1.0, memory_gib=2.0, gpu=0, started_at=started,
            stopped_at=min(now, started + timedelta(minutes=i % 360))))


async def _finish(session: AsyncSession, caller: Caller, row: JobRow, i: int) -> None:
    """Job ``i``: events up to ``EVENTS_PER_JOB``, metrics per epoch for some; most of them end."""
    if i >= QUEUED:
        jobs.switch_job_status(session, row, JobStatus.running)
    for epoch in range(1, EPOCHS + 1 if i < WITH_METRICS else 1):
        report = MetricsReport.model_validate({"epoch": epoch, "epochs": EPOCHS, "loss": 2.0 / epoch,
                                               "accuracy": 1 - 1 / (epoch + 1)})
        await jobs.report_metrics(session, caller, row.id, report)
    moves = []
    if i >= QUEUED:
        ending = ENDINGS[i % 3]
        moves = [JobStatus.stopping, ending] if ending == JobStatus.cancelled else [ending]
    for status in moves:
        jobs.switch_job_status(session, row, status, None if status == JobStatus.succeeded else "seeded end")
    written = 1 + (1 + len(moves) if i >= QUEUED else 0)  # "created" and one event per status move
    for k in range(EVENTS_PER_JOB - written):
        jobs.event(session, row.id, "progress", f"step {k} of job {i}")
    await session.commit()


def seed_over_api(client: nubis.Client) -> None:
    """Deployments (min 0: no replica starts), secrets, tokens and files through the SDK."""
    client.photons.push(REPO / "examples" / "echo")
    for i in range(DEPLOYMENTS):
        client.deployments.create(f"echo-{i:03d}", "echo", min_replicas=0)
    for i in range(SECRETS):
        client.secrets.set(f"SECRET_{i}", f"value {i}")
    for i in range(TOKENS):
        client.tokens.create(f"bench-{i}", role=("member", "viewer")[i % 2])
    for i in range(FILES):
        client.storage.put_bytes(f"data/set-{i % 10}/part-{i:03d}.csv", b"a,b\n1,2\n" * 50)


def login(url: str, token: str) -> httpx.Client:
    """The login form as a browser sends it: its CSRF field, then the session cookie it sets."""
    http = httpx.Client(base_url=url, timeout=30, follow_redirects=False)
    form = http.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None, form.text[:300]
    r = http.post("/login", data={"token": token, "csrf": csrf.group(1)})
    assert r.status_code == 303, f"login failed: {r.status_code} {r.text[:300]}"
    return http


def pages(job: str) -> list[tuple[str, str]]:
    """Every console page, with real names from the seeded platform (``job``: one with 20 epochs)."""
    return [
        ("overview", "/"),
        ("deployments", "/deployments"),
        ("deployment", "/deployments/echo-042"),
        ("nodes", "/nodes"),
        ("jobs", "/jobs"),
        ("jobs, page 10", "/jobs?page=10"),
        ("jobs, queued", "/jobs?status=queued"),
        ("jobs, name filter", "/jobs?name=train-09"),
        ("job", f"/jobs/{job}"),
        ("photons", "/photons"),
        ("photon", "/photons/echo"),
        ("models", "/models"),
        ("storage", "/storage"),
        ("storage folder", "/storage?prefix=data/set-3/"),
        ("secrets", "/secrets"),
        ("tokens", "/tokens"),
        ("workspaces", "/workspaces"),
        ("audit", "/audit"),
        ("audit, page 5", "/audit?page=5"),
        ("usage", "/usage"),
        ("usage by job, daily", "/usage?by=job&daily=true"),
    ]


def weight(http: httpx.Client, html: str, cache: dict[str, int]) -> int:
    total = 0
    for src in ASSET.findall(html):
        if src not in cache:
            r = http.get(urljoin("/", src))
            assert r.status_code == 200, f"{src}: {r.status_code}"
            cache[src] = len(r.content)
        total += cache[src]
    return total


def measure(http: httpx.Client, path: str, requests: int) -> tuple[list[float], str]:
    seconds, html = [], ""
    for _ in range(requests + 2):  # two warm-up requests
        started = time.perf_counter()
        r = http.get(path)
        html = r.text
        seconds.append(time.perf_counter() - started)
        assert r.status_code == 200, f"{path}: {r.status_code} {html[:300]}"
    return seconds[2:], html


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20, help="timed requests per page")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nubis-bench-console-") as scratch:
        home = Path(scratch) / "home"
        started = time.perf_counter()
        asyncio.run(seed_jobs(home))
        print(f"seeded {JOBS} jobs, {JOBS * EVENTS_PER_JOB} events in {time.perf_counter() - started:.1f} s",
              file=sys.stderr)
        with platform(Path(scratch)) as running, nubis.Client(running.url, running.token) as client:
            seed_over_api(client)
            http = login(running.url, running.token)
            rows, cache = [], {}
            job = client.jobs.get(f"train-{WITH_METRICS // 2 + 1:04d}").id
            for name, path in pages(job):
                seconds, html = measure(http, path, args.requests)
                p95 = percentile(seconds, 95)
                rows.append([name, path.replace(job, "ID"), f"{median(seconds) * 1000:.1f}", f"{p95:.1f}",
                             f"{len(html) / 1024:.1f}", f"{weight(http, html, cache) / 1024:.1f}",
                             "yes" if p95 < TARGET_P95_MS else "NO"])
    print(f"# console pages: {JOBS} jobs, {DEPLOYMENTS} deployments, {JOBS * EVENTS_PER_JOB} job events; "
          f"{args.requests} requests each")
    print(machine_line())
    print(format_table(["page", "path", "median ms", "p95 ms", "HTML KiB", "JS+CSS KiB", "p95 < 300 ms"],
                       rows))


if __name__ == "__main__":
    main()

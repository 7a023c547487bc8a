"""Jobs through a real `nubis up`: a 2-worker DDP job against torchrun, admission at 10,000 queued jobs,
and 1,000 short jobs through the API.

    python bench/jobs.py                                  # 5 rounds, 1,000 short jobs
    python bench/jobs.py --rounds 3 --short-jobs 200

- DDP overhead: one torch.distributed script (gloo, a tiny DDP model, ``--steps`` SGD steps on random
  data, an all_reduce) run (a) by ``python -m torch.distributed.run --nproc_per_node=2``, (b) as a nubis
  job of 2 workers x 1 CPU (its code zipped and uploaded once, before the rounds), (c) as two processes
  started by hand with the rendezvous env set (no launcher: what (b) does without the platform). The
  order rotates every round. A job is timed from ``submit`` to being seen ``succeeded`` (polled every
  50 ms). Target: overhead (b) − (a) ≤ 1.5 s.
- Admission: ``bench/admission.py``'s snapshot and timing at 10,000 queued jobs.
- Short jobs: ``--short-jobs`` jobs of ``python -c pass`` (1 worker, 0.1 CPU, 16 MiB, so about 20 run
  at once on 2 cores) submitted by ``--submit-threads`` threads, then waited for; every id must be found
  again and terminal, or the bench exits 1 (it does too if any failed).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import admission
from _common import (
    REPO,
    Quiet,
    cpu_sample,
    format_table,
    free_port,
    machine_line,
    median,
    stop_process,
    wait_for_quiet,
)

from nubis.cli.jobs import upload_code
from nubis.client.client import Client
from nubis.models.jobs import TERMINAL_JOB_STATUSES, Job, JobStatus

OVERHEAD_TARGET_S = 1.5
POLL_S = 0.05
RECONCILER_S = 0.25  # JobReconciler's interval under `nubis up`
SHORT_RESOURCES = {"cpu": 0.1, "memory": "16Mi"}

DDP_SCRIPT = """\
import os
import time

started = time.time()  # before torch: the bench splits each run into launch, script and exit

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

torch.set_num_threads(1)  # torchrun sets OMP_NUM_THREADS=1; the same for every variant
dist.init_process_group("gloo")
torch.manual_seed(dist.get_rank())
model = DistributedDataParallel(nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1)))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(64, 32), torch.randn(64, 1)
for _ in range(int(os.environ["BENCH_STEPS"])):
    opt.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    opt.step()
total = torch.tensor([loss.item()])
dist.all_reduce(total)
dist.barrier()
del model, opt  # DDP's reducer holds the group: drop it first (an abort at exit was seen otherwise)
dist.destroy_process_group()
stamps = f"start={started:.4f} end={time.time():.4f}"
print(f"BENCH rank={os.environ['RANK']} loss={total.item() / 2:.4f} {stamps}", flush=True)
"""
STAMPS = re.compile(r"BENCH rank=(\d+) loss=\S+ start=([\d.]+) end=([\d.]+)")


@dataclass(frozen=True)
class Platform:
    url: str
    token: str
    pid: int
    log: Path


# ── the platform ────────────────────────────────────────────────────────────────────────────────


@contextlib.contextmanager
def platform(scratch: Path) -> Iterator[Platform]:
    """One `nubis up` in a temporary home for the whole bench; its output goes to ``scratch``."""
    home, log_path = scratch / "home", scratch / "nubis-up.log"
    port = free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nubis.cli.main", "up", "--home", str(home), "--port", str(port),
             "--gateway-port", str(free_port())],
            env={**os.environ, "NUBIS_HOME": str(home)}, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(proc, url, log_path)
            yield Platform(url, (home / "admin.token").read_text().strip(), proc.pid, log_path)
        finally:
            stop_process(proc, grace=60)


def wait_healthy(proc: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nubis up exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nubis up not healthy within {timeout:.0f} s")


def explain(client: Client, job: Job) -> str:
    """The job's reason and its latest events: what to report when a job did not do what it should."""
    events = client.jobs.events(job.id, limit=20)
    lines = [f"job {job.name} ({job.id}) is {job.status}: {job.reason or '(no reason)'}"]
    lines += [f"  {e.at:%H:%M:%S.%f} {e.kind}: {e.message}" for e in events]
    return "\n".join(lines)


# ── 1. a 2-worker DDP job ───────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Run:
    """One run, split by the script's own stamps: before its first line, the script, after its last."""

    seconds: float
    launch: float  # started (or submitted) → the first rank's first line
    exit: float  # the last rank's last line → seen done

    @property
    def script(self) -> float:
        return self.seconds - self.launch - self.exit


def split_run(began: float, seconds: float, output: str) -> Run:
    """``began`` is ``time.time()`` at the start: the ranks stamp wall-clock time."""
    stamps = [(float(m[2]), float(m[3])) for m in STAMPS.finditer(output)]
    if len(stamps) != 2:
        raise RuntimeError(f"expected both ranks' stamps in the output:\n{output[-2000:]}")
    first, last = min(s for s, _ in stamps), max(e for _, e in stamps)
    return Run(seconds, first - began, began + seconds - last)


def script_env(steps: int) -> dict[str, str]:
    return {**os.environ, "BENCH_STEPS": str(steps), "OMP_NUM_THREADS": "1"}


def run_torchrun(workdir: Path, steps: int) -> Run:
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
            f"--master_port={free_port()}", "train.py"]
    began, start = time.time(), time.perf_counter()
    done = subprocess.run(argv, cwd=workdir, env=script_env(steps), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"torchrun exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return split_run(began, seconds, done.stdout)


def run_by_hand(workdir: Path, steps: int) -> Run:
    """Two processes with the env a launcher (or nubis) would set, and no launcher."""
    rendezvous = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2"}
    began, start = time.time(), time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "train.py"], cwd=workdir, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env={**script_env(steps), **rendezvous, "RANK": str(r), "LOCAL_RANK": str(r)})
             for r in range(2)]
    output = "".join(p.communicate()[0] for p in procs)
    seconds = time.perf_counter() - start
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a worker started by hand failed:\n{output[-3000:]}")
    return split_run(began, seconds, output)


def run_job(client: Client, code: str, steps: int) -> tuple[Run, Job]:
    """Submit → seen ``succeeded``; raises with the job's reason and events if it ends otherwise."""
    began, start = time.time(), time.perf_counter()
    job = client.jobs.submit(["python", "train.py"], workers=2, resources={"cpu": 1, "memory": "1Gi"},
                             code=code, env={"BENCH_STEPS": str(steps), "OMP_NUM_THREADS": "1"})
    while job.status not in TERMINAL_JOB_STATUSES:
        if time.perf_counter() - start > 300:
            raise TimeoutError(explain(client, job))
        time.sleep(POLL_S)
        job = client.jobs.get(job.id)
    seconds = time.perf_counter() - start
    if job.status != JobStatus.succeeded:
        raise RuntimeError(explain(client, job))
    output = "\n".join(line for rank in range(2) for line in client.jobs.logs(job.id, worker=rank, tail=20))
    return split_run(began, seconds, output), job


@dataclass
class DdpResults:
    runs: dict[str, list[Run]]
    jobs: list[Job]
    others: list[float]
    failures: list[str]  # runs that failed and were run again


def attempt(name: str, variant: Callable[[], Run], failures: list[str], tries: int = 3) -> Run:
    """``variant()``, run again (at most ``tries`` times in all) if it fails; each failure is reported.

    Seen here: now and then a rank is killed by SIGABRT ("terminate called without an active
    exception") after its last line, in torch's teardown, under torchrun as under nubis."""
    for left in range(tries - 1, -1, -1):
        try:
            return variant()
        except RuntimeError as exc:
            failures.append(f"{name}: {str(exc).splitlines()[0][:300]}")
            print(f"  {name} failed, {left} tries left: {exc}", file=sys.stderr)
            if not left:
                raise
    raise AssertionError("unreachable")


def ddp_rounds(client: Client, plat: Platform, *, rounds: int, steps: int, quiet: Quiet) -> DdpResults:
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        workdir = Path(tmp)
        (workdir / "train.py").write_text(DDP_SCRIPT)
        code = upload_code(client, workdir)
        jobs: list[Job] = []

        def job() -> Run:
            run, done = run_job(client, code, steps)
            jobs.append(done)
            return run

        variants: dict[str, Callable[[], Run]] = {
            "torchrun": lambda: run_torchrun(workdir, steps),
            "nubis job": job,
            "by hand": lambda: run_by_hand(workdir, steps),
        }
        failures: list[str] = []
        for name, variant in variants.items():  # warm-up: page cache, the platform's code cache
            attempt(name, variant, failures)
        jobs.clear()
        results = DdpResults({k: [] for k in variants}, jobs, [], failures)
        names = list(variants)
        for i in range(rounds):
            results.others.append(wait_for_quiet(plat.pid, quiet))
            for name in names[i % len(names):] + names[:i % len(names)]:
                results.runs[name].append(attempt(name, variants[name], failures))
            print(f"  round {i + 1}/{rounds}: " + ", ".join(
                f"{n} {results.runs[n][-1].seconds:.2f} s" for n in names), file=sys.stderr)
    return results


def _ts(at: datetime | None) -> float:
    assert at is not None
    return at.timestamp()


def ddp_table(res: DdpResults, rounds: int, steps: int) -> str:
    wall = {name: median([r.seconds for r in runs]) for name, runs in res.runs.items()}
    base, job, hand = wall["torchrun"], wall["nubis job"], wall["by hand"]
    spread = {name: f"{min(r.seconds for r in runs):.2f}–{max(r.seconds for r in runs):.2f}"
              for name, runs in res.runs.items()}
    rows = [[name, f"{wall[name]:.2f}", spread[name], f"{wall[name] / base:.2f}x",
             *(f"{median([getattr(r, part) for r in runs]):.2f}" for part in ("launch", "script", "exit"))]
            for name, runs in res.runs.items()]
    overhead = job - base
    verdict = "met" if overhead <= OVERHEAD_TARGET_S else "not met"
    to_running = median([_ts(j.started_at) - _ts(j.created_at) for j in res.jobs])
    to_seen = median([r.seconds - (_ts(j.finished_at) - _ts(j.created_at))
                      for r, j in zip(res.runs["nubis job"], res.jobs, strict=True)])
    return "\n".join([
        f"DDP job, 2 workers x 1 CPU, {steps} steps: medians of {rounds} rounds (order rotating)",
        f"other processes used median {median(res.others):.2f}, max {max(res.others):.2f} cores in the "
        "1 s before each round",
        "",
        format_table(["run", "median s", "range s", "vs torchrun", "launch s", "script s", "exit s"], rows),
        "",
        f"**Overhead** (median nubis job − median torchrun): **{overhead:+.2f} s** "
        f"(ratio {job / base:.2f}x); target ≤ {OVERHEAD_TARGET_S:g} s: **{verdict}**. "
        f"Against the same two processes started by hand: {job - hand:+.2f} s ({job / hand:.2f}x).",
        "launch: start (or submit) → the first rank's first line, before `import torch`; exit: the last "
        "rank's last line → the run seen done; script: the rest.",
        f"The job by the platform's clock: submit → running {to_running:.2f} s, succeeded → seen "
        f"{to_seen:.2f} s (median). The job reconciler runs every {RECONCILER_S:g} s; the client polls "
        f"every {POLL_S * 1000:.0f} ms.",
        f"Runs that failed and were run again (warm-up included): {len(res.failures)}",
        *(f"- {f}" for f in res.failures),
    ])


# ── 2. admission ────────────────────────────────────────────────────────────────────────────────


def admission_table(rounds: int, queued: int = 10_000) -> str:
    """``bench/admission.py``'s measurement at one queue length."""
    seconds, decision = admission.time_rounds(admission.snapshot(queued), rounds)
    ms = [s * 1000 for s in seconds]
    row = [f"{queued:,}", str(admission.RUNNING), str(len(decision.admit)), str(len(decision.preempt)),
           f"{median(ms):.2f}", f"{min(ms):.2f}–{max(ms):.2f}", f"{1000 / median(ms):,.0f}",
           "met" if median(ms) < admission.TARGET_MS else "missed"]
    headers = ["queued", "running", "admitted", "preempted", "median ms", "range ms", "rounds/s",
               f"< {admission.TARGET_MS:g} ms"]
    title = f"Admission: one `decide_admissions` round (bench/admission.py's snapshot); medians of {rounds}"
    return f"{title}\n\n{format_table(headers, [row])}"


# ── 3. short jobs ───────────────────────────────────────────────────────────────────────────────


@dataclass
class ShortResults:
    count: int
    submit_s: float
    total_s: float
    rejected: list[str]
    final: dict[str, Job]
    lost: list[str]
    max_running: int
    cpu: dict[str, float]  # CPU seconds over the whole run, by whom


def process_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of ``pid`` itself, and of the children it has reaped (for `nubis up`: job workers)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks, (int(fields[13]) + int(fields[14])) / ticks


def submit_many(plat: Platform, n: int, threads: int) -> tuple[list[str | None], list[str]]:
    ids: list[str | None] = [None] * n
    rejected: list[str] = []
    counter = itertools.count()
    lock = threading.Lock()

    def work() -> None:
        with Client(plat.url, plat.token) as client:
            while True:
                with lock:
                    i = next(counter)
                if i >= n:
                    return
                try:
                    ids[i] = client.jobs.submit(["python", "-c", "pass"], name=f"short-{i}",
                                                resources=SHORT_RESOURCES).id
                except Exception as exc:  # counted and reported; the bench goes on
                    with lock:
                        rejected.append(f"short-{i}: {exc}")

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(work) for _ in range(threads)]:
            future.result()
    return ids, rejected


def wait_all(client: Client, ids: list[str], timeout: float) -> tuple[dict[str, Job], list[str]]:
    """Walk the ids in submission order (jobs are admitted FIFO), each until it is terminal."""
    final: dict[str, Job] = {}
    deadline = time.monotonic() + timeout
    for job_id in ids:
        while True:
            job = client.jobs.get(job_id)
            if job.status in TERMINAL_JOB_STATUSES:
                final[job_id] = job
                break
            if time.monotonic() > deadline:
                print(explain(client, job), file=sys.stderr)
                return final, [i for i in ids if i not in final]
            time.sleep(POLL_S)
    return final, []


def max_running(jobs: list[Job]) -> int:
    edges = sorted(itertools.chain.from_iterable(
        ((_ts(j.started_at), 1), (_ts(j.finished_at), -1)) for j in jobs if j.started_at and j.finished_at))
    return max(itertools.accumulate(d for _, d in edges), default=0)


def short_jobs(client: Client, plat: Platform, *, n: int, threads: int, timeout: float) -> ShortResults:
    machine, plane = cpu_sample(), process_cpu(plat.pid)
    start = time.perf_counter()
    ids, rejected = submit_many(plat, n, threads)
    submit_s = time.perf_counter() - start
    accepted = [i for i in ids if i is not None]
    final, lost = wait_all(client, accepted, timeout)
    total_s = time.perf_counter() - start
    machine_after, plane_after = cpu_sample(), process_cpu(plat.pid)
    cpu = {"control plane": plane_after[0] - plane[0], "workers": plane_after[1] - plane[1],
           "bench client": machine_after.ours - machine.ours}
    cpu["others"] = max(0.0, machine_after.machine - machine.machine - sum(cpu.values()))
    mine = set(accepted)
    if len(mine) != len(accepted):
        lost.append("duplicate ids returned by submit")
    for status in (JobStatus.queued, JobStatus.running, JobStatus.stopping):
        left = [j for j in client.jobs.list(status=status.value, limit=1000) if j.id in mine]
        lost += [f"{j.id} still {j.status}" for j in left if j.id not in lost]
    return ShortResults(n, submit_s, total_s, rejected, final, lost, max_running(list(final.values())), cpu)


def short_table(res: ShortResults, threads: int) -> str:
    statuses = Counter(j.status.value for j in res.final.values())
    waits = [_ts(j.started_at) - _ts(j.created_at) for j in res.final.values() if j.started_at]
    done = len(res.final)
    row = [f"{res.count:,}", f"{res.submit_s:.1f}", f"{res.count / res.submit_s:,.0f}", f"{res.total_s:.1f}",
           f"{done / res.total_s:.1f}", str(statuses.get("succeeded", 0)), str(statuses.get("failed", 0)),
           str(len(res.rejected)), str(len(res.lost)), str(res.max_running), f"{median(waits):.1f}"]
    headers = ["jobs", "submit s", "submitted jobs/s", "end to end s", "jobs/s end to end", "succeeded",
               "failed", "rejected", "lost", "max running", "median queued s"]
    cpu = ", ".join(f"{who} {seconds / res.count * 1000:.0f} ms" for who, seconds in res.cpu.items())
    lines = [f"Short jobs: `python -c pass`, 1 worker x 0.1 CPU / 16 MiB, submitted by {threads} threads",
             "", format_table(headers, [row]), "",
             f"CPU per job over the run (the machine has {os.cpu_count()} cores): {cpu}; workers are the "
             "wrapper and `python -c pass`, both full interpreter starts."]
    failed = [j for j in res.final.values() if j.status != JobStatus.succeeded]
    lines += [f"- {j.name} {j.status}: {j.reason}" for j in failed[:5]]
    lines += [f"- rejected {r}" for r in res.rejected[:5]] + [f"- lost {i}" for i in res.lost[:5]]
    return "\n".join(lines)


# ── main ────────────────────────────────────────────────────────────────────────────────────────


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the DDP comparison")
    parser.add_argument("--steps", type=int, default=400, help="SGD steps of the DDP script")
    parser.add_argument("--admission-rounds", type=int, default=20)
    parser.add_argument("--short-jobs", type=int, default=1000)
    parser.add_argument("--submit-threads", type=int, default=4)
    parser.add_argument("--short-timeout", type=float, default=600.0,
                        help="seconds to wait for the short jobs")
    parser.add_argument("--max-others", type=float, default=0.5,
                        help="cores other processes may use before a DDP round starts")
    parser.add_argument("--quiet-wait", type=float, default=10.0, help="seconds to wait for that at most")
    args = parser.parse_args()
    quiet = Quiet(args.max_others, wait=args.quiet_wait)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as scratch, platform(Path(scratch)) as plat, \
            Client(plat.url, plat.token) as client:
        print("1/3 DDP job vs torchrun", file=sys.stderr)
        ddp = ddp_rounds(client, plat, rounds=args.rounds, steps=args.steps, quiet=quiet)
        print("2/3 admission", file=sys.stderr)
        adm = admission_table(args.admission_rounds)
        print(f"3/3 {args.short_jobs} short jobs", file=sys.stderr)
        short = short_jobs(client, plat, n=args.short_jobs, threads=args.submit_threads,
                           timeout=args.short_timeout)
    elapsed = time.perf_counter() - began
    print(f"# jobs — {machine_line()}; local backend, SQLite; whole bench {elapsed:.0f} s\n")
    print(ddp_table(ddp, args.rounds, args.steps), adm, short_table(short, args.submit_threads), sep="\n\n")
    failed = sum(j.status != JobStatus.succeeded for j in short.final.values())
    if short.lost or short.rejected or failed:
        print(f"\nFAILED: {len(short.lost)} lost, {len(short.rejected)} rejected, {failed} not succeeded",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

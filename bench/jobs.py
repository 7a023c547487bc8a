"""Jobs through a real `nubis up`: a 2-worker DDP job against torchrun, admission at 10,000 queued jobs,
1,000 short jobs through the API, and third-party training scripts as jobs against torchrun.

    python bench/jobs.py                                  # 5 rounds, 1,000 short jobs
    python bench/jobs.py --rounds 3 --short-jobs 200
    python bench/jobs.py --only third-party --third-party-rounds 3

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
- Third-party scripts (``bench/third_party.py``): pytorch/examples' DDP tutorial, a Lightning DDP script
  and a Hugging Face Trainer script (``examples/third_party``), each as a 2-worker job (upload, submit,
  seen succeeded) against ``torchrun --standalone --nproc_per_node=2``. Target: ratio ≤ 1.2.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import admission
from _common import (
    Quiet,
    cpu_sample,
    format_table,
    free_port,
    machine_line,
    median,
    wait_for_quiet,
)
from _platform import (
    POLL_S,
    Platform,
    attempt,
    epoch_s,
    explain,
    platform,
    process_cpu,
    wait_succeeded,
)
from third_party import third_party_rounds, third_party_table

from nubis.cli.jobs import upload_code
from nubis.client.client import Client
from nubis.models.jobs import TERMINAL_JOB_STATUSES, Job, JobStatus

OVERHEAD_TARGET_S = 1.5
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
    job = wait_succeeded(client, job)
    seconds = time.perf_counter() - start
    output = "\n".join(line for rank in range(2) for line in client.jobs.logs(job.id, worker=rank, tail=20))
    return split_run(began, seconds, output), job


@dataclass
class DdpResults:
    runs: dict[str, list[Run]]
    jobs: list[Job]
    others: list[float]
    failures: list[str]  # runs that failed and were run again


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
    to_running = median([epoch_s(j.started_at) - epoch_s(j.created_at) for j in res.jobs])
    to_seen = median([r.seconds - (epoch_s(j.finished_at) - epoch_s(j.created_at))
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
        ((epoch_s(j.started_at), 1), (epoch_s(j.finished_at), -1))
        for j in jobs if j.started_at and j.finished_at))
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
    waits = [epoch_s(j.started_at) - epoch_s(j.created_at) for j in res.final.values() if j.started_at]
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


def short_failure(res: ShortResults) -> str | None:
    failed = sum(j.status != JobStatus.succeeded for j in res.final.values())
    if res.lost or res.rejected or failed:
        return f"{len(res.lost)} lost, {len(res.rejected)} rejected, {failed} not succeeded"
    return None


SECTIONS = ("ddp", "admission", "short", "third-party")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=SECTIONS,
                        help="run only this section (repeatable); all of them by default")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the DDP comparison")
    parser.add_argument("--steps", type=int, default=400, help="SGD steps of the DDP script")
    parser.add_argument("--third-party-rounds", type=int, default=3,
                        help="rounds of the third-party scripts (bench/third_party.py)")
    parser.add_argument("--admission-rounds", type=int, default=20)
    parser.add_argument("--short-jobs", type=int, default=1000)
    parser.add_argument("--submit-threads", type=int, default=4)
    parser.add_argument("--short-timeout", type=float, default=600.0,
                        help="seconds to wait for the short jobs")
    parser.add_argument("--max-others", type=float, default=0.5,
                        help="cores other processes may use before a DDP round starts")
    parser.add_argument("--quiet-wait", type=float, default=10.0, help="seconds to wait for that at most")
    return parser.parse_args()


def run_sections(args: argparse.Namespace, only: list[str]) -> tuple[list[str], str | None]:
    """The tables of the sections asked for, in order; and what failed among the short jobs."""
    quiet = Quiet(args.max_others, wait=args.quiet_wait)
    tables, failure = [], None
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as scratch, platform(Path(scratch)) as plat, \
            Client(plat.url, plat.token) as client:
        for i, section in enumerate(only, 1):
            print(f"{i}/{len(only)} {section}", file=sys.stderr)
            if section == "ddp":
                ddp = ddp_rounds(client, plat, rounds=args.rounds, steps=args.steps, quiet=quiet)
                tables.append(ddp_table(ddp, args.rounds, args.steps))
            elif section == "admission":
                tables.append(admission_table(args.admission_rounds))
            elif section == "short":
                short = short_jobs(client, plat, n=args.short_jobs, threads=args.submit_threads,
                                   timeout=args.short_timeout)
                tables.append(short_table(short, args.submit_threads))
                failure = short_failure(short)
            else:
                third = third_party_rounds(client, plat, rounds=args.third_party_rounds, quiet=quiet)
                tables.append(third_party_table(third, args.third_party_rounds))
    return tables, failure


def main() -> int:
    args = parse_args()
    only = [s for s in SECTIONS if s in (args.only or SECTIONS)]
    began = time.perf_counter()
    tables, failure = run_sections(args, only)
    elapsed = time.perf_counter() - began
    print(f"# jobs — {machine_line()}; local backend, SQLite; whole bench {elapsed:.0f} s\n")
    print(*tables, sep="\n\n")
    if failure:
        print(f"\nFAILED: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

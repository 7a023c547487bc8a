"""Third-party training scripts (``examples/third_party``) as 2-worker nubis jobs against the same script
under ``torchrun --standalone --nproc_per_node=2``: one section of ``bench/jobs.py``.

- torchrun: run in a copy of the script's folder, ``NUBIS_OUTPUT_DIR`` a fresh folder each run (the DDP
  tutorial would otherwise resume from its last snapshot and train nothing).
- nubis job: as ``nubis job submit --workers 2 --cpu 1 -- python SCRIPT ARGS`` does it, through the SDK
  with auth on: the folder zipped and uploaded, the job submitted, then waited for with the SDK's
  ``jobs.wait`` (it polls every 0.5 s) until it is seen ``succeeded``; all of it timed. The platform
  sets ``OMP_NUM_THREADS=1`` itself, as torchrun does.

Each round runs every script both ways, the order alternating; a failed run is run again (at most 3
times) and reported.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _common import REPO, Quiet, format_table, median, wait_for_quiet
from _platform import Platform, attempt, epoch_s, explain, process_cpu

from nubis.cli.jobs import upload_code
from nubis.client.client import Client
from nubis.models.jobs import Job, JobStatus

RATIO_TARGET = 1.2
EXAMPLES = REPO / "examples" / "third_party"


@dataclass(frozen=True)
class Script:
    name: str
    folder: str
    argv: tuple[str, ...]  # after `python` (nubis) or `torchrun ...` (bare)
    env: tuple[tuple[str, str], ...] = ()


SCRIPTS = (
    Script("pytorch/examples DDP tutorial", "ddp_tutorial", ("multigpu_torchrun.py", "20", "5")),
    Script("Lightning DDP", "lightning_ddp", ("train.py", "--epochs", "3")),
    Script("HF Trainer (tiny BERT)", "hf_trainer", ("train.py", "--epochs", "2"), (("HF_HUB_OFFLINE", "1"),)),
)


@dataclass(frozen=True)
class Timed:
    seconds: float  # wall-clock
    cpu: float  # CPU seconds: torchrun and its ranks; or `nubis up` and its workers


@dataclass
class ScriptRuns:
    torchrun: list[Timed] = field(default_factory=list)
    job: list[Timed] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)


@dataclass
class ThirdPartyResults:
    runs: dict[str, ScriptRuns]
    others: list[float]
    failures: list[str]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_torchrun(script: Script, workdir: Path, scratch: Path) -> Timed:
    outputs = tempfile.mkdtemp(prefix="out-", dir=scratch)
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *script.argv]
    env = {**os.environ, **dict(script.env), "NUBIS_OUTPUT_DIR": outputs}
    start, cpu = time.perf_counter(), children_cpu()
    done = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True)
    timed = Timed(time.perf_counter() - start, children_cpu() - cpu)
    shutil.rmtree(outputs, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun {script.name} exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return timed


def run_job(client: Client, plat: Platform, script: Script, workdir: Path) -> tuple[Timed, Job]:
    """Upload, submit, seen ``succeeded``: what `nubis job submit` and a user's wait do."""
    start, cpu = time.perf_counter(), sum(process_cpu(plat.pid))
    code = upload_code(client, workdir)
    job = client.jobs.submit(["python", *script.argv], workers=2, resources={"cpu": 1, "memory": "2Gi"},
                             code=code, env=dict(script.env))
    job = client.jobs.wait(job.id, timeout=600)  # the SDK's poll (0.5 s), as `nubis job get` users see it
    seconds = time.perf_counter() - start
    if job.status != JobStatus.succeeded:
        raise RuntimeError(explain(client, job))
    return Timed(seconds, sum(process_cpu(plat.pid)) - cpu), job


def third_party_rounds(client: Client, plat: Platform, *, rounds: int, quiet: Quiet) -> ThirdPartyResults:
    results = ThirdPartyResults({s.name: ScriptRuns() for s in SCRIPTS}, [], [])
    with tempfile.TemporaryDirectory(prefix="bench-third-party-") as tmp:
        scratch = Path(tmp)
        folders = {s.name: shutil.copytree(EXAMPLES / s.folder, scratch / s.folder) for s in SCRIPTS}

        def variants(script: Script, runs: ScriptRuns) -> list[tuple[str, Callable[[], None]]]:
            def job() -> None:
                timed, done = run_job(client, plat, script, folders[script.name])
                runs.job.append(timed)
                runs.jobs.append(done)

            def torchrun() -> None:
                runs.torchrun.append(run_torchrun(script, folders[script.name], scratch))

            return [("torchrun", torchrun), ("nubis job", job)]

        for script in SCRIPTS:  # warm-up: page cache, imports compiled, the platform's code cache
            for name, variant in variants(script, ScriptRuns()):
                attempt(f"{script.name} ({name}, warm-up)", variant, results.failures)
        for i in range(rounds):
            results.others.append(wait_for_quiet(plat.pid, quiet))
            for script in SCRIPTS:
                both = variants(script, results.runs[script.name])
                for name, variant in both[i % 2:] + both[:i % 2]:
                    attempt(f"{script.name} ({name})", variant, results.failures)
            latest = (f"{n} {r.torchrun[-1].seconds:.1f} s / {r.job[-1].seconds:.1f} s"
                      for n, r in results.runs.items())
            print(f"  third-party round {i + 1}/{rounds} (torchrun / job): " + ", ".join(latest),
                  file=sys.stderr)
    return results


def spread(runs: list[Timed]) -> str:
    return f"{min(r.seconds for r in runs):.2f}–{max(r.seconds for r in runs):.2f}"


def third_party_table(res: ThirdPartyResults, rounds: int) -> str:
    rows = []
    for script in SCRIPTS:
        runs = res.runs[script.name]
        base, job = (median([r.seconds for r in rs]) for rs in (runs.torchrun, runs.job))
        cpu_base, cpu_job = (median([r.cpu for r in rs]) for rs in (runs.torchrun, runs.job))
        to_running = median([epoch_s(j.started_at) - epoch_s(j.created_at) for j in runs.jobs])
        running = median([epoch_s(j.finished_at) - epoch_s(j.started_at) for j in runs.jobs])
        rows.append([
            script.name, " ".join(script.argv), f"{base:.2f}", spread(runs.torchrun), f"{job:.2f}",
            spread(runs.job), f"{job / base:.2f}x", "met" if job / base <= RATIO_TARGET else "not met",
            f"{cpu_base:.1f}", f"{cpu_job:.1f}", f"{to_running:.2f}", f"{running:.2f}",
        ])
    headers = ["script", "args", "torchrun s", "range s", "nubis job s", "range s", "ratio",
               f"≤ {RATIO_TARGET:g}x", "torchrun CPU s", "job CPU s", "submit → running s", "running s"]
    return "\n".join([
        f"Third-party scripts, 2 workers x 1 CPU: medians of {rounds} rounds (order alternating)",
        f"other processes used median {median(res.others):.2f}, max {max(res.others):.2f} cores in the "
        "1 s before each round",
        "",
        format_table(headers, rows),
        "",
        "nubis job: upload + submit → seen succeeded (the SDK's jobs.wait, polling every 0.5 s); torchrun: "
        "`torchrun --standalone --nproc_per_node=2 SCRIPT ARGS`. submit → running and running "
        "(→ succeeded) by the platform's clock. CPU: torchrun's launcher and ranks; `nubis up` (control "
        "plane) and the job's workers (ranks and their exit-code wrappers) over the same span.",
        f"Runs that failed and were run again (warm-up included): {len(res.failures)}",
        *(f"- {f}" for f in res.failures),
    ])

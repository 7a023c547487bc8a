"""A worker of a 2-worker nubis job sees what it would see under ``torchrun --nproc_per_node=2``:
the same variables (every difference allowed is listed here), and a rendezvous that works."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_jobs import PY, submit, wait_job

from nubis.backends.local_processes import free_port

from platform_fixtures import Platform

pytest.importorskip("torch")

WORKER = """\
import json, os
env = dict(os.environ)  # before torch.distributed adds anything of its own
import torch.distributed as dist
dist.init_process_group("gloo")  # no arguments: the env says everything
t = __import__("torch").ones(1)
dist.all_reduce(t)
assert t.item() == 2.0
dist.destroy_process_group()
# one write of the whole line: under torchrun both ranks share one pipe, and print's two writes
# (text, then newline, when PYTHONUNBUFFERED is set) once interleaved into "ENV {..}ENV {..}"
os.write(1, ("ENV " + json.dumps(env, sort_keys=True) + "\\n").encode())
"""

# In a nubis worker only. NUBIS_* is the platform's own (job, attempt, storage, token, folders).
EXTRA_ALLOWED = {
    "CUDA_VISIBLE_DEVICES",  # the GPUs the worker was given (empty: none); torchrun passes the parent's
    "PYTHONUNBUFFERED",  # worker output reaches its log at once
    "TMPDIR",  # the job's private tmp (torchrun: the parent's)
    "USER", "LOGNAME",  # the workspace's uid when nubis runs as root
    "NODE_RANK",  # = GROUP_RANK; torchrun takes it as an option and does not pass it on (Lightning reads it)
}
# Under torchrun only: none (a variable the control plane strips as a credential would be listed here).
MISSING_ALLOWED: set[str] = set()
# In both, with values that differ by nature.
VALUE_DIFFERS = {
    "MASTER_PORT",  # a free port each
    "TORCHELASTIC_RUN_ID",  # torchrun: "none" unless --rdzv-id; nubis: the job's id
    "TORCHELASTIC_ERROR_FILE",  # a path in torchrun's tmp / in the job's tmp
    "TORCHELASTIC_USE_AGENT_STORE",  # torchrun's agent hosts the store; nubis has no agent: rank 0 does
    "HOME",  # the job's private home
    "PATH",  # the platform's interpreter first
}


def envs_from(lines: list[str]) -> list[dict[str, str]]:
    return [json.loads(line[4:]) for line in lines if line.startswith("ENV ")]


def under_torchrun(script: Path, base: dict[str, str]) -> dict[int, dict[str, str]]:
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
            f"--master_port={free_port()}", str(script)]
    done = subprocess.run(argv, env=base, capture_output=True, text=True, timeout=120, cwd=script.parent)
    assert done.returncode == 0, done.stderr
    return {int(e["RANK"]): e for e in envs_from(done.stdout.splitlines())}


async def test_a_nubis_worker_sees_what_a_torchrun_worker_sees(sqlite_platform: Platform,
                                                               tmp_path: Path) -> None:
    p = sqlite_platform
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    base = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    reference = await asyncio.to_thread(under_torchrun, script, base)
    assert sorted(reference) == [0, 1]

    job = await submit(p, name="parity", workers=2, command=[PY, "-c", WORKER],
                       resources={"cpu": 0.5, "memory": "512Mi"})
    done = await wait_job(p, "parity", {"succeeded", "failed"}, timeout=120)
    assert done["status"] == "succeeded", done
    for rank in (0, 1):
        r = await p.http.get(f"/api/v1/jobs/parity/logs?worker={rank}&tail=1000", headers=p.admin)
        (ours,) = envs_from(r.json())
        theirs = reference[rank]
        extra = {k for k in set(ours) - set(theirs) if not k.startswith("NUBIS_")}
        assert extra <= EXTRA_ALLOWED, f"rank {rank}: only in a nubis worker: {sorted(extra - EXTRA_ALLOWED)}"
        missing = set(theirs) - set(ours)
        assert missing <= MISSING_ALLOWED, f"rank {rank}: missing in a nubis worker: {sorted(missing)}"
        differ = {k for k in set(ours) & set(theirs) if ours[k] != theirs[k]}
        assert differ <= VALUE_DIFFERS, {k: (ours[k], theirs[k]) for k in differ - VALUE_DIFFERS}
        assert ours["OMP_NUM_THREADS"] == "1" and ours["RANK"] == ours["ROLE_RANK"] == str(rank)
        assert ours["TORCHELASTIC_RUN_ID"] == job["id"] and ours["TORCHELASTIC_RESTART_COUNT"] == "0"
        assert ours["TORCHELASTIC_USE_AGENT_STORE"] == "False"
        assert Path(ours["TORCHELASTIC_ERROR_FILE"]).parent == Path(ours["TMPDIR"])


async def test_the_users_env_wins_and_one_worker_keeps_its_threads(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    dump = ("import os; "
            "print('OMP', os.environ.get('OMP_NUM_THREADS'), os.environ['TORCHELASTIC_RESTART_COUNT'])")
    await submit(p, name="mine", workers=2, command=[PY, "-c", dump], env={"OMP_NUM_THREADS": "3"},
                 resources={"cpu": 0.5, "memory": "64Mi"})
    fail_once = dump + "; raise SystemExit(os.environ['NUBIS_JOB_ATTEMPT'] == '1')"
    await submit(p, name="single", command=[PY, "-c", fail_once], max_retries=1,
                 resources={"cpu": 0.5, "memory": "64Mi"})
    assert (await wait_job(p, "mine", {"succeeded", "failed"}))["status"] == "succeeded"
    assert (await wait_job(p, "single", {"succeeded", "failed"}, timeout=60))["status"] == "succeeded"
    r = await p.http.get("/api/v1/jobs/mine/logs?worker=1", headers=p.admin)
    assert "OMP 3 0" in r.json()
    r = await p.http.get("/api/v1/jobs/single/logs", headers=p.admin)
    expected = f"OMP {os.environ.get('OMP_NUM_THREADS')} 1"
    assert expected in r.json()  # one worker: nubis leaves it alone; the second attempt is restart 1

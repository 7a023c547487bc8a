"""Jobs on the real app (in-process) with real worker processes on the local backend."""

from __future__ import annotations

import asyncio
import io
import time
import zipfile
from typing import Any

import pytest

from platform_fixtures import Platform

PY = "python"


async def wait_job(p: Platform, ref: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = await p.http.get(f"/api/v1/jobs/{ref}", headers=p.admin)
        assert r.status_code == 200, r.text
        job = r.json()
        if job["status"] in statuses:
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {ref} stayed {job.get('status')} ({job.get('reason')}), wanted {statuses}")


async def submit(p: Platform, **spec: Any) -> dict[str, Any]:
    r = await p.http.post("/api/v1/jobs", json=spec, headers=p.admin)
    assert r.status_code == 201, r.text
    return r.json()


ENV_DUMP = ("import os; print(' '.join(f'{k}={os.environ.get(k)}' for k in ['RANK', 'LOCAL_RANK', "
            "'WORLD_SIZE', 'NODE_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'NUBIS_JOB_ID']))")


async def test_a_gang_gets_the_torch_distributed_env_and_logs_per_worker(platform: Platform) -> None:
    job = await submit(platform, name="env", workers=2, command=[PY, "-c", ENV_DUMP],
                       resources={"cpu": 0.5, "memory": "64Mi"})
    assert job["status"] == "queued"
    done = await wait_job(platform, "env", {"succeeded", "failed"})
    assert done["status"] == "succeeded", done
    assert [w["exit_code"] for w in done["worker_status"]] == [0, 0]
    ports = set()
    for rank in (0, 1):
        r = await platform.http.get(f"/api/v1/jobs/env/logs?worker={rank}", headers=platform.admin)
        (line,) = [ln for ln in r.json() if ln.startswith("RANK=")]
        fields = dict(kv.split("=", 1) for kv in line.split())
        assert fields["RANK"] == fields["LOCAL_RANK"] == str(rank)
        assert fields["WORLD_SIZE"] == "2" and fields["NODE_RANK"] == "0"
        assert fields["MASTER_ADDR"] == "127.0.0.1" and fields["NUBIS_JOB_ID"] == job["id"]
        ports.add(fields["MASTER_PORT"])
    assert len(ports) == 1  # both workers meet at the same rendezvous


async def test_one_failed_worker_stops_the_gang_which_retries_then_fails(platform: Platform) -> None:
    script = ("import os, sys, time\n"
              "if os.environ['RANK'] == '1':\n    print('rank 1 gives up', flush=True); sys.exit(3)\n"
              "time.sleep(60)\n")
    await submit(platform, name="flaky", workers=2, command=[PY, "-c", script], max_retries=1,
                 resources={"cpu": 0.5, "memory": "64Mi"})
    done = await wait_job(platform, "flaky", {"failed"}, timeout=90)
    assert done["attempt"] == 2
    assert "worker 1 exited with code 3" in done["reason"]
    assert "rank 1 gives up" in done["reason"]
    statuses = {w["rank"]: w["status"] for w in done["worker_status"]}
    assert statuses == {0: "stopped", 1: "failed"}  # rank 0 was stopped, not left sleeping
    r = await platform.http.get("/api/v1/jobs/flaky/events", headers=platform.admin)
    messages = " ".join(e["message"] for e in r.json())
    assert "retry 1 of 1" in messages


async def test_an_error_recorded_by_torch_elastic_is_the_failure_s_reason(sqlite_platform: Platform) -> None:
    script = ("from torch.distributed.elastic.multiprocessing.errors import record\n"
              "@record\ndef main():\n    raise ValueError('loss is nan at step 7')\n"
              "main()\n")
    await submit(sqlite_platform, name="recorded", command=[PY, "-c", script],
                 resources={"cpu": 0.5, "memory": "256Mi"})
    done = await wait_job(sqlite_platform, "recorded", {"failed"}, timeout=90)
    assert done["reason"].endswith("error reported by the script (torch.distributed.elastic): "
                                   "ValueError: loss is nan at step 7"), done["reason"]


async def test_following_a_workers_logs_goes_through_retries_until_the_end(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    script = ("import os, sys, time\n"
              "n = os.environ['NUBIS_JOB_ATTEMPT']\n"
              "for i in range(3):\n    print(f'attempt {n} line {i}', flush=True); time.sleep(0.2)\n"
              "sys.exit(1 if n == '1' else 0)\n")
    job = await submit(p, name="chatty", command=[PY, "-c", script], max_retries=1,
                       resources={"cpu": 0.5, "memory": "64Mi"})
    r = await p.http.get(f"/api/v1/jobs/{job['id']}/logs/follow", headers=p.admin, timeout=120)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    lines = [ln for ln in r.text.splitlines() if ln.startswith(("attempt", "---"))]
    assert lines == [*(f"attempt 1 line {i}" for i in range(3)), "--- attempt 2 ---",
                     *(f"attempt 2 line {i}" for i in range(3))]
    assert (await wait_job(p, "chatty", {"succeeded"}))["attempt"] == 2


async def test_cancel_stops_a_running_job(platform: Platform) -> None:
    await submit(platform, name="sleepy", command=[PY, "-c", "import time; time.sleep(120)"],
                 resources={"cpu": 0.5, "memory": "64Mi"})
    await wait_job(platform, "sleepy", {"running"})
    r = await platform.http.post("/api/v1/jobs/sleepy/cancel", headers=platform.admin)
    assert r.status_code == 200, r.text
    done = await wait_job(platform, "sleepy", {"cancelled"}, timeout=30)
    assert done["reason"] == "cancelled by a user"
    r = await platform.http.post("/api/v1/jobs/sleepy/cancel", headers=platform.admin)
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"


async def test_the_working_directory_comes_from_a_zip_in_storage(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("train.py", "import helper; print('helper says', helper.WORD)\n")
        zf.writestr("helper.py", "WORD = 'hello from the zip'\n")
    r = await p.http.put("/api/v1/storage/code/job.zip", content=buf.getvalue(), headers=p.admin)
    assert r.status_code in (200, 201), r.text
    await submit(p, name="zipped", command=[PY, "train.py"], code="code/job.zip",
                 resources={"cpu": 0.5, "memory": "64Mi"})
    done = await wait_job(p, "zipped", {"succeeded", "failed"})
    assert done["status"] == "succeeded", done
    r = await p.http.get("/api/v1/jobs/zipped/logs", headers=p.admin)
    assert "helper says hello from the zip" in r.json()


async def test_a_higher_priority_job_preempts_and_the_victim_resumes(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    cpu = p.ctx.backend.capacity().cpu
    script = ("import os, time; print('attempt', os.environ['NUBIS_JOB_ATTEMPT']); "
              "time.sleep(2 if os.environ['NUBIS_JOB_ATTEMPT'] != '1' else 120)")
    low = await submit(p, name="low", workers=2, priority=0, resources={"cpu": cpu / 2, "memory": "64Mi"},
                       command=[PY, "-c", script])
    await wait_job(p, "low", {"running"})
    await submit(p, name="high", priority=10, resources={"cpu": cpu / 2, "memory": "64Mi"},
                 command=[PY, "-c", "print('urgent')"])
    high = await wait_job(p, "high", {"succeeded", "failed"}, timeout=60)
    assert high["status"] == "succeeded", high
    events = (await p.http.get(f"/api/v1/jobs/{low['id']}/events", headers=p.admin)).json()
    assert any("preempted" in e["message"] for e in events), events
    resumed = await wait_job(p, "low", {"succeeded", "failed"}, timeout=60)
    assert resumed["status"] == "succeeded" and resumed["attempt"] == 2, resumed


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"command": [PY, "-c", "1"], "workers": 0}, "workers"),
        ({"command": []}, "command"),
        ({"command": [PY], "workers": 64, "resources": {"cpu": 64}}, "more than this platform has"),
        ({"command": [PY], "secrets": ["NOPE"]}, "nubis secret set"),
        ({"command": [PY], "code": "missing.zip"}, "not in storage"),
        ({"command": [PY], "bogus": 1}, "bogus"),
    ],
)
async def test_bad_job_specs_get_a_clear_422(
    sqlite_platform: Platform, spec: dict[str, Any], words: str
) -> None:
    r = await sqlite_platform.http.post("/api/v1/jobs", json=spec, headers=sqlite_platform.admin)
    assert r.status_code == 422, r.text
    assert words in r.json()["error"]["message"]


async def test_a_gang_its_quota_could_never_hold_is_refused_at_submit(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    r = await p.http.post("/api/v1/workspaces", json={"name": "small"}, headers=p.admin)
    assert r.status_code == 201, r.text
    r = await p.http.patch("/api/v1/workspaces/small", json={"cpu_quota": 0.5, "memory_quota": 2**30},
                           headers=p.admin)
    assert r.status_code == 200, r.text
    member = p.auth(await p.token("member", "small"))
    spec = {"name": "big", "workers": 2, "resources": {"cpu": 0.5, "memory": "64Mi"},
            "command": [PY, "-c", "1"]}
    r = await p.http.post("/api/v1/jobs", json=spec, headers=member)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    why = "needs 0.5 CPU per worker × 2 workers = 1 CPU; workspace small's quota is 0.5 CPU"
    assert why in error["message"]
    assert error["details"]["quota"] == {"cpu": 0.5, "memory": 2**30, "gpu": None}
    # exactly the quota: queued as usual
    ok = {**spec, "workers": 1, "resources": {"cpu": 0.5, "memory": "1Gi"}}
    r = await p.http.post("/api/v1/jobs", json=ok, headers=member)
    assert r.status_code == 201, r.text

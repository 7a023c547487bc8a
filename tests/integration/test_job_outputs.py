"""A job's outputs outlive it: ``NUBIS_OUTPUT_DIR`` is copied to storage when each attempt ends
(real app in-process, real worker processes on the local backend)."""

from __future__ import annotations

import asyncio
import time

from test_jobs import PY, submit, wait_job

from platform_fixtures import Platform

WRITE_OUTPUTS = (
    "import os, pathlib\n"
    "out = pathlib.Path(os.environ['NUBIS_OUTPUT_DIR'])\n"
    "(out / 'logs').mkdir(exist_ok=True)\n"
    "(out / 'snapshot.pt').write_bytes(b'x' * 1000)\n"
    "(out / 'logs' / f\"attempt-{os.environ['NUBIS_JOB_ATTEMPT']}.txt\").write_text('done')\n"
    "if not os.path.lexists(out / 'link'):\n"
    "    os.symlink('/etc/hostname', out / 'link')  # a link is never followed by the copy\n"
    "ck = pathlib.Path(os.environ['NUBIS_CHECKPOINT_DIR']) / 'state'\n"
    "ck.write_text('kept')\n"
    "raise SystemExit(1 if os.environ['NUBIS_JOB_ATTEMPT'] == '1' else 0)\n"
)


async def test_outputs_are_kept_in_storage_listed_and_fetched(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    job = await submit(p, name="keeper", command=[PY, "-c", WRITE_OUTPUTS], max_retries=1,
                       resources={"cpu": 0.5, "memory": "64Mi"})
    done = await wait_job(p, "keeper", {"succeeded", "failed"}, timeout=90)
    assert done["status"] == "succeeded" and done["attempt"] == 2, done
    prefix = f".jobs/{job['id']}/outputs"
    assert done["outputs"] == prefix

    r = await p.http.get("/api/v1/jobs/keeper/outputs", headers=p.admin)
    assert r.status_code == 200, r.text
    listed = {o["path"]: o["size"] for o in r.json()}
    # both attempts' files (the folder is kept across retries), without the link
    assert listed == {f"{prefix}/snapshot.pt": 1000, f"{prefix}/logs/attempt-1.txt": 4,
                      f"{prefix}/logs/attempt-2.txt": 4}
    r = await p.http.get(f"/api/v1/storage/{prefix}/logs/attempt-2.txt", headers=p.admin)
    assert r.status_code == 200 and r.content == b"done"

    r = await p.http.get("/api/v1/jobs/keeper/events", headers=p.admin)
    messages = [e["message"] for e in r.json() if e["kind"] == "outputs"]
    assert len(messages) == 2 and "1 skipped" in messages[-1] and "link" in messages[-1]

    # the job's folder is gone but its checkpoints stay (until the retention passes)
    job_dir = p.ctx.backend.job_dir(job["id"])
    assert (job_dir / "checkpoints" / "state").read_text() == "kept"
    assert not (job_dir / "code").exists() and not (job_dir / "outputs").exists()
    assert p.ctx.backend.sweep_jobs(now=0.0) == 0  # not old enough
    assert p.ctx.backend.sweep_jobs(now=time.time() + 8 * 24 * 3600) == 1
    assert not job_dir.exists()


async def test_a_cancelled_jobs_outputs_are_kept(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    script = ("import os, pathlib, time\n"
              "pathlib.Path(os.environ['NUBIS_OUTPUT_DIR'], 'partial.txt').write_text('half')\n"
              "print('written', flush=True); time.sleep(120)\n")
    await submit(p, name="halfway", command=[PY, "-c", script], resources={"cpu": 0.5, "memory": "64Mi"})
    await wait_job(p, "halfway", {"running"})
    for _ in range(100):
        r = await p.http.get("/api/v1/jobs/halfway/logs", headers=p.admin)
        if "written" in r.json():
            break
        await asyncio.sleep(0.1)
    r = await p.http.post("/api/v1/jobs/halfway/cancel", headers=p.admin)
    assert r.status_code == 200, r.text
    await wait_job(p, "halfway", {"cancelled"}, timeout=30)
    r = await p.http.get("/api/v1/jobs/halfway/outputs", headers=p.admin)
    assert [o["path"].rsplit("/", 1)[1] for o in r.json()] == ["partial.txt"]

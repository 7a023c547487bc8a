"""A job's requirements on the real app (in-process) with real workers: what the platform's own
environment already has builds no virtualenv; what is not a requirement is refused at submit.
(The install itself, by pip for real: ``tests/e2e/test_job_requirements_cli.py``.)"""

from __future__ import annotations

import sys

from test_jobs import submit, wait_job

from platform_fixtures import Platform


async def test_requirements_the_platform_has_run_on_its_own_python(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    show = "import sys; print('python', sys.executable)"
    job = await submit(p, name="has-all", command=["python", "-c", show],
                       requirements=["httpx>=0.1", "pydantic[email] ; python_version >= '3.8'"],
                       resources={"cpu": 0.5, "memory": "64Mi"})
    assert job["requirements"] == ["httpx>=0.1", "pydantic[email] ; python_version >= '3.8'"]
    done = await wait_job(p, "has-all", {"succeeded", "failed"})
    assert done["status"] == "succeeded", done
    r = await p.http.get("/api/v1/jobs/has-all/logs", headers=p.admin)
    assert f"python {sys.executable}" in r.json()  # no virtualenv: the platform's interpreter
    assert not (p.ctx.settings.home / "backend" / "venvs").exists()
    r = await p.http.get("/api/v1/jobs/has-all/events", headers=p.admin)
    events = {e["kind"]: e["message"] for e in r.json()}
    assert events["created"].endswith("; requirements: httpx>=0.1, pydantic[email] ; python_version >= '3.8'")
    assert events["environment"] == "the platform's environment has every requirement: no virtualenv needed"


async def test_what_is_not_a_requirement_is_refused_at_submit(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    for requirement, why in [("--index-url=https://elsewhere.invalid", "pip options are not supported"),
                             ("-r other.txt", "pip options are not supported"),
                             ("../outside", "is not a requirement")]:
        spec = {"command": ["python", "-V"], "requirements": [requirement]}
        r = await p.http.post("/api/v1/jobs", json=spec, headers=p.admin)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "validation_error"
        assert why in r.json()["error"]["message"]
    spec = {"command": ["python", "-V"], "requirements": [f"p{i}" for i in range(201)]}
    r = await p.http.post("/api/v1/jobs", json=spec, headers=p.admin)
    assert r.status_code == 422 and "201 requirements; at most 200" in r.json()["error"]["message"]

"""Workloads on S3 storage (a local moto_server) with a real `nubis up`: a job reads and writes its
workspace's files through the API with its job token, holds no S3 credentials, cannot read another
workspace's files, and `nubis train` stores its model there."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nubis

from platform_process import PlatformProcess, nubis_up
from servers import s3_bucket_in_env

pytestmark = pytest.mark.e2e

JOB = """import os, sys, httpx
from nubis.storage import Store
url = os.environ["NUBIS_STORAGE_URL"]
assert url.startswith(os.environ["NUBIS_API_URL"]), url
leaked = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} & set(os.environ)
assert not leaked, f"S3 credentials reached the workload: {leaked}"
files = Store.from_url(url)
files.put_bytes("out/result.txt", files.read_bytes("data/in.txt").upper())
other = httpx.get(url + "/secret.txt", headers={"authorization": "Bearer " + os.environ["NUBIS_JOB_TOKEN"],
                                                 "x-nubis-workspace": "other"})
print("other workspace:", other.status_code, flush=True)
sys.exit(0 if other.status_code in (403, 404) else 3)
"""


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    with s3_bucket_in_env() as bucket, nubis_up(tmp_path_factory.mktemp("s3") / "home", "--storage",
                                                f"{bucket}/nubis") as p:
        yield p


def cli_json(platform: PlatformProcess, *args: str) -> Any:
    done = platform.cli(*args, "--output", "json", timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_job_reads_and_writes_its_workspace_through_the_api(platform: PlatformProcess,
                                                             tmp_path: Path) -> None:
    with nubis.Client(platform.url, platform.admin_token) as admin:
        admin.storage.put_bytes("data/in.txt", b"hello storage")
        admin.workspaces.create("other")
    with nubis.Client(platform.url, platform.admin_token, workspace="other") as other:
        other.storage.put_bytes("secret.txt", b"not yours")
    (tmp_path / "io.py").write_text(JOB)
    submitted = platform.cli("job", "submit", "--name", "io", "--workdir", str(tmp_path), "--cpu", "0.5",
                             "--memory", "256Mi", "--", "python", "io.py")
    assert submitted.returncode == 0, submitted.stderr
    deadline = time.monotonic() + 180
    while (job := cli_json(platform, "job", "get", "io"))["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    logs = platform.cli("job", "logs", "io").stdout
    assert job["status"] == "succeeded", (job["reason"], logs)
    assert "other workspace: 40" in logs
    with nubis.Client(platform.url, platform.admin_token) as admin:
        assert admin.storage.read_bytes("out/result.txt") == b"HELLO STORAGE"


def test_train_stores_its_model_in_s3(platform: PlatformProcess) -> None:
    job = cli_json(platform, "train", "--model", "logreg", "--data", "builtin:iris", "--epochs", "3",
                   "--cpu", "0.5", "--memory", "512Mi")
    assert job["status"] == "succeeded", job["reason"]
    assert job["model"] == "iris-logreg:1"
    with nubis.Client(platform.url, platform.admin_token) as admin:
        (version,) = admin.models.list()[0].versions
        stored = admin.storage.list(version.path.rstrip("/") + "/")
    names = {o.path.rsplit("/", 1)[1] for o in stored}
    assert {"result.json", "heldout.npz"} <= names, names
